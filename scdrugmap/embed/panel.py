"""Fixed gene panels (scFoundation's 19,264 genes, scBERT's 16,906): data columns onto them.

A data set's genes arrive in any order and with gaps; a sparse 0/1 matrix
moves a whole CSR chunk onto the panel in one product, genes the data lacks
staying zero, as the references fill them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse


class GenePanel:
    """A panel's genes and the projection of data columns onto it, cached per gene list."""

    def __init__(self, genes: list[str]) -> None:
        self.genes = genes
        self.index: dict[str, int] = {}
        for position, gene in enumerate(genes):
            self.index.setdefault(gene, position)
        self._cache: tuple[tuple[str, ...], sparse.csc_matrix] | None = None

    def __len__(self) -> int:
        return len(self.genes)

    def projection(self, genes: Sequence[str]) -> sparse.csc_matrix:
        """(data genes x panel) 0/1 matrix; a symbol the data names twice counts once."""
        key = tuple(genes)
        if self._cache is None or self._cache[0] != key:
            pairs: dict[int, int] = {}
            for column, gene in enumerate(genes):
                position = self.index.get(str(gene))
                if position is not None:
                    pairs.setdefault(position, column)
            matrix = sparse.csc_matrix(
                (np.ones(len(pairs), dtype=np.float32), (list(pairs.values()), list(pairs))),
                shape=(len(genes), len(self.genes)),
            )
            self._cache = (key, matrix)
        return self._cache[1]

    def project(self, counts: sparse.spmatrix, genes: Sequence[str], dtype) -> sparse.csr_matrix:
        """The chunk's counts on the panel, sorted, explicit zeros dropped."""
        moved = sparse.csr_matrix(sparse.csr_matrix(counts, dtype=dtype) @ self.projection(genes))
        moved.eliminate_zeros()
        moved.sort_indices()
        return moved


def log2_per_10k(on_panel: sparse.csr_matrix) -> np.ndarray:
    """scBERT's preprocessing of panel counts, value by value (aligned with `on_panel.data`).

    scanpy's order and precision: rows scaled by 10^4 / total in float32,
    log1p in float32, then divided by ln 2.
    """
    totals = np.asarray(on_panel.sum(axis=1), dtype=np.float32).ravel()
    rows = np.repeat(np.arange(on_panel.shape[0]), np.diff(on_panel.indptr))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (np.float32(1e4) / totals)[rows]
        logged = (np.log1p(on_panel.data * scale) / np.log(2)).astype(np.float32)
    return np.nan_to_num(logged)
