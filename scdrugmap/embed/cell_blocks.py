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

from collections.abc import Callable

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


class BlockedChunks:
    """A chunk's rows embedded through whole blocks, reusing the blocks the last chunk embedded.

    `embed_rows(rows)` embeds the given sorted rows, whole blocks, and returns
    their (values, coverage), a row of each per row.
    """

    def __init__(
        self,
        index: BlockIndex,
        dim: int,
        embed_rows: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> None:
        self.index = index
        self.dim = dim
        self.embed_rows = embed_rows
        self._rows = np.zeros(0, dtype=np.int64)
        self._values = np.zeros((0, dim), dtype=np.float32)
        self._coverage = np.zeros(0, dtype=np.float32)

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, coverage) of rows [start, stop)."""
        rows = self.index.rows(start, stop)
        at = np.searchsorted(self._rows, rows)
        reused = np.zeros(len(rows), dtype=bool)
        if len(self._rows):
            at = np.minimum(at, len(self._rows) - 1)
            reused = self._rows[at] == rows
        values = np.zeros((len(rows), self.dim), dtype=np.float32)
        coverage = np.zeros(len(rows), dtype=np.float32)
        values[reused], coverage[reused] = self._values[at[reused]], self._coverage[at[reused]]
        if not reused.all():
            values[~reused], coverage[~reused] = self.embed_rows(rows[~reused])
        self._rows, self._values, self._coverage = rows, values, coverage
        inside = slice(np.searchsorted(rows, start), np.searchsorted(rows, stop))
        return values[inside], coverage[inside]
