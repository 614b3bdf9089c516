"""Geneformer (V1 and V2): rank-value encoding of a cell's genes through a BERT encoder.

A cell becomes the list of its expressed genes, ordered by expression
relative to the gene's median across the pre-training corpus, so that
housekeeping genes sink and genes that distinguish the cell rise. The
checkpoint is a Hugging Face BERT directory plus the authors' pickled
dictionaries; V2 dictionaries carry `<cls>`/`<eos>`, which the tokeniser then
puts around the ranked genes, as V2 was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from scipy import sparse
from transformers import BertConfig, BertModel

from scdrugmap.embed.safe_pickle import load_plain_dictionary
from scdrugmap.embed.torch_embedder import RaggedTokens, TorchEmbedder, split_options
from scdrugmap.embed.torch_runtime import autocast, load_weights, pad_ragged, to_device
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

TARGET_SUM = 10_000
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DICTIONARIES = {
    "token_dictionary": "token_dictionary.pkl",
    "gene_median_dictionary": "gene_median_dictionary.pkl",
    "gene_name_id_dict": "gene_name_id_dict.pkl",
}
POOLINGS = ("mean", "cls")
# The precision of the normalisation: float64 (the reference on a loom or h5ad whose
# `n_counts` are float64); float32 (a float32 loom or h5ad without float64 `n_counts`).
NORM_PRECISIONS = ("float64", "float32")
DEFAULTS = {"emb_layer": -1, "pooling": "mean", "precision": "float32", "norm_precision": "float64"}
BATCHING = {"max_tokens": 65_536, "max_cells": 256}


@dataclass(frozen=True)
class GeneMap:
    """How a data set's columns feed the vocabulary: a column-summing matrix and per-gene facts.

    Columns naming the same Ensembl ID (a symbol and its ID, or two versions)
    are summed, as the reference collapses duplicate IDs; the kept genes stay
    in the data's column order, which is the order the reference ranks over.
    """

    collapse: sparse.csc_matrix
    tokens: np.ndarray
    medians: np.ndarray


def _rank(values: np.ndarray, rows: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Positions of each cell's values in decreasing order, cells kept in place.

    One sort serves every cell; it agrees with the reference's per-cell
    `np.argsort(-x)` except where a cell has exactly equal values, whose order
    that default (unstable) sort decides, so only such cells are re-sorted
    with that very call, over the genes in the data's column order.
    """
    order = np.lexsort((-values, rows))
    ranked, cells = values[order], rows[order]
    tied = (ranked[1:] == ranked[:-1]) & (cells[1:] == cells[:-1])
    for cell in np.unique(cells[1:][tied]):
        start, stop = indptr[cell], indptr[cell + 1]
        order[start:stop] = start + np.argsort(-values[start:stop])
    return order


