"""A data set's raw counts as an AnnData zarr store, read back chunk by chunk.

The store keeps counts as AnnData's on-disk CSR encoding (zarr v3, data and
indices chunked along the non-zeros), so `anndata.read_zarr` opens it and the
embedders can stream any row range without loading the whole matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import zarr
from scipy import sparse

NNZ_CHUNK = 1 << 20


def write_dataset_zarr(
    path: Path, counts: sparse.csr_matrix, obs: pd.DataFrame, var: pd.DataFrame, uns: dict
) -> None:
    """Write a complete AnnData zarr at `path` (which must not exist yet)."""
    with quiet_zarr():
        _write(path, counts, obs, var, uns)


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """zarr-python announces future format changes on every write; users cannot act on them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*autosharding.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
        yield


def _write(
    path: Path, counts: sparse.csr_matrix, obs: pd.DataFrame, var: pd.DataFrame, uns: dict
) -> None:
    group = zarr.open_group(path, mode="w-", zarr_format=3)
    group.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    chunk = (max(1, min(NNZ_CHUNK, counts.nnz)),)
    ad.io.write_elem(group, "X", counts, dataset_kwargs={"chunks": chunk})
    for name, element in (("obs", obs), ("var", var), ("uns", uns)):
        ad.io.write_elem(group, name, element)
    for name in ("obsm", "varm", "obsp", "varp", "layers"):
        ad.io.write_elem(group, name, {})


@dataclass
class DatasetReader:
    """Row-range access to a stored data set's counts."""

    path: Path

    @cached_property
    def _x(self) -> zarr.Group:
        return zarr.open_group(self.path, mode="r")["X"]

    @cached_property
    def _data(self) -> zarr.Array:
        return self._x["data"]

    @cached_property
    def _indices(self) -> zarr.Array:
        return self._x["indices"]

    @cached_property
    def indptr(self) -> np.ndarray:
        return self._x["indptr"][:].astype(np.int64)

    @property
    def n_cells(self) -> int:
        return len(self.indptr) - 1

    @cached_property
    def var(self) -> pd.DataFrame:
        return ad.io.read_elem(zarr.open_group(self.path, mode="r")["var"])

    @property
    def n_genes(self) -> int:
        return len(self.var)

    @cached_property
    def gene_ids(self) -> list[str]:
        """Normalised gene identifiers (Ensembl versions stripped), in column order."""
        return [str(g) for g in self.var["gene_id"]]

    def read_obs(self) -> pd.DataFrame:
        return ad.io.read_elem(zarr.open_group(self.path, mode="r")["obs"])

    def read_rows(self, start: int, stop: int) -> sparse.csr_matrix:
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        data = self._data[lo:hi].astype(np.float32, copy=False)
        indices = self._indices[lo:hi]
        indptr = self.indptr[start : stop + 1] - lo
        return sparse.csr_matrix((data, indices, indptr), shape=(stop - start, self.n_genes))

    def read_cells(self, rows: np.ndarray) -> sparse.csr_matrix:
        """Counts of the given sorted rows, read one run of consecutive rows at a time."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return sparse.csr_matrix((0, self.n_genes), dtype=np.float32)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        runs = np.split(rows, breaks)
        return sparse.vstack([self.read_rows(int(r[0]), int(r[-1]) + 1) for r in runs], "csr")

    def read_samples(self) -> np.ndarray:
        """Each cell's sample label, in cell order (the obs column alone, not the whole table)."""
        column = zarr.open_group(self.path, mode="r")["obs"]["sample"]
        return np.asarray(ad.io.read_elem(column), dtype=object)

    def iter_chunks(self, chunk_size: int) -> Iterator[tuple[int, int, sparse.csr_matrix]]:
        for start in range(0, self.n_cells, chunk_size):
            stop = min(start + chunk_size, self.n_cells)
            yield start, stop, self.read_rows(start, stop)
