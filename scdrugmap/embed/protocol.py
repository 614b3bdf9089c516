"""The contract every embedder (baseline or foundation model) keeps.

The runner knows nothing about any model: it streams count chunks through
`tokenize` and `embed` and writes what comes out, so adding a model never
touches the runner, the store or the classifiers.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import sparse


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int
    lora_targets: Sequence[str]
    requires_counts: bool

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", **options) -> Embedder:
        """Load from the checkpoint directory in its authors' published layout.

        `options` are the model's settings (`--param KEY=VALUE`), e.g.
        `precision` (float32, bfloat16, float16: autocast on CUDA) or a
        model's pooling choice.
        """
        ...

    def gene_vocabulary(self) -> Container[str]:
        """Gene identifiers the model knows, for per-cell coverage (only `in` is asked of it)."""
        ...

    def tokenize(self, counts: sparse.csr_matrix, genes: Sequence[str]) -> Any:
        """Turn a chunk of cells (raw counts, cells x genes) into model input."""
        ...

    def embed(self, batch: Any) -> np.ndarray:
        """(n_cells, dim) float32; a row depends only on its own cell."""
        ...

    def provenance(self) -> dict:
        """`weights_sha256` and the `settings` that change the output."""
        ...


@runtime_checkable
class TrainableEmbedder(Embedder, Protocol):
    """A transformer embedder fine-tuning can train through (LoRA adapters on `model`).

    `embed` is `encode` under inference mode, batch by batch, so the frozen and
    fine-tuned paths compute the very same function of a cell.
    """

    model: Any

    def encode(self, batch: Any, cells: np.ndarray) -> Any:
        """The chosen cells' (len(cells), dim) embeddings as a differentiable torch tensor."""
        ...


@runtime_checkable
class CellBlockEmbedder(Embedder, Protocol):
    """An embedder whose cells attend to each other (CellPLM), so a cell's embedding
    depends on its company: the runner hands it whole blocks of `block_size`
    consecutive cells of one sample (`embed/cell_blocks.py`) with their block numbers,
    and `embed` lets only cells of one block see each other."""

    block_size: int

    def tokenize(
        self, counts: sparse.csr_matrix, genes: Sequence[str], blocks: np.ndarray | None = None
    ) -> Any:
        """As `Embedder.tokenize`; `blocks` numbers each cell's block (default: the cells
        in the given order, `block_size` at a time, as one sample)."""
        ...
