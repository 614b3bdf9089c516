"""Delimited text tables (.tsv/.txt/.csv, optionally gzipped), either way round.

Layout: the first line is the header; the first column holds the row names
(genes or cells). R's write.table omits the header cell above the row names,
so a header one field short of the data lines gets an empty first cell. The
separator is tab or comma, whichever the header line holds more of (neither:
a single-column table, which then has no cells).

Which columns are metadata (cells-by-genes only): a column goes to `obs`
when its name is one of METADATA_COLUMNS (case-insensitive), or when most of
its non-missing values in the first rows are not numbers (cell types,
conditions). A column whose values are mostly numbers but not all is an
expression column with a bad value, and is reported as such.

Orientation 'auto', first rule that applies:

1. a header name (after the first) is a metadata name → cells-by-genes;
2. the first header cell names genes (GENE, gene_id, symbol...) →
   genes-by-cells; it names cells (cell, barcode, cell_id...) → cells-by-genes;
3. some columns are non-numeric (metadata) → cells-by-genes;
4. the header names and the first-column names are scored for looking like
   gene identifiers (Ensembl and Entrez IDs 1, symbols 0.5, anything else 0;
   a first column of consecutive integers is row numbers, 0); the clearly
   higher-scoring side (by 0.25 or more) holds the genes;
5. otherwise the longer side holds the genes (a table has more genes than
   cells far more often than not).

Reading: a numpy scanner (textscan) handles the usual well-formed table in
about a second per 200 million fields; anything else goes through pandas'
C parser in chunks, which also locates bad values for the error message.

Bounds (`ReadLimits`, source.py): every read goes through `_Bounded`, which
counts the unpacked bytes and the length of the line being read and stops the
read the moment either passes its limit; the header's columns are counted in
its bytes before it is split; the sample takes at most MAX_SAMPLE_FIELDS fields
and SAMPLE_BYTES bytes; the values read may take at most the memory limit.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from scipy import sparse

from scdrugmap.data.genes import gene_id_kinds
from scdrugmap.data.source import (
    BYTES_PER_VALUE,
    ReadLimits,
    SourceTable,
    as_mib,
    file_error,
    limit_error,
    read_limits,
)
from scdrugmap.data.textscan import TooManyValues, scan_numeric_table

ORIENTATIONS = ("auto", "genes-by-cells", "cells-by-genes")
METADATA_COLUMNS = frozenset(
    {
        "response",
        "condition",
        "label",
        "sample",
        "cell_barcode",
        "barcode",
        "cell_type",
        "celltype",
        "batch",
        "drug",
    }
)
GENE_HEADERS = frozenset(
    {"gene", "genes", "gene_id", "gene_ids", "geneid", "gene_name", "gene_names", "gene_symbol"}
    | {"genesymbol", "symbol", "symbols", "feature", "features", "ensembl", "ensembl_id"}
)
CELL_HEADERS = frozenset(
    {"cell", "cells", "cell_id", "cell_name", "cell_names", "cellname", "barcode", "barcodes"}
    | {"cell_barcode", "cell_barcodes"}
)
NA_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none", "-nan", "#n/a"})
# The sample used to decide orientation and metadata columns: about this many fields,
# and 20 to 1,000 lines.
SAMPLE_FIELDS = 200_000
# ...but never more than these, whatever the width of the table (a header of 2 million
# cells gives a sample of 2 lines).
MAX_SAMPLE_FIELDS = 4_000_000
SAMPLE_BYTES = 32 * 1024**2
# The header is read in pieces of this size, its columns counted in each.
_HEADER_PIECE = 1 << 20
PANDAS_CHUNK_FIELDS = 5_000_000
# pandas compares NA tokens case-sensitively; string columns keep every value as text.
_NA_VALUES = sorted({v for t in NA_TOKENS for v in (t, t.upper(), t.capitalize())} | {"NaN"})
_SCORE = {"ensembl": 1.0, "entrez": 1.0, "symbol": 0.5, "other": 0.0}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class _Layout:
    sep: str
    header: list[str]  # one name per field, the first may be empty
    sample: np.ndarray  # first data lines as text, lines x fields
    non_numeric: np.ndarray  # bool, sample.shape: a value that is neither a number nor NA
    missing: np.ndarray  # bool, sample.shape: an NA token or an empty field
    complete: bool = False  # the sample holds every data line of the file


@dataclass
class _Body:
    names: np.ndarray  # first-column text, one per line
    meta: dict[int, np.ndarray]  # column -> text, one per line
    matrix: sparse.csr_matrix  # lines x numeric columns, float32


def read_delimited(
    path: Path, orientation: str = "auto", progress: Callable[[int], None] | None = None
) -> SourceTable:
    """Read a delimited table; see the module docstring for the rules. `progress(position)`
    hears, block by block, how many of the file's stored bytes have been read."""
    layout = _read_layout(path)
    n_fields = len(layout.header)
    if orientation == "auto":
        orientation = _detect_orientation(path, layout)
    meta_cols = _metadata_columns(path, layout) if orientation == "cells-by-genes" else []
    if orientation == "genes-by-cells":
        _reject_non_numeric(path, layout, [])
    numeric_cols = np.setdiff1d(np.arange(1, n_fields), meta_cols)
    body = _read_body(path, layout, meta_cols, numeric_cols, progress or _unheard)
    names = pd.Series(body.names, dtype=object).astype(str).str.strip().tolist()
    columns = [layout.header[c] for c in numeric_cols]
    if orientation == "genes-by-cells":
        return SourceTable(
            path=path,
            counts=body.matrix.T.tocsr(),
            genes=names,
            barcodes=columns,
            obs=pd.DataFrame(index=pd.Index(columns, dtype=object)),
        )
    obs = pd.DataFrame(
        {layout.header[c]: body.meta[c] for c in meta_cols}, index=pd.Index(names, dtype=object)
    )
    return SourceTable(path=path, counts=body.matrix, genes=columns, barcodes=names, obs=obs)


@contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO]:
    """Open plain or gzipped files alike; the magic bytes decide, not the file name. The
    stream refuses to unpack past `read_limits()`."""
    with open(path, "rb") as raw, _decompressed(raw) as stream:
        yield _Bounded(stream, path, read_limits())


@contextmanager
def _open_reporting(
    path: Path, progress: Callable[[int], None]
) -> Iterator[tuple[BinaryIO, Callable[[], None]]]:
    """`open_binary`, with a `report()` telling `progress` the position in the stored file:
    for a gzipped file the compressed bytes read, which is what its size counts."""
    with open(path, "rb") as raw, _decompressed(raw) as stream:
        yield _Bounded(stream, path, read_limits()), lambda: progress(raw.tell())


class _Bounded(io.BufferedIOBase):
    """A binary stream that stops the read the moment the bytes it unpacked, or the line
    being read, pass the limits: a small gzip cannot fill memory, whoever reads it (the
    scanner, pandas, the line counter)."""

    def __init__(self, stream: BinaryIO, path: Path, limits: ReadLimits) -> None:
        super().__init__()
        self._stream, self._path, self.limits = stream, path, limits
        self.unpacked = 0
        self._lines = 0  # newlines read
        self._line = 0  # bytes of the line being read, since the last newline

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:  # all of it, a piece at a time, so the limits hold
            return b"".join(iter(lambda: self.read(_HEADER_PIECE), b""))
        return self._count(self._stream.read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._count(self._stream.read1(size))

    def readline(self, size: int | None = -1) -> bytes:
        """A line, or the start of one: never more than one byte past the line limit."""
        room = max(1, self.limits.max_line_bytes - self._line + 1)
        size = room if size is None or size < 0 else min(size, room)
        return self._count(self._stream.readline(size))

    def _count(self, chunk: bytes) -> bytes:
        limits = self.limits
        self.unpacked += len(chunk)
        if limits.max_unpacked_bytes is not None and self.unpacked > limits.max_unpacked_bytes:
            raise limit_error(
                self._path,
                f"it unpacks to more than the limit of {as_mib(limits.max_unpacked_bytes)}",
                limits,
                "max_unpacked_bytes",
            )
        last = chunk.rfind(b"\n")
        if last < 0:
            self._line += len(chunk)
            self._check_line(self._line, self._lines)
            return chunk
        self._check_line(self._line + chunk.find(b"\n"), self._lines)
        if len(chunk) > limits.max_line_bytes:
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord("\n"))
            gaps = np.diff(newlines) - 1
            if len(gaps) and gaps.max() > limits.max_line_bytes:
                longest = int(np.argmax(gaps))
                self._check_line(int(gaps[longest]), self._lines + longest + 1)
        self._lines += chunk.count(b"\n")
        self._line = len(chunk) - last - 1
        return chunk

    def _check_line(self, length: int, newlines_before: int) -> None:
        if length > self.limits.max_line_bytes:
            raise limit_error(
                self._path,
                f"line {newlines_before + 1:,} is longer than the limit of "
                f"{as_mib(self.limits.max_line_bytes)}",
                self.limits,
                "max_line_bytes",
            )


