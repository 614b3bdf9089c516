"""One embedding of one data set: a zarr v3 array chunked along cells.

Layout of `embeddings/<key>/<dataset_id>.zarr`:
`X` (n_cells, dim) float32 or float16, one zarr chunk per processing chunk;
`coverage` (n_cells,) float32, the fraction of each cell's expressed genes the
model knows; `done` (n_chunks,) uint8 with one zarr chunk per element, set only
after that chunk's rows are written, so a rerun after a crash knows exactly
which chunks to redo and concurrent writers never touch the same file.
Provenance lives in the group's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import zarr

from scdrugmap.store.dataset_zarr import quiet_zarr

READ_BLOCK_BYTES = 256 << 20


@dataclass
class EmbeddingArray:
    path: Path

    @classmethod
    def create(
        cls, path: Path, *, n_cells: int, dim: int, chunk_size: int, dtype: str, attrs: dict
    ) -> EmbeddingArray:
        with quiet_zarr():
            cls._create(path, n_cells, dim, chunk_size, dtype, attrs)
        return cls(path)

    @staticmethod
    def _create(
        path: Path, n_cells: int, dim: int, chunk_size: int, dtype: str, attrs: dict
    ) -> None:
        group = zarr.open_group(path, mode="w", zarr_format=3)
        rows = max(1, min(chunk_size, n_cells))
        group.create_array(
            "X", shape=(n_cells, dim), chunks=(rows, dim), dtype=dtype, compressors=None
        )
        group.create_array("coverage", shape=(n_cells,), chunks=(rows,), dtype="float32")
        n_chunks = -(-n_cells // rows) if n_cells else 0
        group.create_array(
            "done", shape=(n_chunks,), chunks=(1,), dtype="uint8", fill_value=0, compressors=None
        )
        group.attrs.update({**attrs, "chunk_size": rows})

    @cached_property
    def _group(self) -> zarr.Group:
        return zarr.open_group(self.path, mode="r+")

    @cached_property
    def _x(self) -> zarr.Array:
        return self._group["X"]

    @cached_property
    def _coverage(self) -> zarr.Array:
        return self._group["coverage"]

    @cached_property
    def _done(self) -> zarr.Array:
        return self._group["done"]

    @property
    def attrs(self) -> dict:
        return dict(self._group.attrs)

    @cached_property
    def shape(self) -> tuple[int, int]:
        return tuple(self._x.shape)

    @cached_property
    def chunk_size(self) -> int:
        return int(self._x.chunks[0])

    @cached_property
    def n_chunks(self) -> int:
        return int(self._done.shape[0])

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.shape[0])

    def done_chunks(self) -> np.ndarray:
        return self._done[:].astype(bool)

    def write_chunk(self, chunk: int, values: np.ndarray, coverage: np.ndarray) -> None:
        start, stop = self.chunk_bounds(chunk)
        if values.shape != (stop - start, self.shape[1]):
            raise ValueError(
                f"chunk {chunk}: got {values.shape}, need {(stop - start, self.shape[1])}"
            )
        self._x[start:stop] = values.astype(self._x.dtype, copy=False)
        self._coverage[start:stop] = coverage.astype(np.float32, copy=False)
        self._done[chunk] = 1

    def read_all(self) -> np.ndarray:
        return self._x[:]

    def read_coverage(self) -> np.ndarray:
        return self._coverage[:]

    @cached_property
    def _raw_chunks(self) -> bool:
        """Whether chunks are plain little-endian bytes (no compression).

        Then a chunk file is, by the zarr v3 spec, the rows in C order, and
        rows can be read from it straight into the caller's array: one copy
        from the page cache instead of zarr's decode-then-copy.
        """
        codecs = self._x.metadata.to_dict().get("codecs", [])
        little = self._x.dtype.byteorder in "<=|"
        return little and codecs == [{"name": "bytes", "configuration": {"endian": "little"}}]

    def _chunk_file(self, chunk: int) -> Path:
        return self.path / "X" / self._x.metadata.encode_chunk_key((chunk, 0))

    def _read_span(self, first: int, stop: int, out: np.ndarray) -> None:
        """Rows first..stop-1 into `out` (same dtype as the array, C-contiguous)."""
        if not self._raw_chunks:
            out[:] = self._x[first:stop]
            return
        row_bytes = self.shape[1] * self._x.dtype.itemsize
        view = memoryview(out.reshape(-1).view(np.uint8))
        position = first
        while position < stop:
            chunk = position // self.chunk_size
            chunk_start, chunk_stop = self.chunk_bounds(chunk)
            end = min(stop, chunk_stop)
            with self._chunk_file(chunk).open("rb") as handle:
                handle.seek((position - chunk_start) * row_bytes)
                offset = (position - first) * row_bytes
                handle.readinto(view[offset : offset + (end - position) * row_bytes])
            position = end

    def read_rows(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows at sorted positions, in reads of bounded size.

        A contiguous stretch of rows is read directly into `out`; scattered
        rows are taken from bounded spans, each touched chunk read once.
        """
        dim, dtype = self.shape[1], self._x.dtype
        if out is None:
            out = np.empty((len(rows), dim), dtype=np.float32)
        if len(rows) == 0:
            return out
        row_bytes = dim * dtype.itemsize
        span_rows = max(self.chunk_size, READ_BLOCK_BYTES // row_bytes)
        direct = out.dtype == dtype and out.flags.c_contiguous
        lo = 0
        while lo < len(rows):
            first = int(rows[lo])
            hi = int(np.searchsorted(rows, first + span_rows))
            last = int(rows[hi - 1])
            if last - first + 1 == hi - lo and direct:
                self._read_span(first, last + 1, out[lo:hi])
            else:
                span = np.empty((last - first + 1, dim), dtype=dtype)
                self._read_span(first, last + 1, span)
                out[lo:hi] = span[rows[lo:hi] - first]
            lo = hi
        return out
