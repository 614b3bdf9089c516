"""scGPT: a cell's expressed genes with binned values through a transformer; the <cls> output.

The authors' `embed_data` path takes raw counts, keeps genes whose symbol is
in the vocabulary, gives each expressed gene its bin among the cell's own
value quantiles, and, for cells with more genes than the input length, keeps a
random subset. Both random steps (ties spread across equal bin edges, and the
subset) draw from numbers seeded by the cell's own content here, so a cell's
embedding never depends on its batch, its chunk or its neighbours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

from scdrugmap.embed.cell_random import CellGenes, cell_seeds, gene_draws, uniform
from scdrugmap.embed.layers import EncoderLayer
from scdrugmap.embed.torch_embedder import TorchEmbedder, split_options
from scdrugmap.embed.torch_runtime import autocast, load_weights, pad_ragged, to_device
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

FILES = {"weights": "best_model.pt", "vocab": "vocab.json", "args": "args.json"}
SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")
# The reference collator bins into 51 levels and embeds at most 1,200 tokens.
DEFAULTS = {"n_bins": 51, "max_length": 1200, "seed": 0, "precision": "float32"}
BATCHING = {"max_tokens": 65_536, "max_cells": 256}
MAX_VALUE = 512.0
# Parameter names of the two published attention layouts, mapped onto PyTorch's.
ATTENTION_RENAMES = (
    (re.compile(r"self_attn\.(?:_impl\.)?Wqkv\.(weight|bias)$"), r"self_attn.in_proj_\1"),
    (re.compile(r"self_attn\._impl\.out_proj\."), "self_attn.out_proj."),
)
ENCODER_PREFIXES = ("encoder.", "value_encoder.", "transformer_encoder.")

_BIN_STREAM = np.uint64(0x5EED_0001)
_SAMPLE_STREAM = np.uint64(0x5EED_0002)


def _cell_major_order(cells: np.ndarray, keys: np.ndarray, key_bits: int) -> np.ndarray:
    """Positions sorted by cell, then by an unsigned key of `key_bits` bits (ties: data order).

    One stable sort on a packed 64-bit key: several times faster than lexsort.
    """
    if len(cells) and int(cells.max()) >> (64 - key_bits):
        return np.lexsort((keys, cells))
    packed = cells.astype(np.uint64) << np.uint64(key_bits) | keys.astype(np.uint64)
    return np.argsort(packed, kind="stable")


def _sortable_bits(values: np.ndarray) -> np.ndarray:
    """float32 bit patterns as unsigned integers in the floats' order (non-NaN values)."""
    bits = values.astype(np.float32).view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x8000_0000))


