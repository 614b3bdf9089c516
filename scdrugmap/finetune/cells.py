"""Selected cells' counts, read from the store a batch at a time, and embedded by a model.

Fine-tuning reads counts, not stored embeddings: the model changes as it
trains. Batches hold cells of one data set (one gene list), and are read
as sorted row runs, so memory depends on the batch size and never on the
selection's size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy import sparse

from scdrugmap.embed.cell_blocks import sample_blocks
from scdrugmap.embed.protocol import CellBlockEmbedder, Embedder

EMBED_CHUNK = 2_000


class CellSource:
    """`cells` (dataset_id, cell_index, sample; store order) and their counts."""

    def __init__(self, store, cells: pd.DataFrame) -> None:
        self.cells = cells.reset_index(drop=True)
        self.datasets = self.cells["dataset_id"].to_numpy(dtype=str)
        self.rows = self.cells["cell_index"].to_numpy(dtype=np.int64)
        self.samples = (self.cells["dataset_id"] + "/" + self.cells["sample"]).to_numpy(dtype=str)
        self._readers = {d: store.reader(d) for d in np.unique(self.datasets)}

    def counts(self, positions: np.ndarray) -> tuple[sparse.csr_matrix, list[str], np.ndarray]:
        """Counts of cells of one data set, its genes, and the positions in row order."""
        dataset = self.datasets[positions[0]]
        if (self.datasets[positions] != dataset).any():
            raise ValueError("a batch must hold cells of one data set")
        ordered = positions[np.argsort(self.rows[positions], kind="stable")]
        reader = self._readers[dataset]
        return reader.read_cells(self.rows[ordered]), reader.gene_ids, ordered

    def batches(
        self, positions: np.ndarray, size: int, rng: np.random.Generator, by_sample: bool = False
    ) -> list:
        """Shuffled batches of at most `size` cells, each from one data set, or from one
        sample when `by_sample` (a model whose cells attend to each other trains in the
        company it embeds in: cells of one sample)."""
        groups = self.samples if by_sample else self.datasets
        out = []
        for group in np.unique(groups[positions]):
            mine = rng.permutation(positions[groups[positions] == group])
            out += [mine[i : i + size] for i in range(0, len(mine), size)]
        return [out[i] for i in rng.permutation(len(out))]

    def _embedding_groups(self, positions: np.ndarray, embedder: Embedder) -> Iterator[tuple]:
        """Positions to embed together, in row order: chunks of one data set, or whole cell
        blocks (of these cells' samples, in store order) for a model that attends across
        cells."""
        for dataset in np.unique(self.datasets[positions]):
            mine = positions[self.datasets[positions] == dataset]
            mine = mine[np.argsort(self.rows[mine], kind="stable")]
            if not isinstance(embedder, CellBlockEmbedder):
                for i in range(0, len(mine), EMBED_CHUNK):
                    yield mine[i : i + EMBED_CHUNK], None
                continue
            blocks = sample_blocks(self.samples[mine], embedder.block_size)
            starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
            for group in np.split(np.arange(len(mine)), starts[1:]):
                yield mine[group], blocks[group]

    def embed(self, embedder: Embedder, positions: np.ndarray) -> np.ndarray:
        """(len(positions), dim) embeddings, rows in the order of `positions`."""
        out = np.zeros((len(positions), int(embedder.dim)), dtype=np.float32)
        by_position = np.argsort(positions, kind="stable")
        for group, blocks in self._embedding_groups(positions, embedder):
            counts, genes, ordered = self.counts(group)  # already in row order
            extra = {} if blocks is None else {"blocks": blocks}
            values = embedder.embed(embedder.tokenize(counts, genes, **extra))
            out[by_position[np.searchsorted(positions[by_position], ordered)]] = values
        return out
