"""Cells as text through any local Hugging Face language model (the benchmark's LLM route).

A cell becomes the sentence of its `top_n` most expressed gene symbols, best
first, placed in a template (default: the symbols alone, space-separated, as
"cell sentences" are written), and the model's last hidden states are pooled
into one vector. A sentence-transformers directory carries its own pooling
(`1_Pooling/config.json`) and normalisation (`Normalize` in `modules.json`);
those are honoured here without the sentence-transformers package, so its
embeddings are the ones that library gives. Any other encoder or decoder is
pooled by the mean over real tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as transformers_logging

from scdrugmap.data.genes import is_gene_symbol
from scdrugmap.embed.ranking import rank_expressed
from scdrugmap.embed.torch_embedder import RaggedTokens, TorchEmbedder, split_options
from scdrugmap.embed.torch_runtime import (
    autocast,
    pad_ragged,
    to_device,
)
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

DEFAULTS = {
    "top_n": 100,
    "template": "{genes}",
    "separator": " ",
    "max_length": None,
    "precision": "float32",
}
BATCHING = {"max_tokens": 32_768, "max_cells": 256}
# sentence-transformers concatenates its pooled vectors in this order.
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "lasttoken")
WEIGHT_PATTERNS = ("model.safetensors", "pytorch_model.bin", "model-*.safetensors")
ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True)
class Pooling:
    """How token states become one vector: modes (concatenated in order) and normalisation."""

    modes: tuple[str, ...]
    normalize: bool
    source: str

    def apply(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        mask = keep[:, :, None].to(hidden.dtype)
        counts = mask.sum(1).clamp(min=1e-9)
        parts = []
        for mode in self.modes:
            if mode == "cls_token":
                parts.append(hidden[:, 0])
            elif mode == "max_tokens":
                parts.append(hidden.masked_fill(mask == 0, -1e9).max(1).values)
            elif mode == "mean_tokens":
                parts.append((hidden * mask).sum(1) / counts)
            elif mode == "mean_sqrt_len_tokens":
                parts.append((hidden * mask).sum(1) / counts.sqrt())
            else:
                last = keep.long().sum(1) - 1
                parts.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        pooled = torch.cat(parts, dim=1)
        return F.normalize(pooled, dim=1) if self.normalize else pooled


@dataclass(frozen=True)
class ModelLayout:
    """Where the transformer lives in the directory, its pooling, and its length limit."""

    transformer: Path
    pooling: Pooling
    max_length: int | None


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not readable JSON ({error})") from error


def read_layout(folder: Path) -> ModelLayout:
    """A sentence-transformers directory's modules, or a plain model with mean pooling."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return ModelLayout(folder, Pooling(("mean_tokens",), False, "mean over real tokens"), None)
    modules = {m["type"]: m for m in _read_json(modules_file)}
    if ST_TRANSFORMER not in modules or ST_POOLING not in modules:
        found = ", ".join(sorted(modules))
        raise InputError(
            f"{modules_file}: a Transformer and a Pooling module are needed to embed text; "
            f"found {found}"
        )
    transformer = folder / modules[ST_TRANSFORMER].get("path", "")
    config = _read_json(folder / modules[ST_POOLING]["path"] / "config.json")
    modes = tuple(m for m in POOLING_MODES if config.get(f"pooling_mode_{m}", False))
    unsupported = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
    unsupported = [k for k in unsupported if k.removeprefix("pooling_mode_") not in modes]
    if unsupported or not modes:
        raise InputError(
            f"{folder}: pooling {', '.join(unsupported) or 'none'} is not supported; "
            f"supported: {', '.join(POOLING_MODES)}"
        )
    settings_file = transformer / "sentence_bert_config.json"
    limit = _read_json(settings_file).get("max_seq_length") if settings_file.is_file() else None
    pooling = Pooling(modes, ST_NORMALIZE in modules, "sentence-transformers modules.json")
    return ModelLayout(transformer, pooling, limit)


class CellTexts:
    """Cells as text: top expressed symbols, best first, in a template."""

    def __init__(self, top_n: int, template: str, separator: str) -> None:
        self.top_n = top_n
        self.template = template
        self.separator = separator
        self._cache: tuple[tuple[str, ...], np.ndarray] | None = None

    def symbol_columns(self, genes: Sequence[str]) -> np.ndarray:
        key = tuple(genes)
        if self._cache is None or self._cache[0] != key:
            known = np.fromiter((is_gene_symbol(g) for g in genes), dtype=bool, count=len(genes))
            self._cache = (key, np.flatnonzero(known))
        return self._cache[1]

    def __call__(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> list[str]:
        columns = self.symbol_columns(genes)
        ranked = rank_expressed(counts, columns, self.top_n)
        names = np.array([str(genes[c]).strip() for c in columns], dtype=object)
        return [
            self.template.format(genes=self.separator.join(names[ranked.indices[start:stop]]))
            if stop > start
            else ""
            for start, stop in zip(ranked.indptr[:-1], ranked.indptr[1:])
        ]


@dataclass(frozen=True)
class SymbolNames:
    """Answers `in` for names that are gene symbols: any symbol can be written as text."""

    def __contains__(self, gene: object) -> bool:
        return is_gene_symbol(str(gene))


def _weights_sha256(folder: Path) -> str:
    files = sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))
    if not files:
        raise InputError(
            f"{folder}: no model weights (model.safetensors or pytorch_model.bin); "
            "give a Hugging Face model directory"
        )
    if len(files) == 1:
        return file_sha256(files[0])
    return "+".join(file_sha256(f)[:16] for f in files)