def sampling_order(cells: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Genes by cell, then by the top 44 bits of their draw: a long cell keeps its first ones."""
    return _cell_major_order(cells, draws >> np.uint64(20), 44)


@dataclass(frozen=True)
class ScGPTBatch:
    """Ragged model input: cell i is `ids[offsets[i]:offsets[i + 1]]`, <cls> first."""

    ids: np.ndarray
    values: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def quantile_edges(
    sorted_values: np.ndarray, counts: np.ndarray, n_edges: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's `np.quantile(values, linspace(0, 1, n_edges))`, to the last bit.

    Linear interpolation as numpy does it: float32 neighbours, their float32
    difference, float64 weights, and the two-sided formula for weights of
    one half and above. Also returns each edge's lower neighbour (position
    within the cell), from which edges and values compare as integers.
    """
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    last = (counts - 1).astype(np.float64)[:, None]
    virtual = last * np.linspace(0.0, 1.0, n_edges)[None, :]
    previous = np.floor(virtual)
    following = previous + 1
    clipped = virtual >= last
    previous[clipped] = last.repeat(n_edges, 1)[clipped]
    following[clipped] = previous[clipped]
    gamma = virtual - previous
    low = sorted_values[starts[:, None] + previous.astype(np.int64)]
    high = sorted_values[starts[:, None] + following.astype(np.int64)]
    difference = high - low
    edges = low + difference * gamma
    upper = gamma >= 0.5
    edges[upper] = (high - difference * (1 - gamma))[upper]
    return edges, previous.astype(np.int64)


def digitize_within_cells(genes: CellGenes, n_bins: int, draws: np.ndarray) -> np.ndarray:
    """The reference's per-cell `_digitize(values, quantile edges)`, for every cell at once.

    A value's left digit counts the edges at or below it, its right digit the
    edges strictly below; the reference draws a uniform number per value to
    pick between them. Both counts come from integer ranks within the cell
    (edges interpolate between neighbouring sorted values), so the search is
    one sorted-integer lookup for the whole chunk, exact where floats tie.
    """
    n_edges = n_bins - 1
    present = genes.counts > 0
    cells = (np.cumsum(present) - 1)[genes.cells]
    counts = genes.counts[present]
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    order = _cell_major_order(cells, _sortable_bits(genes.values), 32)
    sorted_values = genes.values[order]
    position = np.arange(len(order)) - np.repeat(starts, counts)
    new_run = np.r_[True, sorted_values[1:] != sorted_values[:-1]] | (position == 0)
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(order)), 0))
    run_ends = np.flatnonzero(np.r_[new_run[1:], True])
    run_end = np.repeat(run_ends, np.diff(np.r_[-1, run_ends]))
    edges, previous = quantile_edges(sorted_values, counts, n_edges)
    at_low = starts[:, None] + previous
    equal = edges == sorted_values[at_low]
    below = np.where(equal, run_start[at_low] - starts[:, None], previous + 1)
    at_or_below = np.where(equal, run_end[at_low] - starts[:, None] + 1, previous + 1)
    span = np.int64(counts.max(initial=0) + 1)
    base = (np.arange(len(counts), dtype=np.int64) * span)[:, None]
    sorted_cells = cells[order]
    query = sorted_cells * span + (run_start - np.repeat(starts, counts))
    offset = sorted_cells * n_edges
    left = np.searchsorted(np.sort((base + below).ravel()), query, side="right") - offset
    right = np.searchsorted(np.sort((base + at_or_below).ravel()), query, side="right") - offset
    digits = np.empty(len(order), dtype=np.int64)
    digits[order] = np.ceil(draws[order] * (right - left) + left).astype(np.int64)
    return digits


