"""UCE: a cell as 1,024 genes sampled by expression, ordered along the genome, read as proteins.

The authors' `eval_single_anndata.py` turns a cell into a "sentence": genes
drawn with replacement, with probability proportional to log1p of their
counts, grouped by chromosome (chromosomes in random order, each between an
open and a close token, genes by genomic start) behind a CLS token; each gene
token is its protein's ESM2 embedding. The cell embedding is the decoder's
output at CLS, L2-normalised (1,280 dimensions). Both random steps draw here
from numbers seeded by the cell's own content, so a cell embeds the same in
any batch, chunk or order.

Padding is masked out. The reference passes its padding mask as floats,
which PyTorch adds to the attention scores instead of masking, so there a
cell's embedding shifts slightly with the longest cell of its batch; with one
cell per batch (no padding) the two agree, and that is what parity measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

from scdrugmap.embed.cell_filters import CellFilter
from scdrugmap.embed.cell_random import CellGenes, cell_seeds, keyed_draws, uniform
from scdrugmap.embed.layers import EncoderLayer
from scdrugmap.embed.safe_pickle import load_plain_pickle
from scdrugmap.embed.torch_embedder import (
    RaggedTokens,
    TorchEmbedder,
    parse_flag,
    split_options,
)
from scdrugmap.embed.torch_runtime import autocast, load_weights, pad_ragged, to_device
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

MODEL_FILES = ("4layer_model.torch", "33l_8ep_1024t_1280.torch")
TOKEN_FILE = "all_tokens.torch"
CHROM_FILE = "species_chrom.csv"
OFFSET_FILE = "species_offsets.pkl"
PROTEIN_DIR = "protein_embeddings"
PROTEIN_FILES = {
    "human": "Homo_sapiens.GRCh38.gene_symbol_to_embedding_ESM2.pt",
    "mouse": "Mus_musculus.GRCm39.gene_symbol_to_embedding_ESM2.pt",
    "frog": "Xenopus_tropicalis.Xenopus_tropicalis_v9.1.gene_symbol_to_embedding_ESM2.pt",
    "zebrafish": "Danio_rerio.GRCz11.gene_symbol_to_embedding_ESM2.pt",
    "mouse_lemur": "Microcebus_murinus.Mmur_3.0.gene_symbol_to_embedding_ESM2.pt",
    "pig": "Sus_scrofa.Sscrofa11.1.gene_symbol_to_embedding_ESM2.pt",
    "macaca_fascicularis": (
        "Macaca_fascicularis.Macaca_fascicularis_6.0.gene_symbol_to_embedding_ESM2.pt"
    ),
    "macaca_mulatta": "Macaca_mulatta.Mmul_10.gene_symbol_to_embedding_ESM2.pt",
}
# The reference's fixed token layout: special tokens first, chromosome tokens last.
TOKENS = {"pad": 0, "chrom_left": 1, "chrom_right": 2, "cls": 3, "chrom_offset": 143_574}
ALL_TOKENS = 145_469
CHROM_TOKENS = 1_895
DEFAULTS = {"species": "human", "sample_size": 1024, "pad_length": 1536, "seed": 0}
DEFAULTS |= {"heads": 20, "precision": "float32", "filter": True}
# The reference's `--filter` (on by default): genes in fewer than 10 cells, then cells
# with fewer than 25 genes (scanpy's filter_genes / filter_cells, on all genes).
AUTHORS_FILTER = CellFilter(
    min_genes=25, min_cells_per_gene=10, source="UCE's --filter; --param filter=false keeps them"
)
BATCHING = {"max_tokens": 32_768, "max_cells": 64}
_SAMPLE_STREAM = np.uint64(0x0CE0_0001)
_CHROM_STREAM = np.uint64(0x0CE0_0002)


@dataclass(frozen=True)
class GeneTable:
    """Per known gene (upper-case symbol): token row, chromosome code and genomic start."""

    tokens: dict[str, int]
    chroms: dict[str, int]
    starts: dict[str, float]

    def __contains__(self, gene: object) -> bool:
        return str(gene).upper() in self.tokens


def read_gene_table(folder: Path, species: str, protein_file: Path) -> GeneTable:
    """Token rows as the reference numbers them (embedding order + species offset), and
    chromosome codes over every species' chromosomes, as its categorical does."""
    proteins = load_weights(protein_file)
    offsets = load_plain_pickle(folder / OFFSET_FILE)
    if species not in offsets:
        raise InputError(f"{folder / OFFSET_FILE}: no offset for species {species!r}")
    symbols = [str(k).upper() for k in proteins]
    positions = pd.read_csv(folder / CHROM_FILE)
    missing = {"species", "gene_symbol", "chromosome", "start"} - set(positions.columns)
    if missing:
        raise InputError(f"{folder / CHROM_FILE}: lacks {', '.join(sorted(missing))}")
    codes = pd.Categorical(
        positions["species"].astype(str) + "_" + positions["chromosome"].astype(str)
    ).codes
    own = positions.assign(code=codes)[positions["species"] == species]
    own = own.drop_duplicates("gene_symbol").set_index(own["gene_symbol"].astype(str).str.upper())
    offset = int(offsets[species])
    tokens = {s: i + offset for i, s in enumerate(dict.fromkeys(symbols)) if s in own.index}
    return GeneTable(
        tokens,
        {s: int(own.at[s, "code"]) for s in tokens},
        {s: float(own.at[s, "start"]) for s in tokens},
    )


