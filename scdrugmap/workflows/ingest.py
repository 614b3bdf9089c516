"""Ingest: read and validate files, then add them to the store as one data set."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from scdrugmap.data.prepare import IngestOptions, prepare_dataset
from scdrugmap.store.overlaps import dataset_overlaps
from scdrugmap.store.storage import Storage

__all__ = ["IngestOptions", "ingest", "overlap_warnings"]

# From how many identical cells on a warning is due. Cells measured apart never agree in
# every expressed gene's value, except cells expressing one or two genes, which can meet
# by chance in large sparse data sets, one or two at a time; five or more identical cells
# between two data sets (SCAD's relabelled drugs share all of theirs) are a copy. Fewer
# are still listed in `shared_cells` and in the CLI summary, only not warned of.
SHARED_WARNING_MIN_CELLS = 5


def ingest(
    store: Storage,
    files: Sequence[str | os.PathLike],
    options: IngestOptions,
    *,
    replace: bool = False,
    show_progress: bool = False,
) -> dict:
    """Read, validate and add one data set built from `files` (all or nothing).

    Returns the data set's catalog row with `warnings`: findings that did not stop
    the ingest but that the user should hear of (a data set of one label, say, or cells
    identical to another data set's), and its overlaps by content hash (`shared_cells`,
    one {dataset_id, n_shared, n_conflicting} per other data set holding some of its
    cells; `n_duplicates` and `n_duplicates_conflicting` within the data set)."""
    prepared = prepare_dataset([Path(f) for f in files], options, show_progress=show_progress)
    row = store.add_prepared(prepared, replace=replace)
    overlaps = dataset_overlaps(store.catalog_path, prepared.dataset_id)
    warnings = list(prepared.warnings) + overlap_warnings(
        prepared.dataset_id, int(row["n_cells"]), overlaps
    )
    warnings += [
        f"removed {path}, left by an ingest that was stopped before it finished"
        for path in row["removed_staging"]
    ]
    return {**row, **overlaps, "warnings": warnings}


def overlap_warnings(dataset_id: str, n_cells: int, overlaps: dict) -> list[str]:
    """One line per other data set sharing at least SHARED_WARNING_MIN_CELLS cells with
    `dataset_id`, naming label conflicts, and one for copies within the data set."""
    lines = []
    for other in overlaps["shared_cells"]:
        n, conflicting = other["n_shared"], other["n_conflicting"]
        if n < SHARED_WARNING_MIN_CELLS:
            continue
        line = (
            f"{n} of the {n_cells} cells of {dataset_id} are identical to cells of "
            f"{other['dataset_id']} (the same genes with the same values)"
        )
        if conflicting:
            line += f", of which {conflicting} carry the opposite label: a label-inverted copy?"
        else:
            line += ": a copy of the same cells?"
        lines.append(line)
    duplicates = overlaps["n_duplicates"]
    if duplicates >= SHARED_WARNING_MIN_CELLS:
        line = f"{duplicates} cells of {dataset_id} repeat another of its cells exactly"
        if overlaps["n_duplicates_conflicting"]:
            line += (
                f"; {overlaps['n_duplicates_conflicting']} cells have a copy in it with the "
                "opposite label"
            )
        lines.append(line)
    return lines
