"""Chunks through three stages at once: read and tokenise, embed, write.

While the model embeds chunk k (the device's work), a reader thread reads and
tokenises chunk k+1 and a writer thread writes chunk k-1, so neither disk nor
tokeniser leaves the model waiting. Chunks stay in order (results land in
their original cell order, and a chunk is marked done only after its rows are
written), and at most `PREFETCH` prepared and one unwritten chunk are held, so
memory stays bounded by the chunk size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
from scipy import sparse

from scdrugmap.embed.cell_blocks import BlockedChunks, BlockIndex, sample_blocks
from scdrugmap.embed.cell_filters import without_filtered_genes
from scdrugmap.embed.protocol import CellBlockEmbedder, Embedder

PREFETCH = 2


def coverage(counts: sparse.csr_matrix, known: np.ndarray) -> np.ndarray:
    """Fraction of each cell's expressed genes that are in the model's vocabulary."""
    expressed = np.diff(counts.indptr).astype(np.float32)
    flags = (known[counts.indices] & (counts.data != 0)).astype(np.float32)
    known_expressed = np.asarray(
        sparse.csr_matrix((flags, counts.indices, counts.indptr), shape=counts.shape).sum(axis=1)
    ).ravel()
    return np.divide(known_expressed, expressed, out=np.zeros_like(expressed), where=expressed > 0)


class ChunkSource(Protocol):
    def prepare(self, start: int, stop: int) -> Any:
        """Read and tokenise rows [start, stop) (runs in the reader thread)."""
        ...

    def finish(self, prepared: Any) -> tuple[np.ndarray, np.ndarray]:
        """Embed what `prepare` made: the rows' (values, coverage)."""
        ...


class RowChunks:
    """A chunk is its own rows."""

    def __init__(
        self, embedder: Embedder, reader, known: np.ndarray, gene_mask: np.ndarray | None = None
    ) -> None:
        self.embedder, self.reader, self.known = embedder, reader, known
        self.gene_mask = gene_mask

    def prepare(self, start: int, stop: int) -> tuple[Any, np.ndarray]:
        counts = self.reader.read_rows(start, stop)
        used = without_filtered_genes(counts, self.gene_mask)
        return self.embedder.tokenize(used, self.reader.gene_ids), coverage(counts, self.known)

    def finish(self, prepared: tuple[Any, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        batch, chunk_coverage = prepared
        return self.embedder.embed(batch), chunk_coverage


class BlockChunks:
    """A chunk is embedded through the whole cell blocks it touches (`embed/cell_blocks.py`)."""

    def __init__(
        self,
        embedder: CellBlockEmbedder,
        reader,
        known: np.ndarray,
        gene_mask: np.ndarray | None = None,
    ) -> None:
        self.embedder, self.reader, self.known = embedder, reader, known
        self.gene_mask = gene_mask
        self.blocks = sample_blocks(reader.read_samples(), embedder.block_size)
        self.chunks = BlockedChunks(BlockIndex(self.blocks), int(embedder.dim))

    def prepare(self, start: int, stop: int) -> tuple:
        plan = self.chunks.plan(start, stop)
        fresh = plan.fresh
        if len(fresh) == 0:
            return plan, None, np.zeros(0, dtype=np.float32)
        counts = self.reader.read_cells(fresh)
        batch = self.embedder.tokenize(
            without_filtered_genes(counts, self.gene_mask),
            self.reader.gene_ids,
            blocks=self.blocks[fresh],
        )
        return plan, batch, coverage(counts, self.known)

    def finish(self, prepared: tuple) -> tuple[np.ndarray, np.ndarray]:
        plan, batch, fresh_coverage = prepared
        values = (
            self.embedder.embed(batch)
            if batch is not None
            else np.zeros((0, int(self.embedder.dim)), dtype=np.float32)
        )
        return self.chunks.assemble(plan, values, fresh_coverage)


def chunk_source(
    embedder: Embedder, reader, known: np.ndarray, gene_mask: np.ndarray | None = None
) -> ChunkSource:
    """`gene_mask`: the genes a data-set filter (`embed/cell_filters.py`) lets the model use."""
    if isinstance(embedder, CellBlockEmbedder):
        return BlockChunks(embedder, reader, known, gene_mask)
    return RowChunks(embedder, reader, known, gene_mask)


def run_chunks(
    chunks: Sequence[tuple[int, int, int]],
    source: ChunkSource,
    write: Callable[[int, np.ndarray, np.ndarray], None],
    done: Callable[[int], None],
) -> None:
    """Each (chunk, start, stop) prepared ahead, embedded here, written behind, in order;
    `done(n_cells)` after each chunk is written. The first error stops the run."""
    with (
        ThreadPoolExecutor(1, thread_name_prefix="scdrugmap-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="scdrugmap-write") as writer,
    ):
        upcoming = iter(chunks)
        prepared: deque = deque()
        writing: deque = deque()

        def read_ahead() -> None:
            item = next(upcoming, None)
            if item is not None:
                prepared.append((item, reader.submit(source.prepare, item[1], item[2])))

        for _ in range(PREFETCH):
            read_ahead()
        while prepared:
            (chunk, start, stop), future = prepared.popleft()
            read_ahead()
            values, chunk_coverage = source.finish(future.result())
            writing.append((stop - start, writer.submit(write, chunk, values, chunk_coverage)))
            while len(writing) > 1:
                n_cells, written = writing.popleft()
                written.result()
                done(n_cells)
        for n_cells, written in writing:
            written.result()
            done(n_cells)
