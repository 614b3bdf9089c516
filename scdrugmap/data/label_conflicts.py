"""Identical cells that a data set labels both ways: one file given twice, once as the
treated sample and once as the untreated, say. No classifier can learn from such a set,
and every score on it is noise, so ingest refuses it, naming the cells.

A few tiny cells (one or two genes expressed) can coincide by chance between samples;
below `REFUSE_FROM` conflicting cells ingest warns instead of refusing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scdrugmap.errors import InputError

# As for copies across data sets (workflows/ingest.py): five identical cells are no chance.
REFUSE_FROM = 5
_NAMED = 3


def label_conflicts(
    where: str,
    hashes: np.ndarray,
    labels: np.ndarray,
    n_genes: np.ndarray,
    barcodes: Sequence[str],
) -> list[str]:
    """Warnings for a few conflicting cells; InputError from REFUSE_FROM of them on.

    Cells of unknown label and empty cells (all alike, none a copy) take no part."""
    labelled = np.flatnonzero(np.isin(labels, ("sensitive", "resistant")) & (n_genes > 0))
    if labelled.size == 0:
        return []
    unique, group = np.unique(hashes[labelled], return_inverse=True)
    sensitive = np.bincount(group, weights=(labels[labelled] == "sensitive").astype(float))
    size = np.bincount(group, minlength=unique.size)
    both = (sensitive > 0) & (sensitive < size)
    conflicting = labelled[both[group]]
    if conflicting.size == 0:
        return []
    named = "; ".join(_pair(hashes, labels, barcodes, labelled, c) for c in conflicting[:_NAMED])
    problem = (
        f"{conflicting.size} cells are identical to a cell with the opposite label (the same "
        f"genes with the same values), e.g. {named}"
    )
    if conflicting.size >= REFUSE_FROM:
        raise InputError(
            f"{where}: {problem}; a file given twice with opposite labels? Give each file "
            "once, with the label of its cells"
        )
    return [f"{where}: {problem}"]


def _pair(
    hashes: np.ndarray,
    labels: np.ndarray,
    barcodes: Sequence[str],
    labelled: np.ndarray,
    cell: int,
) -> str:
    same = (hashes[labelled] == hashes[cell]) & (labels[labelled] != labels[cell])
    twin = int(labelled[same][0])
    return f"{barcodes[cell]!r} ({labels[cell]}) = {barcodes[twin]!r} ({labels[twin]})"
