"""One entry point for every input format: `read_matrix_file`.

The format follows from the path: a directory or a `*.mtx[.gz]` file is a 10x
matrix directory, `.h5ad` is AnnData, `.h5`/`.hdf5` is a Cell Ranger HDF5
file, and `.tsv`/`.txt`/`.csv` (optionally `.gz`) is a delimited table.
Readers return the file's values unchanged (as float32); judging them
(NaN, negatives, integers, duplicates) is validate.py's job, so every format
gets the same checks and the same messages. Every reader works within
`read_limits()` (source.py): what a small file may unpack to is bounded before
it is allocated.
"""

from __future__ import annotations

import errno
import os
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from scdrugmap.data.delimited import ORIENTATIONS, read_delimited
from scdrugmap.data.source import SourceTable, file_error
from scdrugmap.data.tenx import check_hdf5_size, read_10x_dir, read_10x_h5
from scdrugmap.errors import InputError

__all__ = ["ORIENTATIONS", "SourceTable", "check_readable", "detect_format", "read_matrix_file"]

TABLE_SUFFIXES = (".tsv", ".txt", ".csv")
FORMATS = {
    "h5ad": "AnnData .h5ad",
    "10x-h5": "10x Cell Ranger .h5",
    "10x-dir": "10x matrix directory",
    "table": "delimited table",
}
# Longest reader message quoted in an error, so the error stays one readable line.
_MAX_REASON = 200


def detect_format(path: Path) -> str:
    """'h5ad' | '10x-h5' | '10x-dir' | 'table', from the path alone."""
    name = path.name.lower()
    base = name.removesuffix(".gz")
    if path.is_dir() or base.endswith(".mtx"):
        return "10x-dir"
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith((".h5", ".hdf5")):
        return "10x-h5"
    if base.endswith(TABLE_SUFFIXES):
        return "table"
    raise file_error(
        path,
        "unknown file format",
        "give an .h5ad file, a 10x matrix directory or .h5 file, "
        "or a .tsv/.txt/.csv table (optionally .gz)",
    )


def check_readable(path: Path) -> None:
    """Open `path` once, so a path that cannot be read fails for what is wrong with it
    (missing, a symbolic link loop, no permission) instead of as an unknown format or a
    traceback; a directory (10x) must be listable."""
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
    except OSError as err:
        raise file_error(path, *_access_problem(path, err)) from None


def _access_problem(path: Path, err: OSError) -> tuple[str, str]:
    """(problem, fix) for an OSError met opening `path`."""
    if err.errno == errno.ENOENT and path.is_symlink():
        return f"a symbolic link to {os.readlink(path)!r}, which does not exist", "fix the link"
    if err.errno == errno.ELOOP:
        return "a symbolic link loop (links that point at each other)", (
            "point the link at the file itself"
        )
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied", "make it readable for you, or copy it where you can read it"
    if err.errno == errno.ENAMETOOLONG:
        return "the file name is too long", "give a shorter path"
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file or directory", "check the path"
    return (err.strerror or type(err).__name__).lower(), "check the path"


def read_matrix_file(
    path: Path, orientation: str = "auto", progress: Callable[[int], None] | None = None
) -> SourceTable:
    """Read one input file into a SourceTable (cells x genes, float32, values as in the file).

    `orientation` applies to delimited tables only (the other formats say
    which axis is which); 'auto' decides as delimited.py documents.
    `progress(position)` hears how far into a delimited table (in its stored,
    possibly compressed, bytes) reading has got; the other formats are read by
    their libraries in one go. The libraries' warnings (anndata's about
    duplicate names, say) are not shown: what matters in them comes as this
    package's one-line errors.
    """
    path = Path(path)
    if orientation not in ORIENTATIONS:
        raise InputError(
            f"--orientation {orientation!r}: unknown orientation; use one of {list(ORIENTATIONS)}"
        )
    check_readable(path)
    kind = detect_format(path)
    if path.is_file() and path.stat().st_size == 0:
        raise file_error(path, "the file is empty", "give a file that holds a matrix")
    with as_reading_error(path, kind), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read(path, kind, orientation, progress)


@contextmanager
def as_reading_error(path: Path, kind: str) -> Iterator[None]:
    """A library's failure on a broken or mislabelled file, as one line naming the file."""
    try:
        yield
    except UnicodeDecodeError:
        raise file_error(path, "the file is not UTF-8 text", "save the table as UTF-8") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError, zlib.error) as err:
        reason = " ".join(str(err).split())[:_MAX_REASON] or type(err).__name__
        raise file_error(
            path,
            f"cannot read it as a {FORMATS[kind]} ({reason})",
            "check that the file is complete and in the format its name says",
        ) from None


def _read(
    path: Path, kind: str, orientation: str, progress: Callable[[int], None] | None
) -> SourceTable:
    if kind == "h5ad":
        return _read_h5ad(path)
    if kind == "10x-h5":
        return read_10x_h5(path)
    if kind == "10x-dir":
        return read_10x_dir(path if path.is_dir() else path.parent)
    return read_delimited(path, orientation, progress)


def _read_h5ad(path: Path) -> SourceTable:
    """`.X`, or `layers['counts']` when present (then .X is usually normalised). anndata
    reads every array the file holds, so all of them count against the memory limit."""
    import anndata
    import h5py

    with h5py.File(path, "r") as h5:
        check_hdf5_size(path, h5)
    adata = anndata.read_h5ad(path)
    matrix = adata.layers.get("counts", adata.X)
    if matrix is None:
        raise file_error(path, "the AnnData file has no .X", "write the counts to .X")
    barcodes = adata.obs_names.astype(str).str.strip().tolist()
    obs = adata.obs.copy()
    obs.index = pd.Index(barcodes, dtype=object)
    return SourceTable(
        path=path,
        counts=sparse.csr_matrix(matrix, dtype=np.float32),
        genes=adata.var_names.astype(str).str.strip().tolist(),
        barcodes=barcodes,
        obs=obs,
    )
