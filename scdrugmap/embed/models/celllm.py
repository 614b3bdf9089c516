"""CellLM (OpenBioMed): a cell's expressed genes as binned tokens at their gene2vec positions.

The reference encoder (`PerformerLM_CellLM`) takes a cell's expression over
its 19,379-gene panel, keeps the expressed genes (value > 0) in panel order,
clips values at 5 and truncates them to integer tokens, puts a CLS token
first, pads to 6,000 tokens and runs a Performer whose values (not keys) are
masked at padding; the output is layer-normalised and zeroed at padding.
Its published input is scBERT-style log2-normalised expression (OpenBioMed
reads preprocessed matrices); we compute that from counts as scBERT does.

The cell embedding: OpenBioMed's task heads read all positions through a
trained convolution, so there is no published pooling. scDrugMap used the
frozen encoder; we take the mean over the expressed-gene outputs
(`pooling=mean`), with the CLS output (`pooling=cls`) as the alternative.
Padding costs one token here: its keys are identical, so one pad position
counted as many stands for the run (see `embed/performer.py`).
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

from scdrugmap.embed.panel import GenePanel, log2_per_10k
from scdrugmap.embed.performer import (
    GenePositions,
    build_performer,
    load_performer_weights,
    performer_shapes,
    read_performer_state,
)
from scdrugmap.embed.torch_embedder import TorchEmbedder, split_options
from scdrugmap.embed.torch_runtime import autocast, pad_ragged, to_device
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

WEIGHTS = "checkpoint4_fixed.pth"
GENE2VEC = "gene2vec_19379_512.npy"
PANEL = "gene_panel.txt"
POOLINGS = ("mean", "cls")
DEFAULTS = {"max_seq_len": 6000, "heads": 16, "dim_head": 64, "pooling": "mean"}
DEFAULTS |= {"precision": "float32"}
BATCHING = {"max_tokens": 24_000, "max_cells": 16}


@dataclass(frozen=True)
class CellLMBatch:
    """Ragged CLS-first tokens and their gene positions: cell i is `[offsets[i]:offsets[i + 1]]`."""

    tokens: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens plus the one position that stands for the padding run."""
        return np.diff(self.offsets) + 1


