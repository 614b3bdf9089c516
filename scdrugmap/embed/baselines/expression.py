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


@lru_cache(maxsize=16)
def panel_positions(genes: tuple[str, ...], panel: tuple[str, ...]) -> np.ndarray:
    """Each of the data's columns' position in `panel`; -1 for a column left out (not in
    the panel, or a repeated identifier after its first column). Cached like `column_map`;
    read-only."""
    source, target = column_map(genes, panel)
    positions = np.full(len(genes), -1, dtype=np.int64)
    positions[source] = target
    positions.flags.writeable = False
    return positions


def panel_csr(
    values: sparse.csr_matrix, genes: Sequence[str], panel: Sequence[str]
) -> sparse.csr_matrix:
    """The stored values of the panel genes as (cells, len(panel)) CSR, columns renumbered
    to the panel.

    Kept sparse: a chunk's dense panel is 4 bytes a gene a cell (80 MB for 10,000 cells of
    2,000 genes), its non-zeros a few percent of that. Within a row the columns keep the
    data's order, so they need not be sorted; no column appears twice.
    """
    columns = panel_positions(tuple(genes), tuple(panel))[values.indices]
    kept = columns >= 0
    kept_before = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(kept, out=kept_before[1:])
    indptr = kept_before[values.indptr]
    return sparse.csr_matrix(
        (values.data[kept], columns[kept], indptr), shape=(values.shape[0], len(panel))
    )


def panel_matrix(
    values: sparse.csr_matrix, genes: Sequence[str], panel: Sequence[str]
) -> np.ndarray:
    """Dense (cells, len(panel)) float32; panel genes the data lacks are zero."""
    return panel_csr(values, genes, panel).toarray().astype(np.float32, copy=False)
