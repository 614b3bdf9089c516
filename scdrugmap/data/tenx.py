"""10x Genomics Cell Ranger output: the matrix directory and the HDF5 file.

Both store a genes x cells matrix column-compressed by cell, which is the
cells x genes CSR matrix we want without a copy. Gene names: symbols, unless
the symbols repeat (they do in every human reference, e.g. TBCE), then the
Ensembl IDs, because a data set's gene names must be unique. Only 'Gene
Expression' features are kept when the file says which features are which
(antibody capture and CRISPR guides are not genes).

Before anything is allocated, the memory the matrix will take is judged from
what the file declares (an HDF5 file's dataset shapes, matrix.mtx's size line),
because a file of unwritten HDF5 chunks or a one-line .mtx can declare billions
of entries in a few kilobytes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import io as spio
from scipy import sparse

from scdrugmap.data.delimited import open_binary
from scdrugmap.data.source import (
    SourceTable,
    as_mib,
    empty_obs,
    file_error,
    limit_error,
    memory_problem,
    read_limits,
)

GENE_EXPRESSION = "Gene Expression"
# What a string takes once read: a Python object of at least this many bytes.
STRING_BYTES = 64
# matrix.mtx entries once read: a row, a column and a value of 8 bytes each.
MTX_ENTRY_BYTES = 24
# Deflate packs at most about 1,000 to 1; an HDF5 file declaring more than that (and more
# than HDF5_RATIO_FLOOR in all) holds unwritten chunks, which read as zeros: a bomb.
MAX_HDF5_RATIO = 1000
HDF5_RATIO_FLOOR = 256 * 1024**2


def read_10x_dir(path: Path) -> SourceTable:
    """A directory with matrix.mtx, features.tsv (v3) or genes.tsv (v2) and barcodes.tsv.

    Files may be gzipped and may share a prefix (GEO's `GSM..._matrix.mtx.gz`).
    """
    matrix_file = _one_file(path, "matrix.mtx")
    features_file = _one_file(path, "features.tsv", "genes.tsv")
    barcodes_file = _one_file(path, "barcodes.tsv")
    _check_mtx_size(matrix_file)
    features, barcodes = _read_names(features_file), _read_names(barcodes_file)
    matrix = spio.mmread(matrix_file)
    if matrix.shape != (len(features), len(barcodes)):
        raise file_error(
            path,
            f"matrix.mtx is {matrix.shape[0]} x {matrix.shape[1]} but there are "
            f"{len(features)} features and {len(barcodes)} barcodes",
            "use the three files of one Cell Ranger run",
        )
    counts = sparse.csr_matrix(matrix.T, dtype=np.float32)
    ids = features[0].to_numpy(dtype=object)
    names = features[1].to_numpy(dtype=object) if features.shape[1] > 1 else ids
    types = features[2].to_numpy(dtype=object) if features.shape[1] > 2 else None
    return _table(path, counts, ids, names, types, barcodes[0].to_numpy(dtype=object))


def _read_names(path: Path) -> pd.DataFrame:
    with open_binary(path) as stream:
        return pd.read_csv(stream, sep="\t", header=None, dtype=str, na_filter=False)


def _check_mtx_size(path: Path) -> None:
    """Refuse a matrix.mtx whose size line declares more entries than memory allows."""
    with open_binary(path) as stream:
        line = stream.readline()
        while line.startswith(b"%"):
            line = stream.readline()
    sizes = line.split()
    if len(sizes) != 3 or not all(s.isdigit() for s in sizes):
        return  # not a coordinate size line: scipy says what is wrong with it
    n_rows, n_columns, n_entries = (int(s) for s in sizes)
    limits = read_limits()
    problem = memory_problem(n_entries * MTX_ENTRY_BYTES + 8 * (n_columns + 1), limits)
    if problem:
        raise limit_error(
            path,
            f"it declares {n_entries:,} entries ({n_rows:,} x {n_columns:,}): {problem}",
            limits,
            "max_unpacked_bytes",
        )


def hdf5_bytes(h5: h5py.File) -> tuple[int, int]:
    """(the memory an HDF5 file's datasets take once read, from their shapes alone; the
    bytes the file stores for them)."""
    total = stored = 0

    def add(name: str, item) -> None:
        nonlocal total, stored
        if isinstance(item, h5py.Dataset):
            kind = item.dtype.kind
            each = item.dtype.itemsize + STRING_BYTES if kind in "OSUV" else item.dtype.itemsize
            total += (item.size or 0) * each
            stored += item.id.get_storage_size()

    h5.visititems(add)
    return total, stored


def check_hdf5_size(path: Path, h5: h5py.File) -> None:
    """Refuse an HDF5 file (.h5ad, 10x .h5) whose datasets need more memory than allowed,
    or that declares far more data than it stores, before any of it is read."""
    limits = read_limits()
    needed, stored = hdf5_bytes(h5)
    problem = memory_problem(needed, limits)
    if problem is None and needed > max(HDF5_RATIO_FLOOR, MAX_HDF5_RATIO * stored):
        raise file_error(
            path,
            f"its arrays need {as_mib(needed)} once read but it stores only {as_mib(stored)} "
            "of them (chunks never written, which read as zeros)",
            "write the file again with its data in full",
        )
    if problem:
        raise limit_error(path, problem, limits, "max_unpacked_bytes")


def read_10x_h5(path: Path) -> SourceTable:
    """Cell Ranger v3+ (`matrix/...`, `features/...`) or v2 (`<genome>/...`) HDF5."""
    with h5py.File(path, "r") as h5:
        check_hdf5_size(path, h5)
        if "matrix" in h5:
            group = h5["matrix"]
            features = group["features"]
            ids, names = _text(features["id"]), _text(features["name"])
            types = _text(features["feature_type"]) if "feature_type" in features else None
        else:
            genomes = [k for k in h5 if isinstance(h5[k], h5py.Group)]
            if len(genomes) != 1:
                raise file_error(
                    path,
                    f"expected one genome group in a Cell Ranger v2 file, found {genomes}",
                    "give a single-genome file, or split it with Cell Ranger",
                )
            group = h5[genomes[0]]
            ids, names, types = _text(group["genes"]), _text(group["gene_names"]), None
        n_genes, n_cells = (int(n) for n in group["shape"][:])
        counts = sparse.csr_matrix(
            (group["data"][:].astype(np.float32), group["indices"][:], group["indptr"][:]),
            shape=(n_cells, n_genes),
        )
        barcodes = _text(group["barcodes"])
    return _table(path, counts, ids, names, types, barcodes)


def _text(dataset: h5py.Dataset) -> np.ndarray:
    return np.char.decode(dataset[:].astype(bytes), "utf-8").astype(object)


def _one_file(directory: Path, *stems: str) -> Path:
    found = sorted(
        p
        for stem in stems
        for suffix in ("", ".gz")
        for p in directory.glob(f"*{stem}{suffix}")
        if p.is_file()
    )
    if len(found) != 1:
        wanted = " or ".join(f"{s}[.gz]" for s in stems)
        problem = "no " + wanted if not found else f"several {wanted}: {[p.name for p in found]}"
        raise file_error(directory, problem, "give a 10x matrix directory holding one of each file")
    return found[0]


def _table(
    path: Path,
    counts: sparse.csr_matrix,
    ids: np.ndarray,
    names: np.ndarray,
    types: np.ndarray | None,
    barcodes: np.ndarray,
) -> SourceTable:
    if types is not None and np.any(types == GENE_EXPRESSION):
        keep = np.flatnonzero(types == GENE_EXPRESSION)
        counts, ids, names = counts[:, keep], ids[keep], names[keep]
    names = pd.Series(names, dtype=object).str.strip()
    genes = names if not names.duplicated().any() else pd.Series(ids, dtype=object).str.strip()
    barcode_list = pd.Series(barcodes, dtype=object).str.strip().tolist()
    return SourceTable(
        path=path,
        counts=sparse.csr_matrix(counts, dtype=np.float32),
        genes=genes.tolist(),
        barcodes=barcode_list,
        obs=empty_obs(barcode_list),
    )
