"""Expression transforms shared by the baselines, vectorised over sparse chunks."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import sparse

TARGET_SUM = 1e4


def log_cp10k(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """log1p of counts scaled to 10,000 per cell; empty cells stay zero."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    out = sparse.csr_matrix(counts, dtype=np.float32, copy=True)
    out.data *= np.repeat(scale, np.diff(out.indptr)).astype(np.float32)
    np.log1p(out.data, out=out.data)
    return out


def transform(counts: sparse.csr_matrix, value_type: str) -> sparse.csr_matrix:
    """Counts get log1p-CP10k; already normalised values are used as they are."""
    if value_type == "counts":
        return log_cp10k(counts)
    return sparse.csr_matrix(counts, dtype=np.float32)


@lru_cache(maxsize=16)
def column_map(genes: tuple[str, ...], panel: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in `genes`, in `panel`) of the panel genes present in `genes`.

    A gene listed twice in `genes` (identifiers that collapse after version
    stripping) is taken at its first position. Cached: every chunk of a data
    set asks for the same map.
    """
    first = {}
    for position, gene in enumerate(genes):
        first.setdefault(gene, position)
    pairs = [(first[g], j) for j, g in enumerate(panel) if g in first]
    if not pairs:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    source, target = np.array(pairs, dtype=np.int64).T
    return source, target


def panel_matrix(
    values: sparse.csr_matrix, genes: Sequence[str], panel: Sequence[str]
) -> np.ndarray:
    """Dense (cells, len(panel)) float32; panel genes the data lacks are zero."""
    source, target = column_map(tuple(genes), tuple(panel))
    dense = np.zeros((values.shape[0], len(panel)), dtype=np.float32)
    if len(source):
        dense[:, target] = values[:, source].toarray()
    return dense