class GeneformerTokenizer:
    """The reference rank-value encoding, vectorised over a CSR chunk."""

    def __init__(
        self,
        token_dictionary: dict,
        medians: dict,
        names: dict,
        model_input_size: int,
        norm_precision: str = "float64",
    ) -> None:
        if norm_precision not in NORM_PRECISIONS:
            raise InputError(
                f"geneformer: norm_precision must be one of {', '.join(NORM_PRECISIONS)}"
            )
        self.norm_precision = norm_precision
        self.token_dictionary = token_dictionary
        self.medians = medians
        self.names = names
        self.model_input_size = model_input_size
        self.special = "<cls>" in token_dictionary and "<eos>" in token_dictionary
        self._cache: tuple[tuple[str, ...], GeneMap] | None = None

    def ensembl_id(self, gene: str) -> str | None:
        """The vocabulary's Ensembl ID for a data gene, from an ID, a versioned ID or a symbol."""
        for candidate in (gene, gene.split(".", 1)[0]):
            if candidate in self.token_dictionary and candidate in self.medians:
                return candidate
        mapped = self.names.get(gene)
        if mapped in self.token_dictionary and mapped in self.medians:
            return mapped
        return None

    def gene_map(self, genes: Sequence[str]) -> GeneMap:
        key = tuple(genes)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        ids = [self.ensembl_id(str(g)) for g in genes]
        columns = [j for j, i in enumerate(ids) if i is not None]
        unique: dict[str, int] = {}
        targets = [unique.setdefault(ids[j], len(unique)) for j in columns]
        kept = list(unique)
        collapse = sparse.csc_matrix(
            (np.ones(len(columns)), (columns, targets)), shape=(len(genes), len(kept))
        )
        built = GeneMap(
            collapse,
            np.array([self.token_dictionary[g] for g in kept], dtype=np.int64),
            np.array([self.medians[g] for g in kept], dtype=np.float64),
        )
        self._cache = (key, built)
        return built

    def __call__(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> RaggedTokens:
        counts = sparse.csr_matrix(counts, dtype=np.float64)
        mapping = self.gene_map(genes)
        totals = np.asarray(counts.sum(axis=1)).ravel()
        known = sparse.csr_matrix(counts @ mapping.collapse)
        known.sum_duplicates()
        known.eliminate_zeros()
        known.sort_indices()
        rows = np.repeat(np.arange(known.shape[0]), np.diff(known.indptr))
        # The reference's operations in its order, by default in float64 (its loom path
        # with float64 `n_counts`): genes whose values differ only in the last bits then
        # rank as there.
        values = self._normalise(known.data, totals[rows], mapping.medians[known.indices])
        order = _rank(values, rows, known.indptr)
        ranked = mapping.tokens[known.indices[order]]
        return self._frame(ranked, np.diff(known.indptr))

    def _normalise(self, counts: np.ndarray, totals: np.ndarray, medians: np.ndarray) -> np.ndarray:
        """count / total * 10,000 / median. In float32 the first two steps round as numpy does
        for a float32 loom (float32 counts over float32 `n_counts`, times 10,000), and the
        division by the float64 medians is float64, as there: near-tied genes may swap."""
        if self.norm_precision == "float32":
            scaled = counts.astype(np.float32) / totals.astype(np.float32) * np.float32(TARGET_SUM)
            return scaled.astype(np.float64) / medians
        return counts / totals * TARGET_SUM / medians

    def _frame(self, ranked: np.ndarray, expressed: np.ndarray) -> RaggedTokens:
        """Truncate each cell to the model's input size and add V2's special tokens."""
        limit = self.model_input_size - 2 if self.special else self.model_input_size
        starts = np.r_[0, np.cumsum(expressed)[:-1]] if len(expressed) else expressed
        position = np.arange(len(ranked)) - np.repeat(starts, expressed)
        keep = position < limit
        kept = np.minimum(expressed, limit)
        extra = 2 if self.special else 0
        offsets = np.r_[0, np.cumsum(kept + extra)].astype(np.int64)
        ids = np.empty(offsets[-1], dtype=np.int64)
        shift = np.repeat(offsets[:-1] + (1 if self.special else 0), kept)
        ids[shift + position[keep]] = ranked[keep]
        if self.special:
            ids[offsets[:-1]] = self.token_dictionary["<cls>"]
            ids[offsets[1:] - 1] = self.token_dictionary["<eos>"]
        return RaggedTokens(ids, offsets)


def _weights_file(checkpoint: Path) -> Path:
    for name in WEIGHT_FILES:
        if (checkpoint / name).is_file():
            return checkpoint / name
    raise InputError(
        f"{checkpoint}: no model.safetensors or pytorch_model.bin; give the directory of a "
        "published Geneformer model"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return load_weights(path)


def _load_encoder(checkpoint: Path, weights: Path) -> BertModel:
    """The BERT encoder alone: masked-LM or classifier heads are not part of a cell embedding."""
    config = BertConfig.from_pretrained(checkpoint)
    config._attn_implementation = "sdpa"
    model = BertModel(config, add_pooling_layer=False)
    state = _read_state_dict(weights)
    encoder = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    encoder.pop("embeddings.position_ids", None)
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]
    if missing or unexpected:
        raise InputError(
            f"{weights}: not a Geneformer BERT checkpoint (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); check the config.json beside it"
        )
    return model.eval()


def _dictionary_paths(checkpoint: Path, options: dict) -> dict[str, Path | None]:
    paths: dict[str, Path | None] = {}
    for option, filename in DICTIONARIES.items():
        given = options.pop(option, None)
        path = Path(given) if given is not None else checkpoint / filename
        if not path.is_file():
            if option != "gene_name_id_dict":
                raise InputError(
                    f"{path}: Geneformer's {filename} is missing; put it in the checkpoint "
                    f"directory or pass --param {option}=PATH"
                )
            path = None
        paths[option] = path
    return paths


class GeneformerEmbedder(TorchEmbedder):
    """Cell embeddings as the authors' embedding extractor makes them.

    Options: `emb_layer` (-1: penultimate layer, the reference default; 0:
    last layer), `pooling` (mean over gene tokens; `cls`: the `<cls>` token,
    V2 only), `precision` (autocast on CUDA), `norm_precision` (float64, or
    float32 to rank as the reference does on a float32 loom without float64
    `n_counts`), `max_tokens` / `max_cells`
    (batch budget; no effect on the result), and the dictionary paths
    `token_dictionary`, `gene_median_dictionary`, `gene_name_id_dict`.
    """

    name = "geneformer"
    lora_targets: ClassVar[list[str]] = ["query", "key", "value"]
    gene_id_hint = "geneformer needs Ensembl IDs or gene symbols"

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> GeneformerEmbedder:
        checkpoint = Path(checkpoint)
        paths = _dictionary_paths(checkpoint, options)
        settings, batching = split_options("geneformer", options, DEFAULTS, BATCHING)
        weights = _weights_file(checkpoint)
        model = _load_encoder(checkpoint, weights)
        dictionaries = {
            k: load_plain_dictionary(p) if p is not None else {} for k, p in paths.items()
        }
        tokenizer = GeneformerTokenizer(
            dictionaries["token_dictionary"],
            dictionaries["gene_median_dictionary"],
            dictionaries["gene_name_id_dict"],
            int(model.config.max_position_embeddings),
            str(settings["norm_precision"]),
        )
        settings = cls._check_settings(settings, model, tokenizer)
        settings.update(
            model_input_size=tokenizer.model_input_size,
            special_tokens=tokenizer.special,
            target_sum=TARGET_SUM,
            **{f"{k}_sha256": file_sha256(p) for k, p in paths.items() if p is not None},
        )
        return cls(
            model,
            tokenizer,
            device,
            settings,
            batching,
            file_sha256(weights),
            dim=model.config.hidden_size,
        )

    @property
    def min_length(self) -> int:
        """V2 frames genes with <cls> and <eos>: a cell needs a gene between them."""
        return 3 if self.tokenizer.special else 1

    @staticmethod
    def _check_settings(settings: dict, model: BertModel, tokenizer: GeneformerTokenizer) -> dict:
        layers = int(model.config.num_hidden_layers)
        emb_layer = int(settings["emb_layer"])
        if not -layers <= emb_layer <= 0:
            raise InputError(
                f"geneformer: emb_layer={emb_layer} is outside -{layers}..0 "
                "(-1: penultimate layer, 0: last layer)"
            )
        if settings["pooling"] not in POOLINGS:
            raise InputError(f"geneformer: pooling must be one of {', '.join(POOLINGS)}")
        if settings["pooling"] == "cls" and not tokenizer.special:
            raise InputError(
                "geneformer: pooling=cls needs a V2 token dictionary (with <cls> and <eos>)"
            )
        autocast(torch.device("cpu"), settings["precision"])
        return {**settings, "emb_layer": emb_layer}

    def gene_vocabulary(self) -> set[str]:
        known = {g for g in self.tokenizer.token_dictionary if g in self.tokenizer.medians}
        return known | {s for s, g in self.tokenizer.names.items() if g in known}

    def encode(self, batch: RaggedTokens, cells: np.ndarray) -> torch.Tensor:
        """The chosen cells' embeddings as a tensor on the model's device, differentiable
        outside `embed` (fine-tuning trains through it)."""
        ids, mask = pad_ragged(batch.ids, batch.offsets, cells, self.model.config.pad_token_id)
        input_ids = to_device(ids, self.device)
        attention = to_device(mask.astype(np.int64), self.device)
        with autocast(self.device, self.settings["precision"]):
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention, output_hidden_states=True
            ).hidden_states
        layer = hidden[self.model.config.num_hidden_layers + self.settings["emb_layer"]].float()
        lengths = to_device(batch.lengths[cells], self.device)
        return self._pool(layer, lengths)

    def _pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean over gene tokens (V2's <cls> and <eos> left out, as the reference does)."""
        if self.settings["pooling"] == "cls":
            return hidden[:, 0]
        if self.tokenizer.special:
            hidden, lengths = hidden[:, 1:], lengths - 2
        keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        summed = hidden.masked_fill(~keep[:, :, None], 0.0).sum(1)
        return summed / lengths[:, None].float()