class ScGPTTokenizer:
    """The reference `embed_data` input, vectorised over a CSR chunk."""

    def __init__(
        self, vocab: dict[str, int], pad_value: float, n_bins: int, max_length: int, seed: int
    ) -> None:
        self.vocab = vocab
        self.pad_value = pad_value
        self.n_bins = n_bins
        self.max_length = max_length
        self.seed = seed
        self._cache: tuple[tuple[str, ...], np.ndarray, np.ndarray] | None = None

    def gene_map(self, genes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Columns whose symbol the vocabulary holds, and their token ids."""
        key = tuple(genes)
        if self._cache is None or self._cache[0] != key:
            ids = np.array([self.vocab.get(str(g), -1) for g in genes], dtype=np.int64)
            for token in SPECIAL_TOKENS:
                ids[ids == self.vocab[token]] = -1
            columns = np.flatnonzero(ids >= 0)
            self._cache = (key, columns, ids[columns])
        return self._cache[1], self._cache[2]

    def expressed(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> CellGenes:
        columns, tokens = self.gene_map(genes)
        known = sparse.csr_matrix(counts[:, columns], dtype=np.float32)
        known.eliminate_zeros()
        known.sort_indices()
        per_cell = np.diff(known.indptr)
        cells = np.repeat(np.arange(known.shape[0]), per_cell)
        return CellGenes(tokens[known.indices], known.data, cells, per_cell)

    def __call__(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> ScGPTBatch:
        expressed = self.expressed(counts, genes)
        seeds = cell_seeds(expressed, self.seed)
        digits = digitize_within_cells(
            expressed, self.n_bins, uniform(gene_draws(expressed, seeds, _BIN_STREAM))
        )
        kept = self._sample(expressed, gene_draws(expressed, seeds, _SAMPLE_STREAM))
        return self._frame(expressed, digits, kept)

    def _sample(self, genes: CellGenes, draws: np.ndarray) -> np.ndarray:
        """Which genes stay: all of a short cell; a seeded random subset of a long one."""
        limit = self.max_length - 1
        if genes.counts.max(initial=0) <= limit:
            return np.ones(len(genes.cells), dtype=bool)
        kept = np.ones(len(genes.cells), dtype=bool)
        long_cells = genes.counts > limit
        members = np.flatnonzero(long_cells[genes.cells])
        counts = genes.counts[long_cells]
        order = members[sampling_order(genes.cells[members], draws[members])]
        position = np.arange(len(order)) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
        kept[order[position >= limit]] = False
        return kept

    def _frame(self, genes: CellGenes, digits: np.ndarray, kept: np.ndarray) -> ScGPTBatch:
        """<cls> with the pad value first, then the kept genes in the data's column order.

        A cell without a known expressed gene gets no tokens at all (the
        reference would fail on it); its embedding row stays zero.
        """
        cells = genes.cells[kept]
        kept_counts = np.bincount(cells, minlength=len(genes.counts))
        has_genes = (genes.counts > 0).astype(np.int64)
        offsets = np.r_[0, np.cumsum(kept_counts + has_genes)].astype(np.int64)
        ids = np.empty(offsets[-1], dtype=np.int64)
        values = np.empty(offsets[-1], dtype=np.float32)
        firsts = offsets[:-1][has_genes > 0]
        ids[firsts] = self.vocab["<cls>"]
        values[firsts] = self.pad_value
        kept_starts = np.r_[0, np.cumsum(kept_counts)[:-1]]
        slot = np.arange(len(cells)) - np.repeat(kept_starts, kept_counts)
        target = offsets[cells] + 1 + slot
        ids[target] = genes.tokens[kept]
        values[target] = digits[kept]
        return ScGPTBatch(ids, values, offsets)


class GeneEncoder(nn.Module):
    """Gene token embedding, layer-normalised (`encoder.*` in the checkpoint)."""

    def __init__(self, n_tokens: int, width: int, pad_id: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_tokens, width, padding_idx=pad_id)
        self.enc_norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.enc_norm(self.embedding(ids))


class ValueEncoder(nn.Module):
    """A bin number through a small MLP (`value_encoder.*`); values above 512 are clipped."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, width)
        self.linear2 = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.linear1(values.clamp(max=MAX_VALUE).unsqueeze(-1)))
        return self.norm(self.linear2(hidden))


