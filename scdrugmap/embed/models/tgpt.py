"""tGPT: a cell as the sentence of its most expressed gene symbols, read by GPT-2.

The authors pre-trained a GPT-2 on "sentences" of gene symbols ranked by
decreasing expression (`-` and `.` in symbols written as `_`, as their
feature-extraction code does) and embed a cell as the mean of the last hidden
states over its gene tokens, leaving out the `</b>` and `</s>` that the
tokenizer puts around the sentence. The tokenizer is word-level, so a
sentence is a lookup of each symbol in its vocabulary: done here on the whole
chunk at once instead of through strings.
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
from scipy import sparse
from transformers import GPT2Model
from transformers.utils import logging as transformers_logging

from scdrugmap.embed.ranking import rank_expressed
from scdrugmap.embed.torch_embedder import RaggedTokens, TorchEmbedder, split_options
from scdrugmap.embed.torch_runtime import (
    autocast,
    pad_ragged,
    to_device,
)
from scdrugmap.errors import InputError
from scdrugmap.provenance import file_sha256

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DEFAULTS = {"max_length": None, "precision": "float32"}
BATCHING = {"max_tokens": 65_536, "max_cells": 512}
# The reference's LineDataset rewrites these characters before tokenising.
_SEPARATORS = re.compile(r"[-.]")
_ONE_WORD = re.compile(r"^\w+$")


def sentence_symbol(gene: str) -> str:
    """A gene symbol as tGPT's sentences spell it (HLA-B -> HLA_B, RP11-1.2 -> RP11_1_2)."""
    return _SEPARATORS.sub("_", gene)


