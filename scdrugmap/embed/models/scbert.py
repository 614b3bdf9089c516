"""scBERT: binned expression of a fixed 16,906-gene panel through a Performer.

The authors' pipeline maps a cell onto the PanglaoDB panel, normalises to
10,000 counts, takes log2(1 + x), clips at the top bin and truncates to an
integer token (0..5), appends one token 0, and adds gene2vec vectors as gene
positions. Every cell is the same 16,907 tokens long, so no padding ever
enters; the FAVOR+ attention uses the fixed random features stored in the
checkpoint, never redrawn.

The cell embedding: scBERT was published as a cell-type classifier and has
no embedding of its own; its fine-tuning head reads all 16,907 output
vectors. scDrugMap used the frozen encoder's output; we take the mean over
all positions of the final normalised hidden states (`pooling=mean`), with
`pooling=expressed` and `pooling=last` (the appended token) as alternatives.
`pooling=expressed` averages the positions whose token is above 0. A token is
floor(log2(1 + count x 10^4 / panel total)), so it is above 0 when the
gene's count is at least the cell's panel total / 10^4 (up to float32
rounding at that edge): a gene counted below that (one count in a cell with
more than 10,000 counts on the panel, two above 20,000) has token 0, as an
unexpressed gene does, and is left out; so is the appended token.

One deviation, for batch independence: FAVOR+ stabilises the key features
with the maximum over the whole batch; that maximum cancels except against a
small additive epsilon, so we take it per cell, which is exactly what the
reference computes when it predicts one cell at a time (as its predict.py
does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from scipy import sparse
from torch import nn

from scdrugmap.embed.cell_filters import CellFilter
from scdrugmap.embed.panel import GenePanel, log2_per_10k
from scdrugmap.embed.performer import (
    GenePositions,
    build_performer,
    load_performer_weights,
    performer_shapes,
    read_performer_state,
)
from scdrugmap.embed.torch_embedder import TorchEmbedder, split_options
from scdrugmap.embed.torch_runtime import autocast, to_device
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

WEIGHTS = "panglao_pretrain.pth"
GENE2VEC = "gene2vec_16906.npy"
PANEL_FILES = ("gene_panel.txt", "panglao_10000.h5ad")
POOLINGS = ("mean", "expressed", "last")
DEFAULTS = {"bin_num": 5, "heads": 10, "dim_head": 64, "pooling": "mean", "precision": "float32"}
# The authors' preprocess.py keeps cells with at least 200 expressed panel genes.
DEFAULTS |= {"min_genes": 200}
BATCHING = {"max_tokens": 16_907 * 4, "max_cells": 4}


def read_panel(path: Path) -> list[str]:
    """The gene panel: one symbol per line, or the var names of panglao_10000.h5ad."""
    if path.suffix == ".h5ad":
        import anndata

        return list(anndata.read_h5ad(path, backed="r").var_names.astype(str))
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class ScBERTBatch:
    """Dense tokens: every cell is the whole panel plus one appended token."""

    tokens: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.full(len(self.tokens), self.tokens.shape[1], dtype=np.int64)


class ScBERTTokenizer:
    """The reference preprocessing (scanpy's normalize_total and base-2 log1p), then bins."""

    def __init__(self, panel: list[str], bin_num: int) -> None:
        self.panel = GenePanel(panel)
        self.bin_num = bin_num

    def __call__(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> ScBERTBatch:
        on_panel = self.panel.project(counts, genes, np.float32)
        rows = np.repeat(np.arange(on_panel.shape[0]), np.diff(on_panel.indptr))
        binned = np.minimum(log2_per_10k(on_panel), self.bin_num).astype(np.int64)
        tokens = np.zeros((on_panel.shape[0], len(self.panel) + 1), dtype=np.int64)
        tokens[rows, on_panel.indices] = binned
        return ScBERTBatch(tokens)


class ScBERTModel(nn.Module):
    """PerformerLM up to its final norm (the `to_out` token head plays no part)."""

    def __init__(self, shapes: dict, heads: int, dim_head: int) -> None:
        super().__init__()
        dim = shapes["dim"]
        self.token_emb = nn.Embedding(shapes["num_tokens"], dim)
        self.pos_emb = GenePositions(shapes["positions"], dim)
        self.performer = build_performer(dim, shapes["depth"], heads, dim_head, shapes["features"])
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.token_emb(tokens)
        # In place, as the reference adds them: float64 positions into float32 tokens.
        hidden += self.pos_emb.emb.weight[: tokens.shape[1]]
        return self.norm(self.performer.net(hidden))


def build_model(folder: Path, heads: int, dim_head: int) -> ScBERTModel:
    path = folder / WEIGHTS
    state = read_performer_state(path, (0.0,), folder / GENE2VEC)
    model = ScBERTModel(performer_shapes(state, path), heads, dim_head)
    return load_performer_weights(model, state, path, heads, dim_head)


def _panel_file(folder: Path, given: str | None) -> Path:
    candidates = [Path(given)] if given else [folder / name for name in PANEL_FILES]
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(
        f"{folder}: no gene panel ({' or '.join(PANEL_FILES)}); scBERT's 16,906 PanglaoDB genes "
        "come with its data (panglao_10000.h5ad); pass --param gene_panel=PATH"
    )


class ScBERTEmbedder(TorchEmbedder):
    """Frozen scBERT encodings of a cell, pooled (see the module docstring for the choice).

    Options: `pooling` (mean, expressed, last), `bin_num` (5, the reference's
    top bin), `heads` / `dim_head` (10 x 64, the published model), `gene_panel`
    (the panel file when not in the checkpoint directory), `precision`
    (autocast on CUDA), `min_genes` (200, the authors' preprocessing: cells
    with fewer expressed panel genes are embedded but listed in `failures`,
    so they are left out downstream; 0 keeps every cell) and `max_tokens` /
    `max_cells` (batch budget; no effect on the result).
    """

    name = "scbert"
    lora_targets: ClassVar[list[str]] = ["to_q", "to_k", "to_v"]
    gene_id_hint = "scbert needs gene symbols of its 16,906-gene PanglaoDB panel"

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> ScBERTEmbedder:
        folder = Path(checkpoint)
        panel_file = _panel_file(folder, options.pop("gene_panel", None))
        settings, batching = split_options("scbert", options, DEFAULTS, BATCHING)
        settings = _checked(settings)
        if not (folder / WEIGHTS).is_file():
            raise InputError(f"{folder}: no {WEIGHTS}; give scBERT's pre-trained checkpoint folder")
        panel = read_panel(panel_file)
        model = build_model(folder, settings["heads"], settings["dim_head"])
        if model.pos_emb.emb.num_embeddings != len(panel) + 1:
            raise InputError(
                f"{panel_file}: {len(panel)} genes, but the model has "
                f"{model.pos_emb.emb.num_embeddings - 1} gene positions"
            )
        settings.update(panel_sha256=file_sha256(panel_file), panel_size=len(panel))
        return cls(
            model,
            ScBERTTokenizer(panel, settings["bin_num"]),
            device,
            settings,
            batching,
            file_sha256(folder / WEIGHTS),
            dim=model.norm.normalized_shape[0],
        )

    def gene_vocabulary(self) -> set[str]:
        return set(self.tokenizer.panel.index)

    @property
    def cell_filter(self) -> CellFilter | None:
        """The authors' preprocessing filter; `min_genes=0` embeds every cell."""
        if self.settings["min_genes"] == 0:
            return None
        return CellFilter(
            min_genes=self.settings["min_genes"],
            known_genes_only=True,
            source="scBERT's preprocess.py; --param min_genes=0 keeps them",
        )

    def encode(self, batch: ScBERTBatch, cells: np.ndarray) -> torch.Tensor:
        """Pooled final hidden states (differentiable outside `embed`)."""
        tokens = to_device(batch.tokens[cells], self.device)
        with autocast(self.device, self.settings["precision"]):
            hidden = self.model(tokens).float()
        if self.settings["pooling"] == "last":
            return hidden[:, -1]
        if self.settings["pooling"] == "mean":
            return hidden.mean(1)
        expressed = (tokens > 0)[:, :, None]
        return hidden.masked_fill(~expressed, 0.0).sum(1) / expressed.sum(1).clamp(min=1)


def _checked(settings: dict) -> dict:
    integers = ("bin_num", "heads", "dim_head", "min_genes")
    checked = {**settings, **{k: int(settings[k]) for k in integers}}
    if checked["pooling"] not in POOLINGS:
        raise InputError(f"scbert: pooling must be one of {', '.join(POOLINGS)}")
    if min(checked["bin_num"], checked["heads"], checked["dim_head"]) < 1:
        raise InputError("scbert: bin_num, heads and dim_head must be positive")
    if checked["min_genes"] < 0:
        raise InputError("scbert: min_genes must be 0 (no filter) or more")
    autocast(torch.device("cpu"), checked["precision"])
    return checked
