"""scFoundation: a cell's expressed panel genes plus two count tokens through the MAE encoder.

The authors' cell embedding (`get_embedding.py`, single-cell input, version
`ce`, pool type `all`) maps a cell onto a fixed 19,264-gene panel, takes
log1p of counts per 10,000, appends two "resolution" tokens (T, the target
total count, default 10^4; S, the cell's log10 total count), keeps only the
non-zero entries of that vector in panel order, and concatenates four
readings of the encoder output: the S token, the T token, and the max and
mean over the gene tokens (4 x 768 = 3,072 dimensions for the 100M model).
Every step is per cell, so batching here changes nothing but the speed.
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

from scdrugmap.embed.layers import EncoderLayer
from scdrugmap.embed.panel import GenePanel
from scdrugmap.embed.torch_embedder import TorchEmbedder, split_options
from scdrugmap.embed.torch_runtime import autocast, load_weights, pad_ragged, to_device
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

CHECKPOINT = "models.ckpt"
GENE_INDEX = "OS_scRNA_gene_index.19264.tsv"
VERSIONS = {"ce": "cell", "rde": "rde"}
POOL_TYPES = ("all", "max")
DEFAULTS = {
    "tgthighres": "t4",
    "pre_normalized": "F",
    "version": "ce",
    "pool_type": "all",
    "precision": "float32",
}
# Cells run to thousands of tokens and attention is quadratic: a smaller budget than others.
BATCHING = {"max_tokens": 16_384, "max_cells": 64}
TARGET_SUM = 1e4


def read_gene_panel(path: Path) -> list[str]:
    try:
        panel = pd.read_csv(path, sep="\t", header=0)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable gene index ({error})") from error
    if "gene_name" not in panel.columns:
        raise InputError(f"{path}: no gene_name column; use OS_scRNA_gene_index.19264.tsv")
    return panel["gene_name"].astype(str).tolist()


def resolution_token(setting: str, log_total: np.ndarray) -> np.ndarray:
    """The T token: `tN` a fixed value, `fN` log10(total x N), `aN` log10(total) + N."""
    kind, number = setting[:1], setting[1:]
    try:
        value = float(number)
    except ValueError:
        raise InputError(
            f"scfoundation: tgthighres {setting!r} must be t, f or a and a number"
        ) from None
    if kind == "t":
        return np.full_like(log_total, value)
    if kind == "f":
        return log_total + math.log10(value)
    if kind == "a":
        return log_total + value
    raise InputError(f"scfoundation: tgthighres {setting!r} must start with t, f or a")


@dataclass(frozen=True)
class ScFoundationBatch:
    """Ragged input: cell i's values and panel positions are `[offsets[i]:offsets[i + 1]]`."""

    values: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class ScFoundationTokenizer:
    """The reference's single-cell input, for a whole CSR chunk at once."""

    def __init__(self, panel: list[str], tgthighres: str, pre_normalized: str) -> None:
        self.panel = GenePanel(panel)
        self.tgthighres = tgthighres
        self.pre_normalized = pre_normalized

    def __call__(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> ScFoundationBatch:
        on_panel = self.panel.project(counts, genes, np.float64)
        totals = np.asarray(on_panel.sum(axis=1)).ravel()
        per_cell = np.diff(on_panel.indptr)
        rows = np.repeat(np.arange(on_panel.shape[0]), per_cell)
        if self.pre_normalized == "F":
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.log1p(on_panel.data / totals[rows] * TARGET_SUM)
        else:
            values = on_panel.data
        with np.errstate(divide="ignore"):
            log_total = np.log10(totals)
        counts_tokens = np.stack([resolution_token(self.tgthighres, log_total), log_total], 1)
        return self._frame(values, on_panel.indices, per_cell, counts_tokens)

    def _frame(
        self, values: np.ndarray, indices: np.ndarray, per_cell: np.ndarray, tokens: np.ndarray
    ) -> ScFoundationBatch:
        """Genes in panel order, then T and S; like the reference, only entries above zero."""
        n_panel = len(self.panel)
        kept_tokens = (tokens > 0) & (per_cell > 0)[:, None]
        sizes = per_cell + kept_tokens.sum(1)
        offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        flat_values = np.empty(offsets[-1], dtype=np.float32)
        flat_positions = np.empty(offsets[-1], dtype=np.int64)
        starts = np.repeat(offsets[:-1], per_cell)
        slot = np.arange(len(values)) - np.repeat(np.r_[0, np.cumsum(per_cell)[:-1]], per_cell)
        flat_values[starts + slot] = values
        flat_positions[starts + slot] = indices
        for which in (0, 1):
            cells = np.flatnonzero(kept_tokens[:, which])
            at = offsets[cells] + per_cell[cells] + (kept_tokens[cells, :which].sum(1))
            flat_values[at] = tokens[cells, which]
            flat_positions[at] = n_panel + which
        return ScFoundationBatch(flat_values, flat_positions, offsets)


class AutoDiscretization(nn.Module):
    """A value as a soft mixture of learned bin embeddings (`token_emb.*`)."""

    def __init__(self, dim: int, bins: int, alpha: float, pad_id: float, mask_id: float) -> None:
        super().__init__()
        self.mlp = nn.Linear(1, bins)
        self.mlp2 = nn.Linear(bins, bins)
        self.emb = nn.Embedding(bins, dim)
        self.emb_mask = nn.Embedding(1, dim)
        self.emb_pad = nn.Embedding(1, dim)
        self.alpha = alpha
        self.pad_id = pad_id
        self.mask_id = mask_id

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        hidden = F.leaky_relu(self.mlp(values[..., None]), 0.1)
        weights = torch.softmax(self.alpha * hidden + self.mlp2(hidden), dim=-1)
        embedded = weights @ self.emb.weight
        embedded = torch.where(
            (values == self.mask_id)[..., None], self.emb_mask.weight[0], embedded
        )
        return torch.where((values == self.pad_id)[..., None], self.emb_pad.weight[0], embedded)


class Encoder(nn.Module):
    """`encoder.transformer_encoder.N` layers and the final `encoder.norm`."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.transformer_encoder = nn.ModuleList(
            [EncoderLayer(dim, heads, dim * 4) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        mask = keep[:, None, None, :]
        for layer in self.transformer_encoder:
            hidden = layer(hidden, mask)
        return self.norm(hidden)


class ScFoundationModel(nn.Module):
    """The encoder side of the MAE; the decoder only reconstructs expression."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        encoder = config["encoder"]
        dim = int(encoder["hidden_dim"])
        self.token_emb = AutoDiscretization(
            dim,
            int(config["bin_num"]),
            float(config["bin_alpha"]),
            float(config["pad_token_id"]),
            float(config["mask_token_id"]),
        )
        self.pos_emb = nn.Embedding(int(config["seq_len"]) + 1, dim)
        self.encoder = Encoder(dim, int(encoder["depth"]), int(encoder["heads"]))

    def forward(
        self, values: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        return self.encoder(self.token_emb(values) + self.pos_emb(positions), keep)


def merged_config(entry: dict) -> dict:
    """The model's settings as the reference merges them (model config, then data set config)."""
    config = entry["config"]
    model_type = config["model"]
    merged = dict(config["model_config"][model_type])
    merged.update(config.get("dataset_config", {}).get("rnaseq", {}))
    merged["model"] = model_type
    return merged


def load_entry(path: Path, version: str) -> tuple[dict, dict[str, torch.Tensor]]:
    checkpoint = load_weights(path)
    key = VERSIONS[version]
    if not isinstance(checkpoint, dict) or key not in checkpoint:
        found = ", ".join(map(str, checkpoint)) if isinstance(checkpoint, dict) else "no entries"
        raise InputError(f"{path}: no {key!r} model (found {found}); use models.ckpt as published")
    entry = checkpoint[key]
    config = merged_config(entry)
    if config["model"] != "mae_autobin" or config["encoder"].get("module_type") != "transformer":
        raise InputError(
            f"{path}: the {key!r} model is {config['model']} with a "
            f"{config['encoder'].get('module_type')} encoder; scdrugmap reads the published "
            "mae_autobin model with a transformer encoder"
        )
    state = {k.split("model.", 1)[1]: v for k, v in entry["state_dict"].items() if "model." in k}
    return config, state


def build_model(path: Path, version: str) -> ScFoundationModel:
    config, state = load_entry(path, version)
    model = ScFoundationModel(config)
    encoder_state = {k: v for k, v in state.items() if k.startswith(("token_emb.", "pos_emb."))}
    encoder_state.update({k: v for k, v in state.items() if k.startswith("encoder.")})
    missing, unexpected = model.load_state_dict(encoder_state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{path}: not the scFoundation encoder its config describes (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return model.eval()


class ScFoundationEmbedder(TorchEmbedder):
    """Cell embeddings as the authors' `get_embedding.py` makes them (single-cell, cell mode).

    Options: `tgthighres` (`t4`: T = 4, i.e. 10^4 counts; `fN`, `aN` as the
    reference), `pre_normalized` (`F`: raw counts, normalised here; `T`:
    already log1p-normalised), `version` (`ce`; `rde` for the read-depth
    enhancement model), `pool_type` (`all`: S, T, max, mean; `max`: max over
    all tokens), `precision` (autocast on CUDA), `max_tokens` / `max_cells`
    (batch budget; no effect on the result) and `gene_index` (the panel TSV
    when it is not in the checkpoint directory).
    """

    name = "scfoundation"
    lora_targets: ClassVar[list[str]] = ["out_proj"]
    gene_id_hint = "scfoundation needs gene symbols of its 19,264-gene panel"
    min_length = 3  # a gene, T and S

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> ScFoundationEmbedder:
        checkpoint = Path(checkpoint)
        panel_file = Path(options.pop("gene_index", checkpoint / GENE_INDEX))
        settings, batching = split_options("scfoundation", options, DEFAULTS, BATCHING)
        settings = _checked(settings)
        weights = checkpoint / CHECKPOINT
        for path, what in ((weights, "models.ckpt"), (panel_file, "the gene index")):
            if not path.is_file():
                raise InputError(f"{path}: {what} is missing (option gene_index=PATH for the TSV)")
        panel = read_gene_panel(panel_file)
        model = build_model(weights, settings["version"])
        settings.update(gene_index_sha256=file_sha256(panel_file), panel_size=len(panel))
        tokenizer = ScFoundationTokenizer(panel, settings["tgthighres"], settings["pre_normalized"])
        return cls(
            model,
            tokenizer,
            device,
            settings,
            batching,
            file_sha256(weights),
            dim=(4 if settings["pool_type"] == "all" else 1) * model.pos_emb.embedding_dim,
        )

    def gene_vocabulary(self) -> set[str]:
        return set(self.tokenizer.panel.index)

    def encode(self, batch: ScFoundationBatch, cells: np.ndarray) -> torch.Tensor:
        """The pooled encoder output (differentiable outside `embed`)."""
        pad_position = self.model.pos_emb.num_embeddings - 1
        values, keep = pad_ragged(batch.values, batch.offsets, cells, self.model.token_emb.pad_id)
        positions, _ = pad_ragged(batch.positions, batch.offsets, cells, pad_position)
        mask = to_device(keep, self.device)
        with autocast(self.device, self.settings["precision"]):
            hidden = self.model(
                to_device(values.astype(np.float32), self.device),
                to_device(positions, self.device),
                mask,
            ).float()
        lengths = to_device(batch.lengths[cells], self.device)
        if self.settings["pool_type"] == "max":
            return hidden.masked_fill(~mask[:, :, None], -torch.inf).max(1).values
        rows = torch.arange(len(cells), device=self.device)
        genes = torch.arange(hidden.shape[1], device=self.device)[None, :] < (lengths[:, None] - 2)
        largest = hidden.masked_fill(~genes[:, :, None], -torch.inf).max(1).values
        mean = hidden.masked_fill(~genes[:, :, None], 0.0).sum(1) / (lengths[:, None] - 2)
        return torch.cat(
            [hidden[rows, lengths - 1], hidden[rows, lengths - 2], largest, mean], dim=1
        )


def _checked(settings: dict) -> dict:
    checked = {**settings, "tgthighres": str(settings["tgthighres"])}
    resolution_token(checked["tgthighres"], np.zeros(1))
    if checked["pre_normalized"] not in ("F", "T"):
        raise InputError("scfoundation: pre_normalized must be F (raw counts) or T (log1p data)")
    if checked["version"] not in VERSIONS:
        raise InputError(f"scfoundation: version must be one of {', '.join(VERSIONS)}")
    if checked["pool_type"] not in POOL_TYPES:
        raise InputError(f"scfoundation: pool_type must be one of {', '.join(POOL_TYPES)}")
    autocast(torch.device("cpu"), checked["precision"])
    return checked
