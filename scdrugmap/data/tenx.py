"""10x Genomics Cell Ranger output: the matrix directory and the HDF5 file.

Both store a genes x cells matrix column-compressed by cell, which is the
cells x genes CSR matrix we want without a copy. Gene names: symbols, unless
the symbols repeat (they do in every human reference, e.g. TBCE), then the
Ensembl IDs, because a data set's gene names must be unique. Only 'Gene
Expression' features are kept when the file says which features are which
(antibody capture and CRISPR guides are not genes).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import io as spio
from scipy import sparse

from scdrugmap.data.source import SourceTable, empty_obs, file_error

GENE_EXPRESSION = "Gene Expression"


def read_10x_dir(path: Path) -> SourceTable:
    """A directory with matrix.mtx, features.tsv (v3) or genes.tsv (v2) and barcodes.tsv.

    Files may be gzipped and may share a prefix (GEO's `GSM..._matrix.mtx.gz`).
    """
    matrix_file = _one_file(path, "matrix.mtx")
    features_file = _one_file(path, "features.tsv", "genes.tsv")
    barcodes_file = _one_file(path, "barcodes.tsv")
    features = pd.read_csv(features_file, sep="\t", header=None, dtype=str, na_filter=False)
    barcodes = pd.read_csv(barcodes_file, sep="\t", header=None, dtype=str, na_filter=False)
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


def read_10x_h5(path: Path) -> SourceTable:
    """Cell Ranger v3+ (`matrix/...`, `features/...`) or v2 (`<genome>/...`) HDF5."""
    with h5py.File(path, "r") as h5:
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
