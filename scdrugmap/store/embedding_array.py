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

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows at sorted positions, in reads of bounded size.

        A contiguous stretch of rows is read directly; scattered rows are taken
        from blocks of whole chunks, each touched chunk read once.
        """
        x = self._x
        out = np.empty((len(rows), x.shape[1]), dtype=np.float32)
        if len(rows) == 0:
            return out
        row_bytes = x.shape[1] * x.dtype.itemsize
        block_rows = max(
            self.chunk_size, READ_BLOCK_BYTES // row_bytes // self.chunk_size * self.chunk_size
        )
        lo = 0
        while lo < len(rows):
            block_start = rows[lo] // self.chunk_size * self.chunk_size
            block_stop = min(block_start + block_rows, self.shape[0])
            hi = int(np.searchsorted(rows, block_stop))
            first, last = int(rows[lo]), int(rows[hi - 1])
            if last - first + 1 == hi - lo:
                out[lo:hi] = x[first : last + 1]
            else:
                out[lo:hi] = x[first : last + 1][rows[lo:hi] - first]
            lo = hi
        return out