@contextmanager
def _decompressed(raw: BinaryIO) -> Iterator[BinaryIO]:
    gzipped = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    if gzipped:
        with gzip.GzipFile(fileobj=raw) as stream:
            yield stream
    else:
        yield raw


def _unheard(position: int) -> None:
    """The progress of a read nobody follows."""


def _read_layout(path: Path) -> _Layout:
    with open_binary(path) as stream:
        first = _read_header(stream, path)
        if not first.strip():
            problem = "the file is empty" if not stream.read(1) else "the first line is blank"
            raise file_error(path, problem, "give a table whose first line is the header")
        text = first.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
        sep = "\t" if text.count("\t") >= text.count(",") else ","
        header = [h.strip() for h in _split(path, sep, [text])[0]]
        lines, complete = _read_sample(stream, _sample_lines(len(header)))
    rows = [r for r in _split(path, sep, b"".join(lines).decode("utf-8").splitlines()) if r]
    widths = np.array([len(r) for r in rows], dtype=np.int64)
    if len(rows) and np.all(widths == len(header) + 1):
        header = ["", *header]
    wrong = np.flatnonzero(widths != len(header))
    if len(wrong):
        raise file_error(
            path,
            f"the header has {len(header)} fields but line {wrong[0] + 2} has {widths[wrong[0]]}",
            f"make every line hold the same number of {_sep_name(sep)}-separated fields",
        )
    sample = np.array(rows, dtype=object).reshape(len(rows), len(header))
    return _Layout(sep, header, sample, *_classify_text(sample), complete=complete)


def _read_header(stream: _Bounded, path: Path) -> bytes:
    """The first line, its columns counted piece by piece before it is held whole, so a
    header millions of columns wide is refused after a few megabytes."""
    limits = stream.limits
    pieces, tabs, commas = [], 0, 0
    while True:
        piece = stream.readline(_HEADER_PIECE)
        tabs, commas = tabs + piece.count(b"\t"), commas + piece.count(b",")
        if max(tabs, commas) >= limits.max_columns:
            raise limit_error(
                path,
                f"the header has more than the limit of {limits.max_columns:,} columns",
                limits,
                "max_columns",
            )
        pieces.append(piece)
        if not piece or piece.endswith(b"\n"):
            return b"".join(pieces)


def _read_sample(stream: BinaryIO, n_lines: int) -> tuple[list[bytes], bool]:
    """Up to `n_lines` data lines (fewer once SAMPLE_BYTES are read), and whether they are
    all the file holds."""
    lines, size = [], 0
    while len(lines) < n_lines and size <= SAMPLE_BYTES:
        line = stream.readline()
        if not line:
            return lines, True
        lines.append(line)
        size += len(line)
    return lines, False


def _split(path: Path, sep: str, lines: list[str]) -> list[list[str]]:
    """Lines as fields; a field past the csv module's size limit is a malformed table."""
    try:
        return list(csv.reader(lines, delimiter=sep))
    except csv.Error as err:
        raise _malformed(path, sep, err) from None


