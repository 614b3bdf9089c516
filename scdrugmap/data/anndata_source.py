"""An AnnData held in memory as a data source, for scanpy users who never wrote a file.

Its counts go through `prepare_tables`, the checks and merge every input file gets
(count validation, unique names, gene identifier detection), so a data set prepared
from an AnnData is the data set an ingest of the same cells from a file would give.
Only what a data set needs is taken from the AnnData (counts, gene and cell names, and
a sample column when named); its matrix is never modified.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from scdrugmap.data.prepare import IngestOptions, PreparedDataset, prepare_tables
from scdrugmap.data.source import SourceTable, empty_obs
from scdrugmap.errors import InputError

COUNTS_FIX = (
    "give raw counts: name the layer that holds them with layer= (scanpy workflows often "
    "keep them in adata.layers['counts'])"
)


def prepare_anndata(
    adata,
    dataset_id: str,
    *,
    layer: str | None = None,
    gene_column: str | None = None,
    sample_column: str | None = None,
) -> PreparedDataset:
    """One data set of raw counts from `adata` (unlabelled), or a one-line InputError.

    Counts come from `adata.X`, or `adata.layers[layer]`; gene identifiers from
    `adata.var_names`, or the var column `gene_column`; every cell is of one sample
    unless `sample_column` names the obs column that says which.
    """
    table = anndata_table(adata, layer=layer, gene_column=gene_column, sample_column=sample_column)
    options = IngestOptions(dataset_id, sample_column=sample_column)
    return prepare_tables([table], options, counts_fix=COUNTS_FIX)


def anndata_table(
    adata,
    *,
    layer: str | None = None,
    gene_column: str | None = None,
    sample_column: str | None = None,
) -> SourceTable:
    """The AnnData's counts, names and (if named) sample column as a SourceTable, without
    copying a float32 CSR matrix. Its `path` names where the counts were taken from
    (`adata.X`, `adata.layers['counts']`), so errors point there."""
    _check_anndata(adata)
    where, matrix = _counts(adata, layer)
    barcodes = adata.obs_names.astype(str).str.strip().tolist()
    return SourceTable(
        path=Path(where),
        counts=sparse.csr_matrix(matrix, dtype=np.float32),
        genes=_genes(adata, gene_column),
        barcodes=barcodes,
        obs=_sample_obs(adata, sample_column, barcodes),
    )


def _check_anndata(adata) -> None:
    import anndata

    if not isinstance(adata, anndata.AnnData):
        raise InputError(
            f"expected an AnnData, got {type(adata).__name__}; read your cells with "
            "anndata.read_h5ad (or a scanpy reader) first"
        )
    if adata.isbacked:
        raise InputError("the AnnData is backed by a file; load it with adata.to_memory() first")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"the AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
            "give one that holds cells and genes"
        )


def _counts(adata, layer: str | None) -> tuple[str, object]:
    if layer is None:
        if adata.X is None:
            raise InputError("adata.X is None; name the layer that holds the counts with layer=")
        return "adata.X", adata.X
    if layer not in adata.layers:
        held = ", ".join(repr(k) for k in adata.layers) or "none"
        raise InputError(
            f"adata.layers has no {layer!r} (layers: {held}); name one of them, "
            "or layer=None for adata.X"
        )
    return f"adata.layers[{layer!r}]", adata.layers[layer]


def _genes(adata, gene_column: str | None) -> list[str]:
    if gene_column is None:
        return adata.var_names.astype(str).str.strip().tolist()
    if gene_column not in adata.var.columns:
        held = ", ".join(repr(str(c)) for c in adata.var.columns) or "none"
        raise InputError(
            f"adata.var has no column {gene_column!r} (columns: {held}); name one of them, "
            "or gene_column=None for adata.var_names"
        )
    return adata.var[gene_column].astype(str).str.strip().tolist()


def _sample_obs(adata, sample_column: str | None, barcodes: list[str]) -> pd.DataFrame:
    """Only the sample column travels: the data set needs nothing else of obs, and the
    caller keeps its own obs."""
    if sample_column is None:
        return empty_obs(barcodes)
    if sample_column not in adata.obs.columns:
        held = ", ".join(repr(str(c)) for c in adata.obs.columns) or "none"
        raise InputError(
            f"adata.obs has no column {sample_column!r} (columns: {held}); name one of them, "
            "or sample_column=None for one sample"
        )
    column = adata.obs[sample_column].to_numpy()
    return pd.DataFrame({sample_column: column}, index=pd.Index(barcodes, dtype=object))
