"""The data-set filters some authors run before embedding (scBERT, UCE), as they run them.

scBERT's preprocessing drops cells with fewer than 200 expressed panel genes;
UCE's `eval_single_anndata.py` (its `--filter`, on by default) drops genes
expressed in fewer than 10 cells of the data set, then cells with fewer than
25 expressed genes left. The gene filter makes a cell's input depend on the
other cells of its data set, so it is computed once, in a pass over the whole
data set before any chunk is embedded, and the same gene mask is used for every
chunk (and recomputed identically when a run resumes).

A filtered cell is still embedded (its row is written like any other), but it
is listed in `failures` with the filter as its reason, so classifiers,
predictors and exports leave it out exactly as the authors' pipeline would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

SCREEN_CHUNK = 10_000


@dataclass(frozen=True)
class CellFilter:
    """`min_cells_per_gene` 0 means no gene filter; `known_genes_only` counts a cell's
    genes on the model's vocabulary (scBERT's panel) instead of on all genes."""

    min_genes: int
    min_cells_per_gene: int = 0
    known_genes_only: bool = False
    source: str = ""

    @property
    def reason(self) -> str:
        genes = "genes of the model's vocabulary" if self.known_genes_only else "genes"
        kept = (
            f" expressed in at least {self.min_cells_per_gene} cells of the data set"
            if self.min_cells_per_gene
            else ""
        )
        return f"fewer than {self.min_genes} expressed {genes}{kept} ({self.source})"


@dataclass(frozen=True)
class Screened:
    """What a filter found in one data set: the genes the model may use (None: all) and
    the cells it leaves out."""

    gene_mask: np.ndarray | None
    dropped: np.ndarray
    reason: str


def _expressed(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    expressed = counts.copy()
    expressed.data = (expressed.data != 0).astype(np.int32)
    return expressed


def screen(cell_filter: CellFilter, reader, known: np.ndarray) -> Screened:
    """One pass over the data set for the gene filter's cell counts (when there is one),
    one for each cell's count of the genes that remain; chunk by chunk, memory bounded."""
    n_genes = len(reader.gene_ids)
    gene_mask = None
    if cell_filter.min_cells_per_gene > 0:
        cells_per_gene = np.zeros(n_genes, dtype=np.int64)
        for _, _, counts in reader.iter_chunks(SCREEN_CHUNK):
            cells_per_gene += np.bincount(
                counts.indices[counts.data != 0], minlength=n_genes
            ).astype(np.int64)
        gene_mask = cells_per_gene >= cell_filter.min_cells_per_gene
    counted = np.ones(n_genes, dtype=bool) if gene_mask is None else gene_mask.copy()
    if cell_filter.known_genes_only:
        counted &= known
    dropped = []
    for start, _, counts in reader.iter_chunks(SCREEN_CHUNK):
        genes_per_cell = _expressed(counts) @ counted.astype(np.int32)
        dropped.append(start + np.flatnonzero(genes_per_cell < cell_filter.min_genes))
    cells = np.concatenate(dropped) if dropped else np.zeros(0, dtype=np.int64)
    return Screened(gene_mask, cells.astype(np.int64), cell_filter.reason)


def without_filtered_genes(counts: sparse.csr_matrix, gene_mask: np.ndarray | None):
    """The chunk with the genes the filter dropped set to zero and removed, so no model
    ever sees them."""
    if gene_mask is None:
        return counts
    kept = counts.copy()
    kept.data = np.where(gene_mask[kept.indices], kept.data, 0).astype(kept.data.dtype)
    kept.eliminate_zeros()
    return kept
