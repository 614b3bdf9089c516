"""Fitting the baselines on stored data sets, streamed in fixed-size chunks.

The fit reads data in chunks of a fixed size whatever chunk size the
embedding run uses, and accumulates in float64, so the fitted genes and
components (and hence every embedding) do not depend on how a run was chunked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from scdrugmap.embed.baselines.expression import panel_csr, panel_positions, transform
from scdrugmap.errors import InputError
from scdrugmap.store.dataset_zarr import DatasetReader

FIT_CHUNK = 4096
N_MEAN_BINS = 20


@dataclass
class FitSource:
    dataset_id: str
    reader: DatasetReader
    value_type: str


def _fit_rows(source: FitSource, max_cells: int | None, seed: int) -> np.ndarray | None:
    """Rows of one data set used for the fit: all, or a seeded subset."""
    n = source.reader.n_cells
    if max_cells is None or n <= max_cells:
        return None
    rng = np.random.default_rng([seed, *source.dataset_id.encode()])
    return np.sort(rng.choice(n, size=max_cells, replace=False))


def _per_dataset(max_cells: int | None, n_sources: int) -> int | None:
    return None if max_cells is None else max(1, max_cells // n_sources)


def fit_cell_count(sources: Sequence[FitSource], max_cells: int | None) -> int:
    """Cells one pass of the fit reads, known before it starts (for its progress bar)."""
    per_dataset = _per_dataset(max_cells, len(sources))
    return sum(
        s.reader.n_cells if per_dataset is None else min(s.reader.n_cells, per_dataset)
        for s in sources
    )


def _iter_sparse(
    sources: Sequence[FitSource],
    max_cells: int | None,
    seed: int,
    advance: Callable[[int], None],
    chunk_cells: int,
) -> Iterator[tuple[FitSource, sparse.csr_matrix]]:
    """Transformed values of the fit cells, `chunk_cells` cells of a data set at a time, with
    the data set they are of; `advance(cells)` once a chunk has been used."""
    per_dataset = _per_dataset(max_cells, len(sources))
    for source in sources:
        rows = _fit_rows(source, per_dataset, seed)
        for start, stop, counts in source.reader.iter_chunks(chunk_cells):
            if rows is not None:
                lo, hi = np.searchsorted(rows, [start, stop])
                counts = counts[rows[lo:hi] - start]
            if counts.shape[0]:
                yield source, transform(counts, source.value_type)
                advance(counts.shape[0])


def _iter_panel(
    sources: Sequence[FitSource],
    panel: Sequence[str],
    max_cells: int | None,
    seed: int,
    advance: Callable[[int], None],
    chunk_cells: int,
) -> Iterator[sparse.csr_matrix]:
    """Transformed values of the fit cells on `panel`, as float64 CSR chunks."""
    for source, values in _iter_sparse(sources, max_cells, seed, advance, chunk_cells):
        yield panel_csr(values, source.reader.gene_ids, panel).astype(np.float64)


def _unheard(n_cells: int) -> None:
    """The progress of a fit nobody follows."""


def union_genes(sources: Sequence[FitSource]) -> list[str]:
    seen: dict[str, None] = {}
    for source in sources:
        seen.update(dict.fromkeys(source.reader.gene_ids))
    return list(seen)


def gene_moments(
    sources: Sequence[FitSource],
    genes: Sequence[str],
    max_cells: int | None,
    seed: int,
    advance: Callable[[int], None] = _unheard,
    chunk_cells: int = FIT_CHUNK,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and variance (ddof 0) of every gene over the fit cells.

    Summed over the stored values only: a dense chunk of every gene (25,000 of them in
    PC9) took most of a fit's time. The sums add the same non-zero values in the same
    (cell) order as dense column sums would, so they are the dense sums to the bit.
    """
    total = np.zeros(len(genes))
    total_sq = np.zeros(len(genes))
    n = 0
    for source, values in _iter_sparse(sources, max_cells, seed, advance, chunk_cells):
        columns = panel_positions(tuple(source.reader.gene_ids), tuple(genes))[values.indices]
        kept = columns >= 0
        data = values.data[kept].astype(np.float64)
        total += np.bincount(columns[kept], weights=data, minlength=len(genes))
        total_sq += np.bincount(columns[kept], weights=np.square(data), minlength=len(genes))
        n += values.shape[0]
    if n == 0:
        raise InputError("no cells to fit the baseline on; select data sets that hold cells")
    mean = total / n
    return mean, np.maximum(total_sq / n - mean**2, 0.0), n


def select_variable_genes(
    genes: Sequence[str], mean: np.ndarray, var: np.ndarray, n_top: int, value_type: str
) -> list[str]:
    """Top genes by dispersion normalised within mean bins (Seurat's rule).

    Normalised (e.g. z-scored) values have no mean-variance relation to
    correct for, so there genes are ranked by variance alone. Ties break by
    gene identifier so the choice is deterministic.
    """
    genes = np.asarray(genes)
    usable = var > 0
    if value_type == "counts":
        dispersion = np.log(np.divide(var, mean, out=np.ones_like(var), where=mean > 0))
        edges = (
            np.quantile(mean[usable], np.linspace(0, 1, N_MEAN_BINS + 1)) if usable.any() else []
        )
        bins = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, N_MEAN_BINS - 1)
        score = np.zeros_like(var)
        for b in np.unique(bins[usable]):
            members = usable & (bins == b)
            spread = dispersion[members].std()
            centred = dispersion[members] - dispersion[members].mean()
            score[members] = centred / spread if spread > 0 else 0.0
    else:
        score = var.copy()
    candidates = np.flatnonzero(usable)
    order = np.lexsort((genes[candidates], -score[candidates]))
    return [str(g) for g in genes[candidates[order[:n_top]]]]


def covariance(
    sources: Sequence[FitSource],
    genes: Sequence[str],
    max_cells: int | None,
    seed: int,
    advance: Callable[[int], None] = _unheard,
    chunk_cells: int = FIT_CHUNK,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and covariance (ddof 0) of the fit cells on `genes`, float64.

    Summed over the stored values only: a PC9 cell expresses 11 genes of the 2,000-gene
    panel on average, so the sparse products cost under a thousandth of the dense chunk
    product they replace (4096 x 2,000 float64, 65 MB, a chunk), and memory holds the
    (genes, genes) sums and one chunk's non-zeros, whatever the number of cells. A product
    of two float32 values is exact in float64, and the sums add the products in cell order,
    chunk by chunk: the result depends on the chunk size only through the rounding of
    those additions (about 1e-16 relative), and not on the CPU, as the dense product did
    (OpenBLAS's Haswell and SkylakeX kernels differ in the last bit of 0.02% of the PC9
    quarter's sums).
    """
    total = np.zeros(len(genes))
    cross = np.zeros((len(genes), len(genes)))
    n = 0
    for chunk in _iter_panel(sources, genes, max_cells, seed, advance, chunk_cells):
        total += np.bincount(chunk.indices, weights=chunk.data, minlength=len(genes))
        products = (chunk.T.tocsr() @ chunk).tocoo()
        cross[products.row, products.col] += products.data
        n += chunk.shape[0]
    mean = total / n
    return mean, cross / n - np.outer(mean, mean), n


def principal_axes(cov: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Leading eigenvectors (rows) with a fixed sign: largest loading positive."""
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    components = eigenvectors[:, order].T
    signs = np.sign(components[np.arange(len(order)), np.abs(components).argmax(axis=1)])
    return components * signs[:, None], eigenvalues[order]
