"""Genes ranked between two groups of cells, streamed over a stored data set's counts.

The statistic is scanpy's `rank_genes_groups(method="wilcoxon", tie_correct=True)` on
log1p of counts per 10,000 (scanpy's `normalize_total(target_sum=1e4)` then `log1p`),
so a biologist gets the numbers they know: the Wilcoxon rank-sum z-score (normal
approximation, tie-corrected), its two-sided p-value, Benjamini-Hochberg adjusted
p-values over all genes, log2 fold change of the expm1 group means (+1e-9), and the
share of each group's cells expressing the gene.

Memory stays within a budget however large the data set: a first pass over chunks of
cells sums each cell's counts and counts each gene's non-zeros, then genes are taken in
blocks whose non-zeros fit the budget, each block gathered from one more pass over the
cells. The ranks need no dense matrix: every zero of a gene ties at the bottom (counts
are never negative), so a gene's rank sums and tie correction follow from its sorted
non-zero values alone. Each gene's numbers are computed from its own values in one
fixed order, so the result does not depend on the budget, the blocks or the chunks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from scdrugmap.errors import InputError
from scdrugmap.progress import progress_bar
from scdrugmap.store.dataset_zarr import DatasetReader

TARGET_SUM = 1e4
MIN_GROUP_CELLS = 2  # a group of one cell has no spread (scanpy refuses it too)
# Bytes a stored non-zero costs while a chunk of cells is read and filtered (its value,
# gene index, cell index and the masks), and while a gene block is sorted and ranked
# (its value, gene, group, the sort order, the sorted copies and the tie runs).
_CHUNK_BYTES_PER_VALUE = 40
_BLOCK_BYTES_PER_VALUE = 72
# Per-gene arrays held for the whole run (counts, sums, statistics of each group).
_BYTES_PER_GENE = 8 * 24
_BYTES_PER_CELL = 8 + 1  # its total and its group
COLUMNS = ("gene", "group", "score", "logfoldchange", "pval", "pval_adj")


@dataclass(frozen=True)
class RankingPlan:
    """Row ranges of cells read per step and column ranges of genes ranked per pass."""

    cell_chunks: list[tuple[int, int]]
    gene_blocks: list[tuple[int, int]]


@dataclass
class GeneRanking:
    """Both groups' rows (each group's genes by descending score) and how it was read."""

    table: pd.DataFrame
    group_sizes: dict[str, int]
    n_gene_blocks: int
    n_cell_chunks: int


def _split(weights: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive ranges of items whose summed weights stay within `limit`, at least one
    item each (an item heavier than the limit is a range of its own)."""
    ranges, start, filled = [], 0, 0
    for i, weight in enumerate(weights.tolist()):
        if i > start and filled + weight > limit:
            ranges.append((start, i))
            start, filled = i, 0
        filled += weight
    if len(weights):
        ranges.append((start, len(weights)))
    return ranges


def _cell_chunks(indptr: np.ndarray, max_values: int) -> list[tuple[int, int]]:
    """Row ranges holding at most `max_values` stored values each (one row at least)."""
    chunks, start, n_cells = [], 0, len(indptr) - 1
    while start < n_cells:
        stop = int(np.searchsorted(indptr, indptr[start] + max_values, side="right")) - 1
        stop = min(max(stop, start + 1), n_cells)
        chunks.append((start, stop))
        start = stop
    return chunks


