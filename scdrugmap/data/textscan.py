"""A fast reader for well-formed, mostly-zero numeric text tables.

Published count tables (GEO supplementary files such as the PC9 data) are
hundreds of megabytes of ``0<TAB>``: a 22k x 8.6k table is 190 million fields,
of which 1 % are not zero. pandas' C parser converts every field and needs
about 30 s for it; this scanner looks only at the bytes that are not a lone
``0`` and takes about a second, using numpy over the raw bytes.

How: in a block of complete lines, a byte is *boring* if it is a separator, a
newline, or a ``0`` with a separator/newline on both sides (a zero field).
Every other byte belongs to an *interesting* field (a name, a label or a
non-zero value), and runs of consecutive interesting bytes are exactly those
fields. When no field is empty, the bytes before a field's start ``s`` are
``2 * (zero fields) + sum(len + 1 of interesting fields)``, so the field
number, hence line and column, of every interesting field follows from
counts over the interesting bytes alone.

The scanner only accepts the simple form: every line with the same number
of fields, no empty field, every value column parseable by numpy as a float.
Anything else (quotes around numbers, NA tokens, ragged lines) makes it
return None, and the caller uses pandas, which handles the general case and
locates errors precisely.

Memory: a block's work arrays are a few tens of times its bytes (the stream
being read bounds a line's length), numbers are parsed GATHER_CELLS bytes of
text at a time, each block's values are kept as CSR (8 bytes a value: a float32
and an int32 column), and a caller may bound the values kept (`max_values`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd

BLOCK_BYTES = 1 << 21
# Longest numeric field the scanner gathers; "-1.2345678901234567e-05" is 23.
MAX_NUMBER_WIDTH = 40
# Whole numbers up to this many digits are parsed by arithmetic instead (fits int64).
MAX_INTEGER_WIDTH = 18
# Fields are gathered into a (fields x width) matrix at most this many cells at a time;
# string fields beyond it are cut out one by one.
GATHER_CELLS = 1 << 22
_NEWLINE = 10
_ZERO = ord("0")


@dataclass
class ScannedTable:
    """Non-zero numeric fields as coordinates, plus the text of the string columns."""

    n_lines: int
    indptr: np.ndarray  # int64, n_lines + 1: line i's values are [indptr[i], indptr[i + 1])
    columns: np.ndarray  # int32 column (field) number of each non-zero value, line by line
    values: np.ndarray  # float32
    strings: dict[int, np.ndarray]  # column number -> str array, one per line

    @property
    def lines(self) -> np.ndarray:
        """The line number (0-based, header excluded) of each non-zero value."""
        return np.repeat(np.arange(self.n_lines), np.diff(self.indptr))


class _NotSimple(Exception):
    """The block is not in the simple form; the caller falls back to pandas."""


class TooManyValues(Exception):
    """The table holds more non-zero values than the caller allows."""

    def __init__(self, n_values: int) -> None:
        super().__init__(f"more than {n_values:,} non-zero values")
        self.n_values = n_values


def scan_numeric_table(
    stream: BinaryIO,
    sep: str,
    n_fields: int,
    string_columns: Sequence[int],
    on_block: Callable[[], None] = lambda: None,
    max_values: int | None = None,
) -> ScannedTable | None:
    """Scan the rest of `stream` (after the header); None when it is not in the simple form.
    `on_block()` after each block, so a caller can tell how far reading has got; more than
    `max_values` non-zero values raise TooManyValues."""
    sep_byte = ord(sep)
    string_cols = np.asarray(sorted(set(string_columns)), dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    strings: dict[int, list[np.ndarray]] = {int(c): [] for c in string_cols}
    n_lines = n_values = 0
    for block in _line_blocks(stream):
        try:
            lines, cols, values, block_strings, block_lines = _scan_block(
                block, sep_byte, n_fields, string_cols
            )
        except _NotSimple:
            return None
        per_line = np.bincount(lines, minlength=block_lines)
        parts.append((per_line, cols.astype(np.int32), values))
        n_values += len(values)
        if max_values is not None and n_values > max_values:
            raise TooManyValues(max_values)
        for col, texts in block_strings.items():
            strings[col].append(texts)
        n_lines += block_lines
        on_block()

    def joined(index: int, dtype: type) -> np.ndarray:
        return np.concatenate([p[index] for p in parts]) if parts else np.empty(0, dtype)

    indptr = np.zeros(n_lines + 1, dtype=np.int64)
    np.cumsum(joined(0, np.int64), out=indptr[1:])
    return ScannedTable(
        n_lines=n_lines,
        indptr=indptr,
        columns=joined(1, np.int32),
        values=joined(2, np.float32),
        strings={
            c: np.concatenate(t) if t else np.empty(0, dtype=object) for c, t in strings.items()
        },
    )


def _line_blocks(stream: BinaryIO):
    """Blocks of about BLOCK_BYTES holding whole lines, each ending with a newline."""
    carry = b""
    while True:
        chunk = stream.read(BLOCK_BYTES)
        if not chunk:
            break
        buf = carry + chunk
        cut = buf.rfind(b"\n") + 1
        carry = buf[cut:]
        if cut:
            yield _normalise_newlines(buf[:cut])
    if carry.strip():
        yield _normalise_newlines(carry + b"\n")


def _normalise_newlines(buf: bytes) -> bytes:
    return buf.replace(b"\r\n", b"\n") if b"\r" in buf else buf


def _scan_block(
    buf: bytes, sep_byte: int, n_fields: int, string_cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray], int]:
    a = np.frombuffer(buf, dtype=np.uint8)
    boundary = a == _NEWLINE
    boundary |= a == sep_byte
    before = np.empty_like(boundary)
    before[0] = True
    before[1:] = boundary[:-1]
    if np.any(boundary & before):
        raise _NotSimple  # an empty field or a blank line
    boring = a == _ZERO
    boring &= before
    boring[:-1] &= boundary[1:]
    boring |= boundary
    inter = np.flatnonzero(~boring)

    run_first = np.ones(len(inter), dtype=bool)
    run_first[1:] = np.diff(inter) != 1
    run_rank = np.flatnonzero(run_first)  # index into inter of each run's first byte
    starts = inter[run_rank]
    lengths = np.diff(np.append(run_rank, len(inter)))

    field = _fields_before(starts, run_rank, np.arange(len(starts)))
    newlines = np.flatnonzero(a == _NEWLINE)
    next_starts = newlines + 1
    expected = n_fields * np.arange(1, len(newlines) + 1)
    found = _fields_before(
        next_starts,
        np.searchsorted(inter, next_starts),
        np.searchsorted(starts, next_starts),
    )
    if not np.array_equal(found, expected):
        raise _NotSimple  # a line with too few or too many fields
    lines, cols = np.divmod(field, n_fields)

    is_string = np.isin(cols, string_cols)
    strings = {
        int(c): _string_column(a, starts, lengths, lines, cols == c, len(newlines))
        for c in string_cols
    }
    numeric = ~is_string
    values = _parse_floats(a, starts[numeric], lengths[numeric])
    return lines[numeric], cols[numeric], values, strings, len(newlines)


def _fields_before(pos: np.ndarray, inter_before: np.ndarray, runs_before: np.ndarray):
    """Fields ending before `pos` (a field start), from the interesting bytes and runs before it."""
    twice_zeros = pos - inter_before - runs_before
    if np.any(twice_zeros % 2):
        raise _NotSimple
    return twice_zeros // 2 + runs_before


def _gather(a: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The fields as rows of a zero-padded uint8 matrix, without a Python loop."""
    width = max(int(lengths.max(initial=0)), 1)
    offsets = np.arange(width)
    index = np.minimum(starts[:, None] + offsets, len(a) - 1)
    return np.where(offsets < lengths[:, None], a[index], 0).astype(np.uint8)