def _load(folder: Path) -> tuple[torch.nn.Module, object, str]:
    """Tokenizer and model from local files only, SDPA where the architecture has it."""
    transformers_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise InputError(f"{folder}: no usable tokenizer ({str(error).splitlines()[0]})") from error
    attention = "sdpa"
    try:
        model = AutoModel.from_pretrained(
            folder, local_files_only=True, attn_implementation=attention
        )
    except ValueError:
        attention = "eager"
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, RuntimeError) as error:
        raise InputError(
            f"{folder}: not a loadable model ({str(error).splitlines()[0]})"
        ) from error
    return model.eval(), tokenizer, attention


def _checked(settings: dict, model_limit: int) -> dict:
    top_n = int(settings["top_n"])
    if top_n < 1:
        raise InputError("text: top_n must be at least 1")
    template = str(settings["template"])
    try:
        template.format(genes="")
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(
            f"text: template {template!r} must hold {{genes}} and no other field ({error})"
        ) from error
    if "{genes}" not in template:
        raise InputError(f"text: template {template!r} must hold {{genes}}")
    limit = model_limit if settings["max_length"] is None else int(settings["max_length"])
    if not 2 <= limit <= model_limit:
        raise InputError(f"text: max_length must be between 2 and the model's {model_limit}")
    autocast(torch.device("cpu"), settings["precision"])
    return {**settings, "top_n": top_n, "template": template, "max_length": limit}


class TextEmbedder(TorchEmbedder):
    """Cells as text, embedded by a local language model.

    Options: `top_n` (100 symbols), `template` (with `{genes}`; default the
    symbols alone), `separator` (" "), `max_length` (tokens; the model's or
    its sentence-transformers limit by default; longer texts are truncated,
    dropping the least expressed genes), `precision` (autocast on CUDA) and
    `max_tokens` / `max_cells` (batch budget; no effect on the result).
    """

    name = "text"
    lora_targets: ClassVar[list[str]] = ["query", "key", "value", "q_proj", "k_proj", "v_proj"]
    gene_id_hint = "text needs gene symbols"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        texts: CellTexts,
        pooling: Pooling,
        device: str | torch.device,
        settings: dict,
        batching: dict,
        weights_sha256: str,
    ) -> None:
        width = int(model.config.hidden_size) * len(pooling.modes)
        super().__init__(model, tokenizer, device, settings, batching, weights_sha256, dim=width)
        self.texts = texts
        self.pooling = pooling
        # Read once: the runner tokenises the next chunk in another thread while this one
        # encodes, and a fast tokenizer refuses to be entered from two threads at once.
        self.pad_id = int(tokenizer.pad_token_id)

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> TextEmbedder:
        layout = read_layout(Path(checkpoint))
        settings, batching = split_options("text", options, DEFAULTS, BATCHING)
        weights_sha256 = _weights_sha256(layout.transformer)
        model, tokenizer, attention = _load(layout.transformer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        positions = getattr(model.config, "max_position_embeddings", None) or 512
        model_limit = min(layout.max_length or positions, positions)
        settings = _checked(settings, model_limit)
        settings.update(
            pooling=list(layout.pooling.modes),
            normalize=layout.pooling.normalize,
            pooling_from=layout.pooling.source,
            attention=attention,
            model_type=model.config.model_type,
        )
        texts = CellTexts(settings["top_n"], settings["template"], settings["separator"])
        return cls(
            model,
            tokenizer,
            texts,
            layout.pooling,
            device,
            settings,
            batching,
            weights_sha256,
        )

    def gene_vocabulary(self) -> SymbolNames:
        return SymbolNames()

    def tokenize(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> RaggedTokens:
        texts = self.texts(counts, genes)
        encoded = self.tokenizer(texts, truncation=True, max_length=self.settings["max_length"])[
            "input_ids"
        ]
        lengths = np.array([len(ids) if text else 0 for ids, text in zip(encoded, texts)])
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        flat = [ids for ids, text in zip(encoded, texts) if text]
        ids = np.concatenate(flat).astype(np.int64) if flat else np.zeros(0, dtype=np.int64)
        return RaggedTokens(ids, offsets)

    def encode(self, batch: RaggedTokens, cells: np.ndarray) -> torch.Tensor:
        """Pooled last hidden states (differentiable outside `embed`); padding on the right."""
        ids, keep = pad_ragged(batch.ids, batch.offsets, cells, self.pad_id)
        mask = to_device(keep, self.device)
        with autocast(self.device, self.settings["precision"]):
            hidden = self.model(
                input_ids=to_device(ids, self.device), attention_mask=mask.long()
            ).last_hidden_state.float()
        return self.pooling.apply(hidden, mask)