class LayerStack(nn.Module):
    """Holds the layers under `transformer_encoder.layers.N`, the checkpoint's names."""

    def __init__(self, layers: list[EncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class ScGPTModel(nn.Module):
    """The encoder half of scGPT's TransformerModel; its decoders play no part in embedding."""

    def __init__(self, n_tokens: int, pad_id: int, args: dict) -> None:
        super().__init__()
        width, heads = int(args["embsize"]), int(args["nheads"])
        if width % heads:
            raise InputError(f"args.json: embsize {width} is not a multiple of nheads {heads}")
        self.encoder = GeneEncoder(n_tokens, width, pad_id)
        self.value_encoder = ValueEncoder(width)
        self.transformer_encoder = LayerStack(
            [EncoderLayer(width, heads, int(args["d_hid"])) for _ in range(int(args["nlayers"]))]
        )

    def forward(self, ids: torch.Tensor, values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(ids) + self.value_encoder(values)
        mask = keep[:, None, None, :]
        for layer in self.transformer_encoder.layers:
            hidden = layer(hidden, mask)
        return hidden


def load_vocabulary(path: Path) -> dict[str, int]:
    """vocab.json (token to index); missing special tokens are appended as the reference does."""
    try:
        vocab = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable scGPT vocabulary ({error})") from error
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise InputError(f"{path}: expected a JSON object of gene symbol to token index")
    for token in SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    return {str(k): int(v) for k, v in vocab.items()}


def load_args(path: Path) -> dict:
    try:
        args = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable scGPT args.json ({error})") from error
    missing = [k for k in ("embsize", "nheads", "d_hid", "nlayers") if k not in args]
    if missing:
        raise InputError(
            f"{path}: lacks {', '.join(missing)}; use the args.json published with the model"
        )
    return args


def read_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    """The encoder's parameters from best_model.pt, in either published attention layout."""
    state = load_weights(path)
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a state dict")
    renamed = {}
    for key, tensor in state.items():
        if not key.startswith(ENCODER_PREFIXES):
            continue
        for pattern, replacement in ATTENTION_RENAMES:
            key = pattern.sub(replacement, key)
        renamed[key] = tensor
    return renamed


def build_model(checkpoint: Path, vocab: dict[str, int], args: dict) -> ScGPTModel:
    weights = checkpoint / FILES["weights"]
    state = read_encoder_state(weights)
    rows = state.get("encoder.embedding.weight")
    if rows is not None and rows.shape[0] != len(vocab):
        raise InputError(
            f"{weights}: {rows.shape[0]} gene embeddings but vocab.json has {len(vocab)} tokens; "
            "the two files are from different models"
        )
    model = ScGPTModel(len(vocab), vocab[args.get("pad_token", "<pad>")], args)
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise InputError(
            f"{weights}: not an scGPT checkpoint for this args.json (missing {missing[:3]})"
        )
    return model.eval()


class ScGPTEmbedder(TorchEmbedder):
    """Cell embeddings as the authors' `embed_data` makes them: the <cls> output, L2-normalised.

    Options: `max_length` (1200, <cls> included), `n_bins` (51, as the
    reference collator), `seed` (mixed into every cell's own seed),
    `precision` (autocast on CUDA) and `max_tokens` / `max_cells` (batch
    budget; no effect on the result).
    """

    name = "scgpt"
    lora_targets: ClassVar[list[str]] = ["out_proj"]
    gene_id_hint = "scgpt needs gene symbols (HGNC), as in the CELLxGENE census vocabulary"

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> ScGPTEmbedder:
        checkpoint = Path(checkpoint)
        for filename in FILES.values():
            if not (checkpoint / filename).is_file():
                raise InputError(
                    f"{checkpoint}: no {filename}; give the directory of a published scGPT model "
                    f"({', '.join(FILES.values())})"
                )
        settings, batching = split_options("scgpt", options, DEFAULTS, BATCHING)
        settings = _checked(settings)
        vocab = load_vocabulary(checkpoint / FILES["vocab"])
        args = load_args(checkpoint / FILES["args"])
        model = build_model(checkpoint, vocab, args)
        pad_value = float(args.get("pad_value", -2))
        tokenizer = ScGPTTokenizer(
            vocab, pad_value, settings["n_bins"], settings["max_length"], settings["seed"]
        )
        settings.update(
            pad_value=pad_value,
            vocab_sha256=file_sha256(checkpoint / FILES["vocab"]),
            args_sha256=file_sha256(checkpoint / FILES["args"]),
        )
        return cls(
            model,
            tokenizer,
            device,
            settings,
            batching,
            file_sha256(checkpoint / FILES["weights"]),
            dim=model.encoder.embedding.embedding_dim,
        )

    def gene_vocabulary(self) -> set[str]:
        return set(self.tokenizer.vocab) - set(SPECIAL_TOKENS)

    def encode(self, batch: ScGPTBatch, cells: np.ndarray) -> torch.Tensor:
        """The chosen cells' embeddings as a tensor on the model's device, differentiable
        outside `embed` (fine-tuning trains through it)."""
        ids, keep = pad_ragged(batch.ids, batch.offsets, cells, self.tokenizer.vocab["<pad>"])
        values, _ = pad_ragged(batch.values, batch.offsets, cells, self.tokenizer.pad_value)
        with autocast(self.device, self.settings["precision"]):
            hidden = self.model(
                to_device(ids, self.device),
                to_device(values.astype(np.float32), self.device),
                to_device(keep, self.device),
            )
        return F.normalize(hidden[:, 0].float(), dim=1)


def _checked(settings: dict) -> dict:
    checked = {
        "n_bins": int(settings["n_bins"]),
        "max_length": int(settings["max_length"]),
        "seed": int(settings["seed"]),
        "precision": settings["precision"],
    }
    if checked["n_bins"] < 3:
        raise InputError("scgpt: n_bins must be at least 3")
    if checked["max_length"] < 2:
        raise InputError("scgpt: max_length must be at least 2 (<cls> and one gene)")
    if checked["seed"] < 0:
        raise InputError("scgpt: seed must be a non-negative integer")
    autocast(torch.device("cpu"), checked["precision"])
    return checked