def _budget_left(memory_bytes: int, n_cells: int, n_genes: int) -> int:
    fixed = n_cells * _BYTES_PER_CELL + n_genes * _BYTES_PER_GENE
    left = memory_bytes - fixed
    if left < 64 * (_CHUNK_BYTES_PER_VALUE + _BLOCK_BYTES_PER_VALUE):
        need = -(-(fixed + (1 << 20)) // (1 << 20))
        raise InputError(
            f"a memory budget of {memory_bytes / (1 << 20):.1f} MiB cannot hold the per-cell "
            f"and per-gene arrays of {n_cells} cells and {n_genes} genes; allow at least "
            f"{need} MiB"
        )
    return left


def plan_ranking(
    indptr: np.ndarray, nonzeros_per_gene: np.ndarray, memory_bytes: int
) -> RankingPlan:
    """Chunks and blocks sized so that reading a chunk takes a quarter of what the budget
    leaves after the fixed arrays, and ranking a block the other three quarters."""
    left = _budget_left(memory_bytes, len(indptr) - 1, len(nonzeros_per_gene))
    chunk_values = max(1, left // 4 // _CHUNK_BYTES_PER_VALUE)
    block_values = max(1, (left - left // 4) // _BLOCK_BYTES_PER_VALUE)
    return RankingPlan(_cell_chunks(indptr, chunk_values), _split(nonzeros_per_gene, block_values))


def _read(reader: DatasetReader, chunks: Sequence[tuple[int, int]], advance) -> Iterator:
    """(first row, row count, row of each value, gene of each value, counts) per chunk."""
    for start, stop in chunks:
        chunk = reader.read_rows(start, stop)
        rows = np.repeat(np.arange(stop - start), np.diff(chunk.indptr))
        yield start, stop - start, rows, chunk.indices, chunk.data
        advance(stop - start)


def _totals_and_nonzeros(reader, membership, chunks, advance) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's total count, and each gene's non-zeros among the grouped cells."""
    totals = np.empty(reader.n_cells, dtype=np.float64)
    nonzeros = np.zeros(reader.n_genes, dtype=np.int64)
    for start, n_rows, rows, genes, counts in _read(reader, chunks, advance):
        values = counts.astype(np.float64)
        totals[start : start + n_rows] = np.bincount(rows, weights=values, minlength=n_rows)
        kept = (membership[start + rows] >= 0) & (values != 0)
        nonzeros += np.bincount(genes[kept], minlength=reader.n_genes)
    return totals, nonzeros


def _block_values(reader, membership, totals, chunks, block, size, advance):
    """The grouped cells' non-zero values of genes [first, last): gene (from 0), log1p
    CP10k value and group, in cell order, preallocated to the size pass one counted."""
    first, last = block
    gene = np.empty(size, dtype=np.int32)
    value = np.empty(size, dtype=np.float64)
    group = np.empty(size, dtype=np.int8)
    filled = 0
    for start, _, rows, genes, counts in _read(reader, chunks, advance):
        cells = start + rows
        kept = (genes >= first) & (genes < last) & (membership[cells] >= 0) & (counts != 0)
        n = int(kept.sum())
        cells = cells[kept]
        gene[filled : filled + n] = genes[kept] - first
        # As scanpy does it: each count divided by (the cell's total / target sum).
        value[filled : filled + n] = np.log1p(
            counts[kept].astype(np.float64) / (totals[cells] / TARGET_SUM)
        )
        group[filled : filled + n] = membership[cells]
        filled += n
    return gene, value, group


@dataclass
class _BlockSums:
    """Per gene of a block, per group (rows): rank sums, value sums and non-zeros; and
    per gene the tie term sum(t^3 - t) over groups of tied values, zeros included."""

    rank_sums: np.ndarray
    value_sums: np.ndarray
    nonzeros: np.ndarray
    ties: np.ndarray


def _block_sums(gene, value, group, n_genes: int, sizes: np.ndarray) -> _BlockSums:
    """Ranks among all grouped cells without a dense matrix: a gene's z zeros share the
    ranks 1..z, and its sorted non-zero values follow, tied values sharing their mean."""
    order = np.lexsort((value, gene))
    gene, value, group = gene[order], value[order], group[order]
    del order
    n_cells = int(sizes.sum())
    per_group = [np.bincount(gene[group == g], minlength=n_genes) for g in range(len(sizes))]
    nonzeros = np.stack(per_group)
    zeros = (n_cells - nonzeros.sum(axis=0)).astype(np.float64)
    gene_start = np.concatenate([[0], np.cumsum(nonzeros.sum(axis=0))[:-1]])
    new_run = np.ones(len(gene), dtype=bool)
    new_run[1:] = (gene[1:] != gene[:-1]) | (value[1:] != value[:-1])
    run_start = np.flatnonzero(new_run)
    run_length = np.diff(np.append(run_start, len(gene))).astype(np.float64)
    run_gene = gene[run_start]
    run_rank = zeros[run_gene] + (run_start - gene_start[run_gene]) + (run_length + 1) / 2
    rank = run_rank[np.cumsum(new_run) - 1]
    del new_run
    ties = np.bincount(run_gene, weights=run_length**3 - run_length, minlength=n_genes)
    ties += zeros**3 - zeros
    rank_sums, value_sums = [], []
    for g, size in enumerate(sizes):
        mine = group == g
        zero_rank_sum = (size - nonzeros[g]) * (zeros + 1) / 2
        rank_sums.append(np.bincount(gene[mine], weights=rank[mine], minlength=n_genes))
        rank_sums[-1] += zero_rank_sum
        value_sums.append(np.bincount(gene[mine], weights=value[mine], minlength=n_genes))
    return _BlockSums(np.stack(rank_sums), np.stack(value_sums), nonzeros, ties)


def benjamini_hochberg(pvals: np.ndarray) -> np.ndarray:
    """Adjusted p-values (step-up, capped at 1), as statsmodels' fdr_bh computes them."""
    pvals = np.where(np.isnan(pvals), 1.0, pvals)
    order = np.argsort(pvals)
    ranked = pvals[order] / (np.arange(1, len(pvals) + 1) / len(pvals))
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(adjusted)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _group_rows(
    g: int, names: Sequence[str], genes: pd.Index, sums: _BlockSums, sizes: np.ndarray
) -> pd.DataFrame:
    """One group against the other, scanpy's formulas term for term."""
    n_cells = float(sizes.sum())
    n_active = float(sizes[g])
    other = 1 - g
    coefficient = 1.0 - sums.ties / (n_cells**3 - n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        std_dev = np.sqrt(coefficient * n_active * (n_cells - n_active) * (n_cells + 1) / 12.0)
        scores = (sums.rank_sums[g] - (n_active * (n_cells + 1) / 2.0)) / std_dev
    scores[np.isnan(scores)] = 0
    pvals = 2 * stats.norm.sf(np.abs(scores))
    means = sums.value_sums / sizes[:, None]
    fold = (np.expm1(means[g]) + 1e-9) / (np.expm1(means[other]) + 1e-9)
    rows = pd.DataFrame(
        {
            "gene": genes,
            "group": names[g],
            "score": scores,
            "logfoldchange": np.log2(fold),
            "pval": pvals,
            "pval_adj": benjamini_hochberg(pvals.copy()),
            **{f"pct_{name}": sums.nonzeros[i] / sizes[i] for i, name in enumerate(names)},
        }
    )
    return rows.iloc[np.argsort(-scores, kind="stable")].reset_index(drop=True)


def _check_groups(membership: np.ndarray, names: Sequence[str], n_cells: int) -> np.ndarray:
    if len(names) != 2:
        raise InputError(f"genes are ranked between two groups of cells, not {len(names)}")
    if len(membership) != n_cells:
        raise InputError(f"{len(membership)} group assignments for {n_cells} cells")
    sizes = np.bincount(membership[membership >= 0], minlength=2)[:2]
    for name, size in zip(names, sizes):
        if size < MIN_GROUP_CELLS:
            other = names[1 - names.index(name)]
            raise InputError(
                f"{size} of the {n_cells} cells are in group {name} (the others: {other} or "
                f"left out); ranking genes between {names[0]} and {names[1]} cells needs at "
                f"least {MIN_GROUP_CELLS} cells in each"
            )
    return sizes


def rank_genes(
    reader: DatasetReader,
    membership: np.ndarray,
    names: Sequence[str],
    *,
    memory_bytes: int,
    show_progress: bool = False,
) -> GeneRanking:
    """Rank every gene of a counts data set between `names[0]` and `names[1]`.

    `membership` gives each cell's group as 0 or 1, or -1 for a cell left out; the cells
    of both groups are ranked together, as scanpy ranks a subset holding only them."""
    names = list(names)
    membership = np.asarray(membership, dtype=np.int8)
    sizes = _check_groups(membership, names, reader.n_cells)
    indptr = reader.indptr
    reading = plan_ranking(indptr, np.zeros(reader.n_genes, dtype=np.int64), memory_bytes)
    with progress_bar(show_progress, reader.n_cells, "ranking genes: cell totals") as advance:
        totals, nonzeros_per_gene = _totals_and_nonzeros(
            reader, membership, reading.cell_chunks, advance
        )
    plan = plan_ranking(indptr, nonzeros_per_gene, memory_bytes)
    sums = _BlockSums(
        np.zeros((2, reader.n_genes)),
        np.zeros((2, reader.n_genes)),
        np.zeros((2, reader.n_genes), dtype=np.int64),
        np.zeros(reader.n_genes),
    )
    work = reader.n_cells * len(plan.gene_blocks)
    with progress_bar(show_progress, work, "ranking genes: gene blocks") as advance:
        for first, last in plan.gene_blocks:
            size = int(nonzeros_per_gene[first:last].sum())
            values = _block_values(
                reader, membership, totals, plan.cell_chunks, (first, last), size, advance
            )
            block = _block_sums(*values, last - first, sizes)
            del values
            sums.rank_sums[:, first:last] = block.rank_sums
            sums.value_sums[:, first:last] = block.value_sums
            sums.nonzeros[:, first:last] = block.nonzeros
            sums.ties[first:last] = block.ties
    genes = pd.Index(reader.var.index.astype(str))
    table = pd.concat([_group_rows(g, names, genes, sums, sizes) for g in (0, 1)])
    return GeneRanking(
        table.reset_index(drop=True),
        dict(zip(names, map(int, sizes))),
        len(plan.gene_blocks),
        len(plan.cell_chunks),
    )