class UCETokenizer:
    """Cell sentences for a whole CSR chunk: sampling, genome order and framing in numpy."""

    def __init__(self, table: GeneTable, sample_size: int, pad_length: int, seed: int) -> None:
        self.table = table
        self.sample_size = sample_size
        self.pad_length = pad_length
        self.seed = seed
        self._cache: tuple[tuple[str, ...], tuple[np.ndarray, ...]] | None = None

    def gene_map(self, genes: Sequence[str]) -> tuple[np.ndarray, ...]:
        key = tuple(genes)
        if self._cache is None or self._cache[0] != key:
            upper = [str(g).upper() for g in genes]
            columns = np.array([j for j, g in enumerate(upper) if g in self.table.tokens])
            columns = columns.astype(np.int64)
            known = [upper[j] for j in columns]
            mapped = (
                columns,
                np.array([self.table.tokens[g] for g in known], dtype=np.int64),
                np.array([self.table.chroms[g] for g in known], dtype=np.int64),
                np.array([self.table.starts[g] for g in known], dtype=np.float64),
            )
            self._cache = (key, mapped)
        return self._cache[1]

    def sample(self, expressed: CellGenes, seeds: np.ndarray) -> np.ndarray:
        """Per cell, `sample_size` positions into its genes, drawn with replacement
        with probability log1p(count) / sum, by inverse CDF as `np.random.choice` draws."""
        weights = np.log1p(expressed.values.astype(np.float32))
        sums = np.add.reduceat(weights, expressed.starts) if len(weights) else weights
        probability = (weights / sums[expressed.cells]).astype(np.float64)
        cdf = np.cumsum(probability)
        cdf -= np.repeat(np.r_[0.0, cdf[expressed.starts[1:] - 1]], expressed.counts)
        cdf /= np.repeat(cdf[expressed.starts + expressed.counts - 1], expressed.counts)
        n_cells = len(expressed.counts)
        slots = np.tile(np.arange(self.sample_size, dtype=np.uint64), n_cells)
        cells = np.repeat(np.arange(n_cells), self.sample_size)
        draws = uniform(keyed_draws(seeds[cells], slots, _SAMPLE_STREAM))
        picked = np.searchsorted(expressed.cells + cdf, cells + draws, side="right")
        return np.minimum(picked, expressed.starts[cells] + expressed.counts[cells] - 1)

    def __call__(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> RaggedTokens:
        columns, tokens, chroms, starts = self.gene_map(genes)
        known = sparse.csr_matrix(counts[:, columns], dtype=np.float32)
        known.eliminate_zeros()
        known.sort_indices()
        per_cell = np.diff(known.indptr)
        nonempty = per_cell > 0
        if not nonempty.all():
            known, per_cell = known[nonempty], per_cell[nonempty]
        expressed = CellGenes(
            tokens[known.indices],
            known.data,
            np.repeat(np.arange(known.shape[0]), per_cell),
            per_cell,
        )
        seeds = cell_seeds(expressed, self.seed)
        picked = known.indices[self.sample(expressed, seeds)]
        sentences = self._frame(picked, tokens, chroms, starts, seeds)
        return sentences if nonempty.all() else _with_empty_cells(sentences, nonempty)

    def _frame(
        self,
        picked: np.ndarray,
        tokens: np.ndarray,
        chroms: np.ndarray,
        starts: np.ndarray,
        seeds: np.ndarray,
    ) -> RaggedTokens:
        """CLS, then per chromosome (shuffled per cell): open, genes by start, close."""
        size = self.sample_size
        n_cells = len(picked) // size
        cells = np.repeat(np.arange(n_cells), size)
        chrom = chroms[picked]
        chrom_key = keyed_draws(seeds[cells], chrom, _CHROM_STREAM)
        order = np.lexsort((np.arange(len(picked)), starts[picked], chrom, chrom_key, cells))
        chrom, picked = chrom[order], picked[order]
        rank = np.arange(len(picked)) - cells * size
        opens = (rank == 0) | np.r_[True, chrom[1:] != chrom[:-1]]
        group = np.cumsum(opens) - 1
        group -= np.repeat(group[::size], size)
        n_groups = group[size - 1 :: size] + 1
        lengths = 1 + size + 2 * n_groups
        if lengths.max(initial=0) > self.pad_length:
            raise InputError(f"uce: a cell sentence of {lengths.max()} tokens exceeds pad_length")
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        ids = np.empty(offsets[-1], dtype=np.int64)
        ids[offsets[:-1]] = TOKENS["cls"]
        at = offsets[cells] + 1 + rank + 2 * group + 1
        ids[at] = tokens[picked]
        ids[at[opens] - 1] = chrom[opens] + TOKENS["chrom_offset"]
        closes = np.r_[opens[1:], True]
        ids[at[closes] + 1] = TOKENS["chrom_right"]
        return RaggedTokens(ids, offsets)


def _with_empty_cells(tokens: RaggedTokens, nonempty: np.ndarray) -> RaggedTokens:
    """Sentences of the non-empty cells with a zero-length row for each cell that has no
    gene to draw from: it keeps a zero embedding instead of failing its chunk."""
    lengths = np.zeros(len(nonempty), dtype=np.int64)
    lengths[nonempty] = tokens.lengths
    return RaggedTokens(tokens.ids, np.r_[0, np.cumsum(lengths)].astype(np.int64))


def full_block(width_in: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width_in, width_out), nn.LayerNorm(width_out), nn.GELU(), nn.Dropout(0.0)
    )


