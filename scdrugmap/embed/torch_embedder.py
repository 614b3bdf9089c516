"""What every torch foundation-model embedder shares: options, batching, provenance.

A model file keeps only what is its own: reading the published checkpoint,
the tokeniser, and `encode` (a batch of cells to a tensor). Running `encode`
under inference mode in length buckets, splitting `--param` options and
reporting provenance are the same for all, and live here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import sparse

from scdrugmap.embed.torch_runtime import embed_by_length, resolve_device
from scdrugmap.errors import InputError

# Measured on 2 cores: CPU batches beyond this many tokens fall out of cache (tGPT ran at
# half its rate with 512-cell batches, the others 5-15 % slower); GPUs keep each model's
# own, larger budget.
CPU_MAX_TOKENS = 8_192


@dataclass(frozen=True)
class RaggedTokens:
    """Token ids of many cells in one array: cell i is `ids[offsets[i]:offsets[i + 1]]`."""

    ids: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def cell(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


class BatchBudget(dict):
    """The batch budget, knowing which values the user set: those are never capped."""

    def __init__(self, values: dict, given: Sequence[str] = ()) -> None:
        super().__init__(values)
        self.given = frozenset(given)


def split_options(model: str, options: dict, defaults: dict, batching: dict) -> tuple[dict, dict]:
    """`--param` options into the model's settings and the batch budget; unknown ones refused."""
    settings = {**defaults, **{k: options.pop(k) for k in defaults if k in options}}
    given = [k for k in batching if k in options]
    budget = BatchBudget({**batching, **{k: int(options.pop(k)) for k in given}}, given)
    if options:
        raise InputError(f"{model}: unknown option(s) {', '.join(sorted(options))}")
    return settings, budget


def parse_flag(model: str, name: str, value) -> bool:
    """A true/false `--param` (JSON on the command line, a bool or its name from Python)."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise InputError(f"{model}: {name} must be true or false, not {value!r}")


class TorchEmbedder:
    """Base of the foundation-model embedders; subclasses define `load`, `encode` and
    `gene_vocabulary`, and set `min_length` when a cell needs framing tokens to embed."""

    name: ClassVar[str]
    lora_targets: ClassVar[list[str]]
    requires_counts = True
    min_length = 1
    # How it was loaded ({"checkpoint": dir, "options": --param values}), set by build_embedder.
    load_recipe: dict | None = None

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        device: str | torch.device,
        settings: dict,
        batching: dict,
        weights_sha256: str,
        dim: int,
    ) -> None:
        """`device` as the user named it ('auto', 'cpu', 'cuda:1'); the model moves there."""
        self.device = resolve_device(str(device))
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.settings = settings
        self.batching = batching
        capped = "max_tokens" in batching and "max_tokens" not in getattr(batching, "given", ())
        if self.device.type == "cpu" and capped:
            self.batching = {**batching, "max_tokens": min(batching["max_tokens"], CPU_MAX_TOKENS)}
        self.dim = int(dim)
        self._weights_sha256 = weights_sha256

    def tokenize(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> Any:
        return self.tokenizer(counts, genes)

    @torch.inference_mode()
    def embed(self, batch: Any) -> np.ndarray:
        """Length-bucketed `encode`; a cell shorter than `min_length` keeps a zero row."""
        return embed_by_length(
            batch.lengths,
            self.dim,
            self.batching,
            lambda cells: self.encode(batch, cells).cpu().numpy(),
            min_length=self.min_length,
        )

    def encode(self, batch: Any, cells: np.ndarray) -> torch.Tensor:
        """The chosen cells' embeddings as a tensor, differentiable outside `embed`."""
        raise NotImplementedError

    def provenance(self) -> dict:
        return {"weights_sha256": self._weights_sha256, "settings": self.settings}
