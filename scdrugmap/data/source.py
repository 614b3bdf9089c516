"""What every reader returns, the one way ingest errors are worded, and how much a file
may unpack to.

Kept apart from the readers so the format modules (delimited, 10x, h5ad) can
share it without importing each other.

A file of a few hundred kilobytes can unpack to gigabytes (a gzip of one 30-million
column header, an HDF5 dataset of unwritten chunks), so every reader works within
`ReadLimits`: the bytes a file may unpack to, the longest line and the most columns
of a table. The limits in force are `read_limits()`: those a caller set with
`limited_reading` (the server: from its options), else the defaults, which the
environment variables in `LIMIT_ENV` may raise. A file past a limit is refused with
one line naming the file, the limit and how to raise it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import sparse

from scdrugmap.errors import InputError


@dataclass
class SourceTable:
    """What one input file yields, before labels/samples are attached."""

    path: Path
    counts: sparse.csr_matrix  # cells x genes, float32, exactly the file's values
    genes: list[str]  # as written in the file (stripped of whitespace)
    barcodes: list[str]
    obs: pd.DataFrame  # other per-cell columns the file carries, index = barcodes, may be empty


def file_error(path: Path | str, problem: str, fix: str) -> InputError:
    """`<file>: <problem>; <fix>` on one line, because the CLI shows it verbatim."""
    text = f"{path}: {problem}; {fix}"
    return InputError(text.replace("\r", " ").replace("\n", " "))


def empty_obs(barcodes: list[str]) -> pd.DataFrame:
    """Formats without per-cell annotations still need an obs indexed by barcode."""
    return pd.DataFrame(index=pd.Index(barcodes, dtype=object))


MIB = 1024**2
# A table with genes as rows has a column per cell: 2 million is twice the largest
# single-cell experiments published, and a header that wide is about 60 MB of names.
DEFAULT_MAX_COLUMNS = 2_000_000
# The longest line: the header of 2 million 30-character cell names fits.
DEFAULT_MAX_LINE_BYTES = 64 * MIB
# In memory, a value of a sparse matrix takes its float32 and int32 column index.
BYTES_PER_VALUE = 8
LIMIT_ENV = {
    "max_unpacked_bytes": "SCDRUGMAP_MAX_UNPACKED_MB",
    "max_line_bytes": "SCDRUGMAP_MAX_LINE_MB",
    "max_columns": "SCDRUGMAP_MAX_COLUMNS",
}


@dataclass(frozen=True)
class ReadLimits:
    """How much one input file may unpack to.

    `max_unpacked_bytes`: the bytes a compressed table may decompress to, and the memory
    its values (or an HDF5 file's arrays, or a matrix.mtx's entries) may take once read;
    None: no limit on a table's text, and the arrays may take at most this machine's
    memory. `how_to_raise` says, per limit name, how the user raises it.
    """

    max_unpacked_bytes: int | None = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_columns: int = DEFAULT_MAX_COLUMNS
    how_to_raise: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_environment(cls) -> ReadLimits:
        """The defaults, each raised (or lowered) by its variable in `LIMIT_ENV`."""
        values: dict[str, int] = {}
        for name, variable in LIMIT_ENV.items():
            text = os.environ.get(variable, "").strip()
            if not text:
                continue
            try:
                number = float(text)
            except ValueError:
                number = -1.0
            if number <= 0:
                raise InputError(f"${variable}={text!r}: give a positive number")
            values[name] = int(number if name == "max_columns" else number * MIB)
        return cls(**values)

    @property
    def memory_bytes(self) -> int:
        """The most memory a file's arrays may take once read."""
        return self.max_unpacked_bytes or physical_memory()

    def raise_hint(self, name: str) -> str:
        """How the user raises the limit `name` (a field of this class)."""
        hints = dict(self.how_to_raise)
        if name in hints:
            return hints[name]
        unit = "number of columns" if name == "max_columns" else "size in MB"
        return f"or set ${LIMIT_ENV[name]} to a larger {unit}"


_LIMITS: ContextVar[ReadLimits | None] = ContextVar("scdrugmap_read_limits", default=None)


def read_limits() -> ReadLimits:
    """The limits in force: those set by `limited_reading`, else the defaults."""
    return _LIMITS.get() or ReadLimits.from_environment()


@contextmanager
def limited_reading(limits: ReadLimits) -> Iterator[ReadLimits]:
    """Read files within `limits` in this thread (and the tasks it starts) until exit."""
    token = _LIMITS.set(limits)
    try:
        yield limits
    finally:
        _LIMITS.reset(token)


def physical_memory() -> int:
    """This machine's memory in bytes (a large number where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 50


def as_mib(n_bytes: float) -> str:
    return f"{n_bytes / MIB:,.1f} MiB"


def limit_error(path: Path | str, problem: str, limits: ReadLimits, name: str) -> InputError:
    """A file past one of `limits`: what it is, and how to raise that limit."""
    what = {
        "max_unpacked_bytes": "subset the cells",
        "max_line_bytes": "check that the file is a table with one row per line",
        "max_columns": "check that the file is a table, or subset its columns",
    }[name]
    return file_error(path, problem, f"{what}, {limits.raise_hint(name)}")


def memory_problem(needed: int, limits: ReadLimits) -> str | None:
    """Why arrays of `needed` bytes may not be read, or None when they may."""
    if needed <= limits.memory_bytes:
        return None
    if limits.max_unpacked_bytes is None:
        return f"its arrays need {as_mib(needed)} once read, more than this machine's memory"
    return (
        f"its arrays need {as_mib(needed)} once read, more than the limit of "
        f"{as_mib(limits.max_unpacked_bytes)}"
    )