class CellLMTokenizer:
    def __init__(self, panel: list[str], num_tokens: int, max_seq_len: int) -> None:
        self.panel = GenePanel(panel)
        self.cls_token = num_tokens - 2
        self.max_seq_len = max_seq_len

    def __call__(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> CellLMBatch:
        on_panel = self.panel.project(counts, genes, np.float32)
        values = log2_per_10k(on_panel)
        expressed = values > 0
        per_cell = np.add.reduceat(np.r_[expressed, False].astype(np.int64), on_panel.indptr[:-1])
        per_cell = np.where(np.diff(on_panel.indptr) > 0, per_cell, 0)
        rows = np.repeat(np.arange(on_panel.shape[0]), np.diff(on_panel.indptr))[expressed]
        tokens = np.minimum(values[expressed], self.cls_token - 1).astype(np.int64)
        indices = on_panel.indices[expressed]
        kept = np.minimum(per_cell, self.max_seq_len - 1)
        starts = np.r_[0, np.cumsum(per_cell)[:-1]]
        rank = np.arange(len(rows)) - np.repeat(starts, per_cell)
        keep = rank < kept[rows]
        sizes = np.where(per_cell > 0, kept + 1, 0)
        offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        flat_tokens = np.empty(offsets[-1], dtype=np.int64)
        flat_positions = np.empty(offsets[-1], dtype=np.int64)
        firsts = offsets[:-1][per_cell > 0]
        flat_tokens[firsts] = self.cls_token
        flat_positions[firsts] = len(self.panel)
        at = offsets[rows[keep]] + 1 + rank[keep]
        flat_tokens[at] = tokens[keep]
        flat_positions[at] = indices[keep]
        return CellLMBatch(flat_tokens, flat_positions, offsets)


class CellLMModel(nn.Module):
    """PerformerLM_CellLM up to its final norm."""

    def __init__(self, shapes: dict, heads: int, dim_head: int) -> None:
        super().__init__()
        dim = shapes["dim"]
        self.token_emb = nn.Embedding(shapes["num_tokens"], dim)
        self.pos_emb = GenePositions(shapes["positions"], dim)
        self.performer = build_performer(dim, shapes["depth"], heads, dim_head, shapes["features"])
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        real: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        hidden = self.token_emb(tokens)
        # In place, as the reference adds them: float64 positions into float32 tokens.
        hidden += self.pos_emb.emb(positions)
        hidden = self.performer.net(hidden, values_kept=real, weights=weights)
        return self.norm(hidden)


def build_model(folder: Path, heads: int, dim_head: int) -> CellLMModel:
    """Position rows after gene2vec, as the reference appends them: CLS (ones), PAD (zeros)."""
    path = folder / WEIGHTS
    state = read_performer_state(path, (1.0, 0.0), folder / GENE2VEC)
    model = CellLMModel(performer_shapes(state, path), heads, dim_head)
    return load_performer_weights(model, state, path, heads, dim_head)


class CellLMEmbedder(TorchEmbedder):
    """Frozen CellLM encodings of a cell, pooled (see the module docstring for the choice).

    Options: `pooling` (mean, cls), `max_seq_len` (6,000, the published
    padding length: it changes the output, since padded keys count),
    `heads` / `dim_head` (16 x 64, the published model), `gene_panel` (the
    19,379-symbol list when not in the checkpoint directory), `precision`
    (autocast on CUDA) and `max_tokens` / `max_cells` (batch budget; no
    effect on the result).
    """

    name = "celllm"
    lora_targets: ClassVar[list[str]] = ["to_q", "to_k", "to_v"]
    gene_id_hint = "celllm needs gene symbols of its 19,379-gene panel"

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> CellLMEmbedder:
        folder = Path(checkpoint)
        panel_file = Path(options.pop("gene_panel", folder / PANEL))
        settings, batching = split_options("celllm", options, DEFAULTS, BATCHING)
        settings = _checked(settings)
        for path, what in ((folder / WEIGHTS, "the checkpoint"), (panel_file, "the gene panel")):
            if not path.is_file():
                raise InputError(f"{path}: {what} is missing (gene_panel=PATH for the panel)")
        panel = [line.strip() for line in panel_file.read_text().splitlines() if line.strip()]
        model = build_model(folder, settings["heads"], settings["dim_head"])
        if model.pos_emb.emb.num_embeddings != len(panel) + 2:
            raise InputError(
                f"{panel_file}: {len(panel)} genes, but the model has "
                f"{model.pos_emb.emb.num_embeddings - 2} gene positions"
            )
        settings.update(panel_sha256=file_sha256(panel_file), panel_size=len(panel))
        tokenizer = CellLMTokenizer(panel, model.token_emb.num_embeddings, settings["max_seq_len"])
        return cls(
            model,
            tokenizer,
            device,
            settings,
            batching,
            file_sha256(folder / WEIGHTS),
            dim=model.norm.normalized_shape[0],
        )

    @property
    def min_length(self) -> int:
        return 3  # CLS, a gene, and the padding position

    def gene_vocabulary(self) -> set[str]:
        return set(self.tokenizer.panel.index)

    def encode(self, batch: CellLMBatch, cells: np.ndarray) -> torch.Tensor:
        """Pooled final states (differentiable outside `embed`)."""
        pad_token = self.model.token_emb.num_embeddings - 1
        pad_position = self.model.pos_emb.emb.num_embeddings - 1
        tokens, real = pad_ragged(batch.tokens, batch.offsets, cells, pad_token)
        positions, _ = pad_ragged(batch.positions, batch.offsets, cells, pad_position)
        tokens = np.pad(tokens, ((0, 0), (0, 1)), constant_values=pad_token)
        positions = np.pad(positions, ((0, 0), (0, 1)), constant_values=pad_position)
        real = np.pad(real, ((0, 0), (0, 1)))
        lengths = real.sum(1)
        weights = real.astype(np.float32)
        weights[np.arange(len(cells)), lengths] = self.settings["max_seq_len"] - lengths
        device = self.device
        real_tensor = to_device(real, device)
        with autocast(device, self.settings["precision"]):
            hidden = self.model(
                to_device(tokens, device),
                to_device(positions, device),
                real_tensor,
                to_device(weights, device),
            ).float()
        if self.settings["pooling"] == "cls":
            return hidden[:, 0]
        genes = real_tensor.clone()
        genes[:, 0] = False
        return hidden.masked_fill(~genes[:, :, None], 0.0).sum(1) / genes.sum(1, keepdim=True)


def _checked(settings: dict) -> dict:
    ints = ("max_seq_len", "heads", "dim_head")
    checked = {**settings, **{k: int(settings[k]) for k in ints}}
    if checked["pooling"] not in POOLINGS:
        raise InputError(f"celllm: pooling must be one of {', '.join(POOLINGS)}")
    if checked["max_seq_len"] < 2 or min(checked["heads"], checked["dim_head"]) < 1:
        raise InputError("celllm: max_seq_len must be at least 2, heads and dim_head positive")
    autocast(torch.device("cpu"), checked["precision"])
    return checked