@dataclass(frozen=True)
class WordVocabulary:
    """The word-level tokenizer.json: symbol ids, and the ids the template adds around a cell."""

    ids: dict[str, int]
    bos_id: int
    eos_id: int
    pad_id: int

    @classmethod
    def read(cls, path: Path) -> WordVocabulary:
        try:
            spec = json.loads(path.read_text())
            model, template = spec["model"], spec["post_processor"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise InputError(f"{path}: not a tGPT tokenizer.json ({error})") from error
        if model.get("type") != "WordLevel" or template.get("type") != "TemplateProcessing":
            raise InputError(
                f"{path}: tGPT's tokenizer is word-level with a </b> ... </s> template; "
                f"this one is {model.get('type')} / {template.get('type')}"
            )
        single = template["single"]
        if len(single) != 3 or "Sequence" not in single[1]:
            raise InputError(f"{path}: expected the template '</b> $A </s>'")
        vocab = {str(k): int(v) for k, v in model["vocab"].items()}
        bos, eos = (single[i]["SpecialToken"]["id"] for i in (0, 2))
        specials = {t["content"]: int(t["id"]) for t in spec.get("added_tokens", [])}
        if "<pad>" not in specials:
            raise InputError(f"{path}: no <pad> token")
        return cls(vocab, vocab[bos], vocab[eos], specials["<pad>"])

    def gene_ids(self, genes: Sequence[str]) -> np.ndarray:
        """Token id per data column, -1 where the symbol is not one vocabulary word."""
        special = {self.bos_id, self.eos_id, self.pad_id}
        ids = []
        for gene in genes:
            word = sentence_symbol(str(gene))
            token = self.ids.get(word, -1) if _ONE_WORD.match(word) else -1
            ids.append(-1 if token in special else token)
        return np.array(ids, dtype=np.int64)


@dataclass(frozen=True)
class SpelledGenes:
    """The genes tGPT knows, as a data set may spell them: `HLA-B` and `HLA.B` are `HLA_B`.

    Answers `in` like a set of gene names; the spellings are too many to list.
    """

    vocabulary: WordVocabulary

    def __contains__(self, gene: object) -> bool:
        return bool(self.vocabulary.gene_ids([str(gene)])[0] >= 0)


class TGPTTokenizer:
    """Ranked sentences as token ids, the whole chunk at once."""

    def __init__(self, vocabulary: WordVocabulary, max_length: int) -> None:
        self.vocabulary = vocabulary
        self.max_length = max_length
        self._cache: tuple[tuple[str, ...], np.ndarray, np.ndarray] | None = None

    @property
    def n_genes(self) -> int:
        return self.max_length - 2

    def known_columns(self, genes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(genes)
        if self._cache is None or self._cache[0] != key:
            ids = self.vocabulary.gene_ids(genes)
            columns = np.flatnonzero(ids >= 0)
            self._cache = (key, columns, ids[columns])
        return self._cache[1], self._cache[2]

    def sentences(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> list[str]:
        """The cells in the reference's text form (what its tokenizer reads)."""
        columns, _ = self.known_columns(genes)
        ranked = rank_expressed(counts, columns, self.n_genes)
        names = np.array([sentence_symbol(str(genes[c])) for c in columns], dtype=object)
        return [
            " ".join(names[ranked.indices[ranked.indptr[i] : ranked.indptr[i + 1]]])
            for i in range(ranked.shape[0])
        ]

    def __call__(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> RaggedTokens:
        columns, tokens = self.known_columns(genes)
        ranked = rank_expressed(counts, columns, self.n_genes)
        per_cell = np.diff(ranked.indptr)
        framed = np.where(per_cell > 0, per_cell + 2, 0)
        offsets = np.r_[0, np.cumsum(framed)].astype(np.int64)
        ids = np.empty(offsets[-1], dtype=np.int64)
        starts = offsets[:-1][per_cell > 0]
        ids[starts] = self.vocabulary.bos_id
        ids[offsets[1:][per_cell > 0] - 1] = self.vocabulary.eos_id
        slot = np.arange(len(ranked.indices)) - np.repeat(ranked.indptr[:-1], per_cell)
        ids[np.repeat(offsets[:-1], per_cell) + 1 + slot] = tokens[ranked.indices]
        return RaggedTokens(ids, offsets)


def _weights_file(checkpoint: Path) -> Path:
    for name in WEIGHT_FILES:
        if (checkpoint / name).is_file():
            return checkpoint / name
    raise InputError(
        f"{checkpoint}: no model.safetensors or pytorch_model.bin; give the directory of the "
        "published tGPT model"
    )


def _load_model(checkpoint: Path) -> GPT2Model:
    """GPT-2 without its language-model head (`transformer.*` of the published GPT2LMHeadModel)."""
    transformers_logging.disable_progress_bar()
    try:
        model = GPT2Model.from_pretrained(
            checkpoint, local_files_only=True, attn_implementation="sdpa"
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(
            f"{checkpoint}: not a loadable GPT-2 checkpoint ({str(error).splitlines()[0]})"
        ) from error
    return model.eval()


class TGPTEmbedder(TorchEmbedder):
    """Cell embeddings as tGPT's feature extraction makes them.

    Options: `max_length` (tokens per cell including `</b>` and `</s>`; the
    model's `n_positions` by default, 64 for transcriptome-gpt-1024-8-16-64,
    so 62 genes), `precision` (autocast on CUDA) and `max_tokens` /
    `max_cells` (batch budget; no effect on the result).
    """

    name = "tgpt"
    lora_targets: ClassVar[list[str]] = ["c_attn"]
    gene_id_hint = "tgpt needs gene symbols"
    min_length = 3  # </b>, a gene, </s>

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> TGPTEmbedder:
        checkpoint = Path(checkpoint)
        tokenizer_file = checkpoint / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise InputError(f"{checkpoint}: no tokenizer.json (tGPT's word-level tokenizer)")
        settings, batching = split_options("tgpt", options, DEFAULTS, BATCHING)
        vocabulary = WordVocabulary.read(tokenizer_file)
        weights = _weights_file(checkpoint)
        model = _load_model(checkpoint)
        settings = _checked(settings, model)
        if model.config.vocab_size < len(vocabulary.ids):
            raise InputError(
                f"{checkpoint}: the model knows {model.config.vocab_size} tokens but "
                f"tokenizer.json has {len(vocabulary.ids)}; the files are from different models"
            )
        settings.update(tokenizer_sha256=file_sha256(tokenizer_file), pooling="mean of genes")
        return cls(
            model,
            TGPTTokenizer(vocabulary, settings["max_length"]),
            device,
            settings,
            batching,
            file_sha256(weights),
            dim=model.config.n_embd,
        )

    def gene_vocabulary(self) -> SpelledGenes:
        return SpelledGenes(self.tokenizer.vocabulary)

    def encode(self, batch: RaggedTokens, cells: np.ndarray) -> torch.Tensor:
        """Mean of the last hidden states over gene tokens (differentiable outside `embed`).

        Padding goes on the right, so under GPT-2's causal attention no real
        token ever sees it: a cell's output does not depend on its batch.
        """
        ids, keep = pad_ragged(batch.ids, batch.offsets, cells, self.tokenizer.vocabulary.pad_id)
        mask = to_device(keep.astype(np.int64), self.device)
        with autocast(self.device, self.settings["precision"]):
            hidden = self.model(
                input_ids=to_device(ids, self.device), attention_mask=mask
            ).last_hidden_state.float()
        lengths = to_device(batch.lengths[cells], self.device)
        position = torch.arange(hidden.shape[1], device=self.device)[None, :]
        genes = (position >= 1) & (position < lengths[:, None] - 1)
        summed = hidden.masked_fill(~genes[:, :, None], 0.0).sum(1)
        return summed / (lengths[:, None] - 2).float()


def _checked(settings: dict, model: GPT2Model) -> dict:
    positions = int(model.config.n_positions)
    length = positions if settings["max_length"] is None else int(settings["max_length"])
    if not 3 <= length <= positions:
        raise InputError(
            f"tgpt: max_length must be between 3 and the model's {positions} positions"
        )
    autocast(torch.device("cpu"), settings["precision"])
    return {**settings, "max_length": length}
