"""The per-cell columns a file carries, read without reading its matrix.

The web page offers them as soon as a file is uploaded, so the user can say
which column names each cell's sample before a job starts. That must stay
cheap for a file of millions of cells: an .h5ad gives its obs column names
and cell count from the obs group's attributes and index length alone, a 10x
.h5 its matrix shape (it has no per-cell columns), and a table its header and
first lines, judged by the same rules `ingest` uses (delimited.py), so the
columns offered are exactly those `--sample-column` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py

from scdrugmap.data.delimited import (
    METADATA_COLUMNS,
    _detect_orientation,
    _metadata_columns,
    _read_layout,
)
from scdrugmap.data.readers import as_reading_error, detect_format

# Column names that usually say which sample (patient, donor) a cell came from, by preference.
SAMPLE_COLUMN_NAMES = ("sample", "patient", "donor", "sample_id", "patient_id", "donor_id")
_MAX_REASON = 200


@dataclass(frozen=True)
class CellColumns:
    """A file's per-cell columns, in file order, and its number of cells when known cheaply
    (a table's would need reading every line)."""

    columns: list[str] = field(default_factory=list)
    n_cells: int | None = None

    @property
    def suggested_sample_column(self) -> str | None:
        """The column most likely to name each cell's sample, matched case-insensitively."""
        by_name = {c.lower(): c for c in reversed(self.columns)}
        return next((by_name[n] for n in SAMPLE_COLUMN_NAMES if n in by_name), None)


def read_cell_columns(path: Path) -> CellColumns:
    """The per-cell columns of an .h5ad, a 10x .h5 or a delimited table; errors are worded
    as `read_matrix_file` words them."""
    kind = detect_format(path)
    readers = {"h5ad": _h5ad_columns, "10x-h5": _tenx_h5_columns, "table": _table_columns}
    if kind not in readers:
        return CellColumns()  # a 10x matrix directory: barcodes, no per-cell columns
    with as_reading_error(path, kind):
        return readers[kind](path)


def _h5ad_columns(path: Path) -> CellColumns:
    with h5py.File(path, "r") as h5:
        obs = h5["obs"]
        if not isinstance(obs, h5py.Group):
            # anndata < 0.7 wrote obs as one record array: its names alone cannot be read,
            # so nothing is offered and the job reads the file as ingest does.
            return CellColumns()
        names = [str(name) for name in obs.attrs.get("column-order", [])]
        return CellColumns(names, len(obs[obs.attrs["_index"]]))


def _tenx_h5_columns(path: Path) -> CellColumns:
    with h5py.File(path, "r") as h5:
        # v3 keeps the matrix in `matrix/`, v2 in a group named after the genome.
        group = h5["matrix"] if "matrix" in h5 else next(iter(h5.values()))
        return CellColumns([], int(group["shape"][1]))


def _table_columns(path: Path) -> CellColumns:
    layout = _read_layout(path)
    named = any(h.lower() in METADATA_COLUMNS for h in layout.header[1:])
    if not (named or layout.non_numeric[:, 1:].any()):
        # No column can be an annotation; deciding the orientation might count every line.
        return CellColumns()
    if _detect_orientation(path, layout) != "cells-by-genes":
        return CellColumns()
    return CellColumns([layout.header[c] for c in _metadata_columns(path, layout)])