class PositionTable(nn.Module):
    """The sinusoidal table, kept as the checkpoint's `pos_encoder.pe` buffer."""

    def __init__(self, length: int, width: int) -> None:
        super().__init__()
        self.register_buffer("pe", torch.zeros(length, 1, width))


class LayerStack(nn.Module):
    def __init__(self, layers: list[EncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class UCEModel(nn.Module):
    """The encoder path to the CLS embedding; the gene-expression decoder is left out."""

    def __init__(self, shapes: dict, heads: int) -> None:
        super().__init__()
        width, hidden = shapes["d_model"], shapes["d_hid"]
        self.width = width
        self.pe_embedding = nn.Embedding(shapes["n_tokens"], shapes["token_dim"])
        self.pe_embedding.weight.requires_grad = False
        self.encoder = nn.Sequential(
            nn.Linear(shapes["token_dim"], width), nn.GELU(), nn.LayerNorm(width)
        )
        self.pos_encoder = PositionTable(shapes["max_len"], width)
        self.transformer_encoder = LayerStack(
            [EncoderLayer(width, heads, hidden) for _ in range(shapes["nlayers"])]
        )
        out = shapes["output_dim"]
        self.decoder = nn.Sequential(
            full_block(width, 1024),
            full_block(1024, out),
            full_block(out, out),
            nn.Linear(out, out),
        )

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        tokens = F.normalize(self.pe_embedding(ids), dim=2)
        hidden = self.encoder(tokens) * math.sqrt(self.width)
        hidden = hidden + self.pos_encoder.pe[: ids.shape[1], 0][None]
        mask = keep[:, None, None, :]
        for layer in self.transformer_encoder.layers:
            hidden = layer(hidden, mask)
        return F.normalize(self.decoder(hidden[:, 0]), dim=1)


def _shapes(state: dict[str, torch.Tensor]) -> dict:
    try:
        layers = {
            int(k.split(".")[2]) for k in state if k.startswith("transformer_encoder.layers.")
        }
        return {
            "n_tokens": state["pe_embedding.weight"].shape[0],
            "token_dim": state["encoder.0.weight"].shape[1],
            "d_model": state["encoder.0.weight"].shape[0],
            "d_hid": state["transformer_encoder.layers.0.linear1.weight"].shape[0],
            "nlayers": len(layers),
            "max_len": state["pos_encoder.pe"].shape[0],
            "output_dim": state["decoder.3.weight"].shape[0],
        }
    except KeyError as error:
        raise InputError(f"not a UCE model file: no {error}") from error


def token_table(folder: Path, model_rows: torch.Tensor) -> torch.Tensor:
    """The token embeddings the reference ends up with: the model file's own, unless the
    token file (with the seeded chromosome tokens appended) has another number of rows."""
    tokens = load_weights(folder / TOKEN_FILE)
    if tokens.shape[0] == TOKENS["chrom_offset"]:
        generator = torch.Generator().manual_seed(23)
        chrom = torch.normal(0.0, 1.0, size=(CHROM_TOKENS, tokens.shape[1]), generator=generator)
        tokens = torch.vstack((tokens, chrom))
    return tokens if tokens.shape[0] != ALL_TOKENS else model_rows


def build_model(folder: Path, model_file: Path, heads: int) -> UCEModel:
    state = load_weights(model_file)
    shapes = _shapes(state)
    state["pe_embedding.weight"] = token_table(folder, state["pe_embedding.weight"])
    shapes["n_tokens"] = state["pe_embedding.weight"].shape[0]
    if shapes["d_model"] % heads:
        raise InputError(f"uce: heads={heads} does not divide the model width {shapes['d_model']}")
    model = UCEModel(shapes, heads)
    kept = {
        k: v for k, v in state.items() if not k.startswith(("binary_decoder.", "gene_embedding"))
    }
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{model_file}: not a UCE model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


def _model_file(folder: Path, name: str | None) -> Path:
    candidates = [folder / name] if name else [folder / n for n in MODEL_FILES]
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(
        f"{folder}: no {' or '.join(c.name for c in candidates)}; "
        "give the directory of the published UCE model (or --param model_file=NAME)"
    )


class UCEEmbedder(TorchEmbedder):
    """Cell embeddings as the authors' `eval_single_anndata.py` makes them (the CLS output).

    Options: `species` (human), `sample_size` (1,024 genes), `pad_length`
    (1,536 tokens at most), `seed` (mixed into every cell's own seed),
    `heads` (20, as the published models), `model_file` (when not one of the
    published names), `precision` (autocast on CUDA) and `max_tokens` /
    `max_cells` (batch budget; no effect on the result), and `filter` (true,
    as the reference's `--filter`): genes expressed in fewer than 10 cells of
    the data set are dropped before the draws, and cells with fewer than 25
    expressed genes left are listed in `failures` (`embed/cell_filters.py`).
    With the filter a cell's embedding depends on the other cells of its data
    set, as in the authors' pipeline; `filter=false` makes it the cell's alone.
    """

    name = "uce"
    lora_targets: ClassVar[list[str]] = ["out_proj"]
    gene_id_hint = "uce needs gene symbols with protein embeddings"

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> UCEEmbedder:
        folder = Path(checkpoint)
        model_name = options.pop("model_file", None)
        settings, batching = split_options("uce", options, DEFAULTS, BATCHING)
        settings = _checked(settings)
        model_file = _model_file(folder, model_name)
        protein_file = folder / PROTEIN_DIR / PROTEIN_FILES[settings["species"]]
        for path in (folder / TOKEN_FILE, folder / CHROM_FILE, folder / OFFSET_FILE, protein_file):
            if not path.is_file():
                raise InputError(f"{path}: missing; UCE's files are published with its model")
        table = read_gene_table(folder, settings["species"], protein_file)
        model = build_model(folder, model_file, settings["heads"])
        tokenizer = UCETokenizer(
            table, settings["sample_size"], settings["pad_length"], settings["seed"]
        )
        settings.update(
            model_file=model_file.name,
            chrom_sha256=file_sha256(folder / CHROM_FILE),
            proteins_sha256=file_sha256(protein_file),
            padding="masked",
        )
        return cls(
            model,
            tokenizer,
            device,
            settings,
            batching,
            file_sha256(model_file),
            dim=model.decoder[3].out_features,
        )

    def gene_vocabulary(self) -> GeneTable:
        return self.tokenizer.table

    @property
    def cell_filter(self) -> CellFilter | None:
        return AUTHORS_FILTER if self.settings["filter"] else None

    def encode(self, batch: RaggedTokens, cells: np.ndarray) -> torch.Tensor:
        """CLS embeddings (differentiable outside `embed`)."""
        ids, keep = pad_ragged(batch.ids, batch.offsets, cells, TOKENS["pad"])
        with autocast(self.device, self.settings["precision"]):
            out = self.model(to_device(ids, self.device), to_device(keep, self.device))
        return out.float()


def _checked(settings: dict) -> dict:
    checked = {
        **settings,
        **{k: int(settings[k]) for k in ("sample_size", "pad_length", "seed", "heads")},
    }
    checked["filter"] = parse_flag("uce", "filter", settings["filter"])
    if checked["species"] not in PROTEIN_FILES:
        raise InputError(f"uce: species must be one of {', '.join(PROTEIN_FILES)}")
    if checked["sample_size"] < 1 or checked["pad_length"] <= checked["sample_size"]:
        raise InputError("uce: sample_size must be at least 1 and below pad_length")
    if checked["seed"] < 0 or checked["heads"] < 1:
        raise InputError("uce: seed must be >= 0 and heads >= 1")
    autocast(torch.device("cpu"), checked["precision"])
    return checked
