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
from itertools import pairwise
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
        rows are copied from a memory map of it straight into the caller's
        array: one copy from the page cache instead of zarr's read-then-copy.
        """
        codecs = self._x.metadata.to_dict().get("codecs", [])
        little = self._x.dtype.byteorder in "<=|"
        return little and list(codecs) == [{"name": "bytes", "configuration": {"endian": "little"}}]

    def _chunk_file(self, chunk: int) -> Path:
        return self.path / "X" / self._x.metadata.encode_chunk_key((chunk, 0))

    def _mapped_chunk(self, chunk: int) -> np.ndarray:
        start, stop = self.chunk_bounds(chunk)
        return np.memmap(
            self._chunk_file(chunk),
            dtype=self._x.dtype,
            mode="r",
            shape=(stop - start, self.shape[1]),
        )

    def _read_span(self, first: int, stop: int, out: np.ndarray) -> None:
        """Rows first..stop-1 into `out`, chunk by chunk."""
        if not self._raw_chunks:
            out[:] = self._x[first:stop]
            return
        position = first
        while position < stop:
            chunk = position // self.chunk_size
            chunk_start, chunk_stop = self.chunk_bounds(chunk)
            end = min(stop, chunk_stop)
            mapped = self._mapped_chunk(chunk)
            out[position - first : end - first] = mapped[position - chunk_start : end - chunk_start]
            del mapped
            position = end

    def _gather_raw(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Scattered rows copied out of memory-mapped chunk files, each chunk mapped once
        for all its rows and gathered straight into `out`: indexing the map made a
        temporary copy of the rows first, which doubled the bytes written (with
        `mode="clip"`, `take` writes into `out` unbuffered; the rows are in range)."""
        chunk_of = rows // self.chunk_size
        breaks = np.flatnonzero(np.diff(chunk_of)) + 1
        for lo, hi in pairwise(np.r_[0, breaks, len(rows)]):
            chunk = int(chunk_of[lo])
            mapped = self._mapped_chunk(chunk)
            local = rows[lo:hi] - self.chunk_bounds(chunk)[0]
            if out.dtype == mapped.dtype:
                np.take(mapped, local, axis=0, out=out[lo:hi], mode="clip")
            else:
                out[lo:hi] = mapped[local]
            del mapped

    def read_rows(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows at sorted positions, into `out` (float32 unless given).

        Contiguous stretches are copied straight across; scattered rows are
        gathered chunk by chunk; without raw chunks, zarr reads spans of
        bounded size.
        """
        dim = self.shape[1]
        if out is None:
            out = np.empty((len(rows), dim), dtype=np.float32)
        span_rows = max(self.chunk_size, READ_BLOCK_BYTES // (dim * self._x.dtype.itemsize))
        lo = 0
        while lo < len(rows):
            first = int(rows[lo])
            hi = int(np.searchsorted(rows, first + span_rows))
            last = int(rows[hi - 1])
            if last - first + 1 == hi - lo:
                self._read_span(first, last + 1, out[lo:hi])
            elif self._raw_chunks:
                self._gather_raw(rows[lo:hi], out[lo:hi])
            else:
                out[lo:hi] = self._x[first : last + 1][rows[lo:hi] - first]
            lo = hi
        return out
