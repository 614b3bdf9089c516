"""Each cell's most expressed genes, in order: the input of every model that reads ranked genes.

One sort over the chunk's non-zero entries ranks every cell at once; equal
counts keep the data's column order, so a ranking is a function of the cell
alone.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def rank_expressed(
    counts: sparse.csr_matrix, columns: np.ndarray, n_genes: int
) -> sparse.csr_matrix:
    """Row i lists, best first, the positions (into `columns`) of cell i's top `n_genes` genes.

    Only expressed genes are listed, so a row can be shorter than `n_genes`.
    """
    known = sparse.csr_matrix(counts[:, columns], dtype=np.float64)
    known.eliminate_zeros()
    known.sort_indices()
    per_cell = np.diff(known.indptr)
    rows = np.repeat(np.arange(known.shape[0]), per_cell)
    order = np.lexsort((known.indices, -known.data, rows))
    position = np.arange(len(order)) - np.repeat(known.indptr[:-1], per_cell)
    keep = order[position < n_genes]
    indptr = np.r_[0, np.cumsum(np.minimum(per_cell, n_genes))].astype(np.int64)
    ranked = known.indices[keep]
    return sparse.csr_matrix(
        (np.ones(len(ranked)), ranked, indptr), shape=(known.shape[0], len(columns))
    )
