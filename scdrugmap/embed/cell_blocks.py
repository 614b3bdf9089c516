"""Fixed groups of cells for models that attend across cells (CellPLM).

Such a model embeds a cell in the company of the cells it shares a batch
with, so the company must be defined by the data, not by how the runner
happens to chunk it: a block is `block_size` consecutive cells of one
sample, in the data set's cell order, counted from the sample's first cell.
The same data and block size give the same blocks, and so the same
embedding, whatever the chunk size, resume point or device batch.

The runner reads whole blocks around each chunk it writes, and keeps the
blocks the last chunk ended in, so a block cut by a chunk boundary is
embedded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFINITION = "consecutive cells of one sample in data set order, block_size at a time"


def sample_blocks(samples: np.ndarray, block_size: int) -> np.ndarray:
    """A block number per cell, blocks numbered in the order of their first cell."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, not {block_size}")
    codes, _ = pd.factorize(np.asarray(samples), use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")
    grouped = codes[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    sizes = np.diff(np.r_[starts, len(grouped)])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(grouped)) - np.repeat(starts, sizes)
    pairs = codes.astype(np.int64) * (int(rank.max(initial=0)) // block_size + 1)
    blocks, _ = pd.factorize(pairs + rank // block_size)
    return blocks.astype(np.int64)


class BlockIndex:
    """Which cells belong to the blocks a row range touches."""

    def __init__(self, blocks: np.ndarray) -> None:
        self.blocks = blocks
        self._order = np.argsort(blocks, kind="stable")
        self._bounds = np.searchsorted(blocks[self._order], np.arange(blocks.max(initial=-1) + 2))

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Sorted rows of every block with a cell in [start, stop)."""
        touched = np.unique(self.blocks[start:stop])
        pieces = [self._order[self._bounds[b] : self._bounds[b + 1]] for b in touched]
        return np.sort(np.concatenate(pieces)) if pieces else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class BlockPlan:
    """A chunk's whole-block rows, which of them the previous chunk already embedded, and
    where the chunk's own rows sit among them."""

    rows: np.ndarray
    reused: np.ndarray
    at: np.ndarray
    inside: slice

    @property
    def fresh(self) -> np.ndarray:
        return self.rows[~self.reused]


class BlockedChunks:
    """Chunks embedded through whole blocks, reusing the blocks the previous chunk embedded.

    `plan` and `assemble` are called in chunk order, each once per chunk (`plan`
    may run ahead in a reader thread): `plan` says which rows to read and embed,
    `assemble` puts the fresh rows beside the reused ones and returns the chunk's.
    """

    def __init__(self, index: BlockIndex, dim: int) -> None:
        self.index = index
        self.dim = dim
        self._planned = np.zeros(0, dtype=np.int64)
        self._values = np.zeros((0, dim), dtype=np.float32)
        self._coverage = np.zeros(0, dtype=np.float32)

    def plan(self, start: int, stop: int) -> BlockPlan:
        rows = self.index.rows(start, stop)
        previous = self._planned
        at = np.minimum(np.searchsorted(previous, rows), max(len(previous) - 1, 0))
        reused = previous[at] == rows if len(previous) else np.zeros(len(rows), dtype=bool)
        self._planned = rows
        inside = slice(int(np.searchsorted(rows, start)), int(np.searchsorted(rows, stop)))
        return BlockPlan(rows, reused, at, inside)

    def assemble(
        self, plan: BlockPlan, fresh_values: np.ndarray, fresh_coverage: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(values, coverage) of the chunk's own rows."""
        values = np.zeros((len(plan.rows), self.dim), dtype=np.float32)
        coverage = np.zeros(len(plan.rows), dtype=np.float32)
        values[plan.reused] = self._values[plan.at[plan.reused]]
        coverage[plan.reused] = self._coverage[plan.at[plan.reused]]
        values[~plan.reused], coverage[~plan.reused] = fresh_values, fresh_coverage
        self._values, self._coverage = values, coverage
        return values[plan.inside], coverage[plan.inside]
