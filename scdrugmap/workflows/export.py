"""Export: a data set as .h5ad with an embedding in `.obsm`, for scanpy users."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.errors import InputError
from scdrugmap.store.storage import Storage

# A data set's descriptions that an exported AnnData carries on every cell, for scanpy
# users who concatenate several exports.
DATASET_METADATA = ("drug", "cancer_type", "tissue", "therapy", "regimen", "species")


def export(store: Storage, embedding: str, dataset_id: str, out: str | os.PathLike) -> Path:
    """Write an .h5ad: counts in X, cell metadata in obs, the embedding in obsm."""
    import anndata as ad

    reader = store.reader(dataset_id)
    array = store.embedding_array(embedding, dataset_id)
    obs = reader.read_obs()
    catalog_cells = store.query(
        "SELECT barcode, sample, label, n_counts, n_genes FROM cells "
        "WHERE dataset_id = ? ORDER BY cell_index",
        [dataset_id],
    )
    # Unnamed, so obs.reset_index() gives an `index` column beside `barcode`.
    obs.index = pd.Index(catalog_cells["barcode"].astype(str).to_numpy(), name=None)
    obs["dataset_id"] = dataset_id
    metadata = store.dataset(dataset_id)
    for column in DATASET_METADATA:
        if metadata.get(column) is not None and metadata[column] == metadata[column]:
            obs[column] = pd.Categorical([metadata[column]] * len(obs))
    obs[f"coverage_{embedding}"] = array.read_coverage()
    adata = ad.AnnData(
        X=reader.read_rows(0, reader.n_cells),
        obs=obs,
        var=reader.var,
        obsm={f"X_{embedding}": array.read_all().astype(np.float32)},
        uns={"scdrugmap": {"embedding": embedding, **_plain(array.attrs)}},
    )
    out = Path(out)
    if out.suffix != ".h5ad":
        raise InputError(f"{out}: export writes .h5ad files; give a path ending in .h5ad")
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    return out


def _plain(attrs: dict) -> dict:
    """Provenance attributes as strings and numbers that h5ad can hold."""
    return {k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in attrs.items()}
