"""Identical cells in a selection: copies of one cell, found by their content hash.

Public drug-response tables are redistributed under new names, some with every label
inverted. A cell and its copy on opposite sides of a split let a classifier look the
answer up: a copy held out scores AUROC 1, an inverted copy 0. The splits therefore
treat identical cells as one unit, and a run says how many cells had a copy and how
many of those copies carry the other label (a conflict no classifier can resolve).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class Copies:
    """`group`: one id per cell, shared by identical cells, unique otherwise."""

    group: np.ndarray
    n_copied: int
    n_conflicting: int

    def note(self) -> str | None:
        """What a run's reader must know about its copies, or None when there are none."""
        if not self.n_copied:
            return None
        text = f"{self.n_copied} cells have an identical cell in the selection, kept on one side"
        if self.n_conflicting:
            text += (
                f"; {self.n_conflicting} of them have an identical cell with the opposite "
                "label (conflicting labels: a relabelled copy of a data set?)"
            )
        return text


def find_copies(content_hashes: np.ndarray | None, labels: np.ndarray) -> Copies:
    """Group cells by content hash; an empty hash (a cell ingested before hashes were
    kept) is never taken for a copy of anything."""
    n_cells = labels.size
    if content_hashes is None:
        return Copies(np.arange(n_cells, dtype=np.int64), 0, 0)
    hashes = np.asarray(content_hashes, dtype=str)
    group = np.unique(hashes, return_inverse=True)[1]
    group = group.astype(np.int64).ravel()
    unknown = hashes == ""
    if unknown.any():
        group[unknown] = group.max() + 1 + np.arange(int(unknown.sum()))
        _, group = np.unique(group, return_inverse=True)
    size = np.bincount(group)
    sensitive = np.bincount(group, weights=labels.astype(np.float64))
    conflicting = (sensitive > 0) & (sensitive < size)
    return Copies(
        group.astype(np.int64),
        int(np.sum(size[group] > 1)),
        int(np.sum(conflicting[group])),
    )


def merge_samples(samples: np.ndarray, copies: Copies) -> np.ndarray:
    """Samples joined by identical cells, as one group each, named by their first sample.

    Without copies across samples this returns `samples` unchanged, so the folds of a
    selection without copies are exactly those grouped by sample alone.
    """
    names, sample_of_cell = np.unique(samples, return_inverse=True)
    sample_of_cell = sample_of_cell.ravel()
    n_samples, n_groups = names.size, int(copies.group.max()) + 1
    # A graph of samples and copy groups, one edge per cell: its components are the
    # units no split may cut.
    graph = sparse.coo_matrix(
        (np.ones(samples.size), (sample_of_cell, n_samples + copies.group)),
        shape=(n_samples + n_groups, n_samples + n_groups),
    )
    n_components, component = connected_components(graph, directed=False)
    sample_component = component[:n_samples]
    if np.unique(sample_component).size == n_samples:
        return samples
    first = np.full(n_components, n_samples)
    np.minimum.at(first, sample_component, np.arange(n_samples))
    return names[first[sample_component]][sample_of_cell]