def _as_bytes(text: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(text).view(f"S{text.shape[1]}").ravel()


def _parse_floats(a: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    if len(starts) == 0:
        return np.empty(0, dtype=np.float32)
    if lengths.max() > MAX_NUMBER_WIDTH:
        raise _NotSimple
    step = max(1, GATHER_CELLS // int(lengths.max()))
    if len(starts) <= step:
        return _parse_some_floats(a, starts, lengths)
    return np.concatenate(
        [
            _parse_some_floats(a, starts[i : i + step], lengths[i : i + step])
            for i in range(0, len(starts), step)
        ]
    )


def _parse_some_floats(a: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    text = _gather(a, starts, lengths)
    if lengths.max() <= MAX_INTEGER_WIDTH:
        digits = text.astype(np.int64) - _ZERO
        inside = np.arange(text.shape[1]) < lengths[:, None]
        if np.all((digits >= 0) & (digits <= 9) | ~inside):
            # Counts are whole numbers: Horner's rule over the digit columns is
            # several times faster than numpy's string-to-float conversion.
            value = np.zeros(len(starts), dtype=np.int64)
            for j in range(text.shape[1]):
                value = np.where(inside[:, j], value * 10 + digits[:, j], value)
            return value.astype(np.float32)
    try:
        return _as_bytes(text).astype(np.float32)
    except ValueError:
        raise _NotSimple from None


def _string_column(
    a: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    lines: np.ndarray,
    in_column: np.ndarray,
    n_lines: int,
) -> np.ndarray:
    """One string column; fields the scanner skipped as boring are the text '0'."""
    out = np.full(n_lines, "0", dtype=object)
    starts, lengths = starts[in_column], lengths[in_column]
    if len(starts) * int(lengths.max(initial=1)) <= GATHER_CELLS:
        texts = pd.Series(np.char.decode(_as_bytes(_gather(a, starts, lengths)), "utf-8"))
    else:  # a long name among many: a matrix as wide as it, one row per name, would not fit
        raw = a.tobytes()
        texts = pd.Series([raw[s : s + n].decode("utf-8") for s, n in zip(starts, lengths)])
    # R's write.table quotes names (never numbers), so only string columns need unquoting.
    quoted = texts.str.match(r'^".*"$')
    texts[quoted] = texts[quoted].str[1:-1]
    out[lines[in_column]] = texts.to_numpy(dtype=object)
    return out