def _sample_lines(n_fields: int) -> int:
    wanted = max(20, min(1000, SAMPLE_FIELDS // n_fields))
    return max(1, min(wanted, MAX_SAMPLE_FIELDS // n_fields))


def _malformed(path: Path, sep: str, err: Exception):
    return file_error(
        path,
        f"malformed table: {err}",
        f"make every line hold the same number of {_sep_name(sep)}-separated fields as the header",
    )


def _sep_name(sep: str) -> str:
    return "tab" if sep == "\t" else "comma"


def _classify_text(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(non-numeric, missing) masks of a text array; string work only on the non-numbers."""
    flat = values.ravel()
    not_number = np.isnan(pd.to_numeric(pd.Series(flat, dtype=object), errors="coerce"))
    candidates = np.flatnonzero(not_number.to_numpy(dtype=bool))
    missing = np.zeros(flat.shape, dtype=bool)
    tokens = pd.Series(flat[candidates], dtype=object).astype(str).str.strip().str.lower()
    missing[candidates] = tokens.isin(NA_TOKENS).to_numpy(dtype=bool)
    non_numeric = np.zeros(flat.shape, dtype=bool)
    non_numeric[candidates] = ~missing[candidates]
    return non_numeric.reshape(values.shape), missing.reshape(values.shape)


def _detect_orientation(path: Path, layout: _Layout) -> str:
    header = layout.header
    lowered = [h.lower() for h in header]
    if any(h in METADATA_COLUMNS for h in lowered[1:]):
        return "cells-by-genes"
    if lowered[0] in GENE_HEADERS:
        return "genes-by-cells"
    if lowered[0] in CELL_HEADERS:
        return "cells-by-genes"
    if layout.non_numeric[:, 1:].any():
        return "cells-by-genes"
    row_score = _gene_score(layout.sample[:, 0].tolist(), row_names=True)
    column_score = _gene_score(header[1:], row_names=False)
    if abs(row_score - column_score) >= 0.25:
        return "genes-by-cells" if row_score > column_score else "cells-by-genes"
    return "genes-by-cells" if _count_lines(path, layout) >= len(header) - 1 else "cells-by-genes"


def _gene_score(names: list[str], *, row_names: bool) -> float:
    if not names:
        return 0.0
    if row_names and _are_row_numbers(names):
        return 0.0
    return float(np.mean([_SCORE[k] for k in gene_id_kinds(names)]))


def _are_row_numbers(names: list[str]) -> bool:
    numbers = pd.to_numeric(pd.Series(names), errors="coerce").to_numpy()
    if np.isnan(numbers).any():
        return False
    return bool(np.array_equal(numbers, numbers[0] + np.arange(len(numbers))) and numbers[0] <= 1)


def _count_lines(path: Path, layout: _Layout) -> int:
    """Data lines in the file; only needed when the names do not tell the orientation."""
    if layout.complete:
        return len(layout.sample)
    with open_binary(path) as stream:
        n = sum(block.count(b"\n") for block in iter(lambda: stream.read(1 << 24), b""))
    return n - 1


def _metadata_columns(path: Path, layout: _Layout) -> list[int]:
    """Columns (after the first) holding per-cell annotations instead of expression."""
    n_bad = layout.non_numeric.sum(axis=0)
    n_present = (~layout.missing).sum(axis=0)
    mostly_text = 2 * n_bad > n_present
    known = np.array([h.lower() in METADATA_COLUMNS for h in layout.header])
    meta = [int(c) for c in np.flatnonzero(known | mostly_text) if c > 0]
    names = [layout.header[c] for c in meta]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise file_error(path, f"column {duplicated[0]!r} appears twice", "rename one of them")
    _reject_non_numeric(path, layout, meta)
    return meta


def _reject_non_numeric(path: Path, layout: _Layout, meta_cols: list[int]) -> None:
    bad = layout.non_numeric.copy()
    bad[:, [0, *meta_cols]] = False
    if bad.any():
        line, col = (int(i[0]) for i in np.nonzero(bad))
        sample = layout.sample
        raise _non_numeric_error(path, sample[line, col], sample[line, 0], layout.header[col], line)


def _non_numeric_error(path: Path, value: str, row: str, column: str, line: int):
    """`line` counts data lines from 0; the message counts file lines from 1, header included."""
    return file_error(
        path,
        f"non-numeric value {value!r} among the expression values (row {row!r}, "
        f"column {column!r}, line {line + 2})",
        "expression values must be numbers; fix the value, or check --orientation "
        "(annotation columns are kept only when the table has cells as rows)",
    )


def _read_body(
    path: Path,
    layout: _Layout,
    meta_cols: list[int],
    numeric_cols: np.ndarray,
    progress: Callable[[int], None],
) -> _Body:
    string_cols = [0, *meta_cols]
    limits = read_limits()
    with _open_reporting(path, progress) as (stream, report):
        stream.readline()
        try:
            scanned = scan_numeric_table(
                stream,
                layout.sep,
                len(layout.header),
                string_cols,
                on_block=report,
                max_values=limits.memory_bytes // BYTES_PER_VALUE,
            )
        except TooManyValues as err:
            raise _too_many_values(path, err.n_values, limits) from None
    if scanned is None:
        return _read_body_pandas(path, layout, string_cols, numeric_cols, progress)
    position = np.full(len(layout.header), -1, dtype=np.int32)
    position[numeric_cols] = np.arange(len(numeric_cols), dtype=np.int32)
    matrix = sparse.csr_matrix(
        (scanned.values, position[scanned.columns], scanned.indptr),
        shape=(scanned.n_lines, len(numeric_cols)),
        dtype=np.float32,
    )
    meta = {c: scanned.strings[c] for c in meta_cols}
    return _Body(scanned.strings[0], meta, matrix)


def _read_body_pandas(
    path: Path,
    layout: _Layout,
    string_cols: list[int],
    numeric_cols: np.ndarray,
    progress: Callable[[int], None],
) -> _Body:
    """The general reader: quotes, NA tokens, empty fields; slower, and exact about errors."""
    n_fields = len(layout.header)
    dtypes = {c: str for c in string_cols} | {int(c): np.float32 for c in numeric_cols}
    names, meta, blocks = [], {c: [] for c in string_cols[1:]}, []
    limits, n_values = read_limits(), 0
    try:
        with _open_reporting(path, progress) as (stream, report):
            chunks = pd.read_csv(
                stream,
                sep=layout.sep,
                header=None,
                skiprows=1,
                names=range(n_fields),
                dtype=dtypes,
                keep_default_na=False,
                na_values={int(c): _NA_VALUES for c in numeric_cols},
                chunksize=max(1, PANDAS_CHUNK_FIELDS // n_fields),
                engine="c",
            )
            for chunk in chunks:
                names.append(chunk[0].fillna("").to_numpy(dtype=object))
                for c in meta:
                    meta[c].append(chunk[c].fillna("").to_numpy(dtype=object))
                values = chunk[numeric_cols].to_numpy(dtype=np.float32)
                blocks.append(sparse.csr_matrix(values))
                n_values += blocks[-1].nnz
                if n_values * BYTES_PER_VALUE > limits.memory_bytes:
                    raise _too_many_values(path, n_values, limits)
                report()
    except pd.errors.ParserError as err:
        raise _malformed(path, layout.sep, err) from None
    except ValueError:
        raise _locate_non_numeric(path, layout, numeric_cols) from None
    if not blocks:
        empty = np.empty(0, dtype=object)
        matrix = sparse.csr_matrix((0, len(numeric_cols)), dtype=np.float32)
        return _Body(empty, {c: empty for c in meta}, matrix)
    return _Body(
        np.concatenate(names),
        {c: np.concatenate(v) for c, v in meta.items()},
        sparse.vstack(blocks, format="csr", dtype=np.float32),
    )


def _too_many_values(path: Path, n_values: int, limits: ReadLimits):
    where = (
        "this machine's memory"
        if limits.max_unpacked_bytes is None
        else f"the limit of {as_mib(limits.max_unpacked_bytes)}"
    )
    return limit_error(
        path,
        f"its non-zero values (more than {n_values:,}) need more memory than {where}",
        limits,
        "max_unpacked_bytes",
    )


def _locate_non_numeric(path: Path, layout: _Layout, numeric_cols: np.ndarray):
    """Re-read as text to name the first value pandas could not convert (error path only)."""
    chunk_lines = max(1, PANDAS_CHUNK_FIELDS // len(layout.header))
    with open_binary(path) as stream:
        stream.readline()
        chunks = pd.read_csv(
            stream,
            sep=layout.sep,
            header=None,
            dtype=str,
            na_filter=False,
            chunksize=chunk_lines,
            engine="c",
        )
        for i, chunk in enumerate(chunks):
            values = chunk[numeric_cols].to_numpy(dtype=object)
            bad, _ = _classify_text(values)
            if bad.any():
                line, col = (int(j[0]) for j in np.nonzero(bad))
                column = layout.header[numeric_cols[col]]
                row = chunk.iat[line, 0]
                return _non_numeric_error(
                    path, values[line, col], row, column, i * chunk_lines + line
                )
    return file_error(
        path, "some expression values are not numbers", "expression values must be numbers"
    )
