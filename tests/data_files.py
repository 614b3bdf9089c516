"""Writers of small input files in every format ingest reads, for round-trip tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
from scipy import io as spio
from scipy import sparse

from scdrugmap.data.readers import SourceTable


def random_counts(n_cells: int, n_genes: int, seed: int = 0) -> np.ndarray:
    """Sparse-ish integer counts with some multi-digit values (10, 100, ...) to parse."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.4, size=(n_cells, n_genes)).astype(np.float32)
    counts[rng.random(counts.shape) < 0.05] = rng.choice([10, 100, 105, 2000, 65536], 1)
    counts[:, 0] = 0  # an all-zero gene
    counts[0, :] = 0  # an all-zero cell
    counts[1, 1] = 1
    return counts


def symbols(n: int) -> list[str]:
    return [f"GENE{i}" for i in range(n)]


def cell_names(n: int) -> list[str]:
    """Barcode-like names, as droplet data has."""
    bases = np.array(list("ACGT"))
    rng = np.random.default_rng(n)
    return ["".join(bases[rng.integers(0, 4, 12)]) + f"-{i}" for i in range(n)]


def write_text(path: Path, text: str) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="") as handle:
        handle.write(text)
    return path


def write_genes_by_cells(
    path: Path,
    counts: np.ndarray,
    genes: list[str],
    barcodes: list[str],
    sep: str = "\t",
    first: str = "GENE",
) -> Path:
    frame = pd.DataFrame(counts.T, index=pd.Index(genes, name=first), columns=barcodes)
    return write_text(path, frame.to_csv(sep=sep, float_format="%.9g"))


def write_cells_by_genes(
    path: Path,
    counts: np.ndarray,
    genes: list[str],
    barcodes: list[str],
    obs: dict[str, list] | None = None,
    sep: str = "\t",
    first: str = "",
) -> Path:
    frame = pd.DataFrame(counts, index=pd.Index(barcodes, name=first), columns=genes)
    for i, (name, values) in enumerate((obs or {}).items()):
        frame.insert(i, name, values)
    return write_text(path, frame.to_csv(sep=sep, float_format="%.9g"))


def write_h5ad(
    path: Path,
    counts: np.ndarray,
    genes: list[str],
    barcodes: list[str],
    obs: dict[str, list] | None = None,
    x: np.ndarray | None = None,
) -> Path:
    """`x` given: .X holds it and the counts go to layers['counts'], as in processed files."""
    adata = anndata.AnnData(
        X=sparse.csr_matrix(counts if x is None else x),
        obs=pd.DataFrame(obs or {}, index=barcodes),
        var=pd.DataFrame(index=genes),
    )
    if x is not None:
        adata.layers["counts"] = sparse.csr_matrix(counts)
    adata.write_h5ad(path)
    return path


def write_10x_dir(
    folder: Path,
    counts: np.ndarray,
    ids: list[str],
    names: list[str],
    barcodes: list[str],
    types: list[str] | None = None,
    prefix: str = "",
) -> Path:
    """Cell Ranger v3 layout, gzipped: matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / "matrix.tmp.mtx"
    spio.mmwrite(plain, sparse.coo_matrix(counts.T.astype(np.int64)), field="integer")
    (folder / f"{prefix}matrix.mtx.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    types = types or ["Gene Expression"] * len(ids)
    features = "".join(f"{i}\t{n}\t{t}\n" for i, n, t in zip(ids, names, types))
    write_text(folder / f"{prefix}features.tsv.gz", features)
    write_text(folder / f"{prefix}barcodes.tsv.gz", "".join(f"{b}\n" for b in barcodes))
    return folder


def write_10x_h5(
    path: Path,
    counts: np.ndarray,
    ids: list[str],
    names: list[str],
    barcodes: list[str],
    version: int = 3,
    types: list[str] | None = None,
) -> Path:
    """Cell Ranger HDF5: v3 `matrix/` with `features/`, or v2 `<genome>/` with genes."""
    csc = sparse.csc_matrix(counts.T.astype(np.int32))  # genes x cells, compressed by cell
    with h5py.File(path, "w") as h5:
        group = h5.create_group("matrix" if version == 3 else "GRCh38")
        group["data"] = csc.data
        group["indices"] = csc.indices.astype(np.int64)
        group["indptr"] = csc.indptr.astype(np.int64)
        group["shape"] = np.array(csc.shape, dtype=np.int32)
        group["barcodes"] = np.array(barcodes, dtype="S")
        if version == 3:
            features = group.create_group("features")
            features["id"] = np.array(ids, dtype="S")
            features["name"] = np.array(names, dtype="S")
            types = types or ["Gene Expression"] * len(ids)
            features["feature_type"] = np.array(types, dtype="S")
            features["genome"] = np.array(["GRCh38"] * len(ids), dtype="S")
        else:
            group["genes"] = np.array(ids, dtype="S")
            group["gene_names"] = np.array(names, dtype="S")
    return path


def write_sample(path: Path, counts: sparse.spmatrix, genes: list[str], prefix: str) -> Path:
    """One sample's cells (sparse counts) as a genes x cells table, barcodes `prefix0`, ..."""
    barcodes = [f"{prefix}{i}" for i in range(counts.shape[0])]
    return write_genes_by_cells(path, counts.toarray().astype(np.int64), genes, barcodes)


def top_expressed_genes(table: SourceTable, n: int) -> list[str]:
    """The `n` genes with the most counts in the first 2,000 cells (all 1,500 of tests/data's
    PC9 control): a panel of real symbols for models whose published panel is not among the
    vocabularies in tests/data."""
    totals = np.asarray(table.counts[:2000].sum(0)).ravel()
    return [table.genes[i] for i in np.argsort(-totals, kind="stable")[:n]]
