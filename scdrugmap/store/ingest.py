"""Adding a prepared data set to the store, all or nothing.

The counts are written to a staging directory first; the catalog rows are
inserted in one transaction; the staged directory is renamed into place just
before that transaction commits. Any failure rolls the catalog back and
removes the staged files, and a replaced data set is only deleted after the
new one is committed, so an interrupted ingest never leaves half a data set.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from scdrugmap.data.prepare import PreparedDataset
from scdrugmap.errors import InputError
from scdrugmap.store.catalog import connect
from scdrugmap.store.dataset_zarr import write_dataset_zarr
from scdrugmap.store.staging import remove_stale, staging_path

# Where a data set is assembled before it is renamed into place (store/staging.py).
INCOMING = ".incoming-"

CELL_COLUMNS = ["barcode", "sample", "label", "n_counts", "n_genes", "source_file"]


def _uns(metadata: dict) -> dict:
    """AnnData cannot store None; drop unset fields."""
    return {
        k: (_uns(v) if isinstance(v, dict) else v) for k, v in metadata.items() if v is not None
    }


def _dataset_row(prepared: PreparedDataset) -> dict:
    meta = prepared.metadata
    labels = prepared.obs["label"].value_counts()
    gene_ids = dict(meta.get("gene_ids", {}))
    dominant = gene_ids.pop("dominant", None)
    return {
        "dataset_id": prepared.dataset_id,
        "n_cells": prepared.counts.shape[0],
        "n_genes": prepared.counts.shape[1],
        "n_samples": prepared.obs["sample"].nunique(),
        "n_sensitive": int(labels.get("sensitive", 0)),
        "n_resistant": int(labels.get("resistant", 0)),
        "n_unknown": int(labels.get("unknown", 0)),
        "drug": meta.get("drug"),
        "cancer_type": meta.get("cancer_type"),
        "tissue": meta.get("tissue"),
        "therapy": meta.get("therapy"),
        "regimen": meta.get("regimen"),
        "species": meta.get("species"),
        "value_type": meta.get("values", "counts"),
        "gene_id_type": dominant,
        "gene_id_counts": {k: int(v) for k, v in gene_ids.items()},
        "meta": {str(k): str(v) for k, v in (meta.get("meta") or {}).items()},
        "source_files": list(meta.get("source_files", [])),
        "barcode_prefixed": bool(meta.get("barcode_prefixed", False)),
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
    }


def dataset_exists(catalog: Path, dataset_id: str) -> bool:
    if not catalog.exists():
        return False
    with connect(catalog) as con:
        found = con.execute(
            "SELECT count(*) FROM datasets WHERE dataset_id = ?", [dataset_id]
        ).fetchone()
    return bool(found[0])


def add_dataset(store_path: Path, prepared: PreparedDataset, *, replace: bool) -> list[Path]:
    """Write the data set; return the staging folders of killed ingests it removed."""
    catalog = store_path / "catalog.duckdb"
    dataset_id = prepared.dataset_id
    if dataset_exists(catalog, dataset_id) and not replace:
        raise InputError(
            f"data set {dataset_id!r} is already in the store; pass --replace to overwrite it "
            "or choose another --dataset"
        )
    datasets_dir = store_path / "datasets"
    final = datasets_dir / f"{dataset_id}.zarr"
    removed = remove_stale(datasets_dir, INCOMING)
    staged = staging_path(datasets_dir, INCOMING, dataset_id, ".zarr")
    retired = datasets_dir / f".replaced-{staged.name.removeprefix(INCOMING)}"
    datasets_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_dataset_zarr(
            staged, prepared.counts, prepared.obs, prepared.var, _uns(prepared.metadata)
        )
        cells = prepared.obs[CELL_COLUMNS].reset_index(drop=True)
        cells.insert(0, "cell_index", range(len(cells)))
        cells.insert(0, "dataset_id", dataset_id)
        cells["content_hash"] = prepared.content_hashes
        row = pd.DataFrame([_dataset_row(prepared)])
        with connect(catalog, write=True) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                stale_keys = _remove_rows(con, dataset_id)
                con.register("incoming_dataset", row)
                con.register("incoming_cells", cells)
                con.execute("INSERT INTO datasets BY NAME SELECT * FROM incoming_dataset")
                con.execute("INSERT INTO cells BY NAME SELECT * FROM incoming_cells")
                if final.exists():
                    os.replace(final, retired)
                os.replace(staged, final)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                if retired.exists():
                    if final.exists():
                        shutil.rmtree(final)
                    os.replace(retired, final)
                raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)
    for key in stale_keys:
        shutil.rmtree(store_path / "embeddings" / key / f"{dataset_id}.zarr", ignore_errors=True)
    return removed


def _remove_rows(con, dataset_id: str) -> list[str]:
    """Delete a replaced data set's rows, returning embedding keys now stale."""
    keys = [
        k
        for (k,) in con.execute(
            "SELECT key FROM embeddings WHERE dataset_id = ?", [dataset_id]
        ).fetchall()
    ]
    for table in ("cells", "embeddings", "datasets"):
        con.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [dataset_id])
    return keys
