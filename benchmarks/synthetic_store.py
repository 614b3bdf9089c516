"""Large synthetic stores for the benchmarks, built directly (not through ingest).

Benchmarks measure reading, evaluating and embedding, not parsing text files,
so they write the catalog rows and zarr arrays the store would hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from scdrugmap import Store
from scdrugmap.provenance import utc_now
from scdrugmap.store.catalog import connect
from scdrugmap.store.dataset_zarr import write_dataset_zarr
from scdrugmap.store.embedding_array import EmbeddingArray


def _register(store: Store, dataset_id: str, n_cells: int, n_genes: int, rng) -> pd.DataFrame:
    samples = np.array([f"s{i}" for i in range(8)])[rng.integers(0, 8, n_cells)]
    labels = np.where(np.isin(samples, ["s0", "s1", "s2", "s3"]), "sensitive", "resistant")
    cells = pd.DataFrame(
        {
            "dataset_id": dataset_id,
            "cell_index": np.arange(n_cells),
            "barcode": [f"{dataset_id}-{i}" for i in range(n_cells)],
            "sample": samples,
            "label": labels,
            "n_counts": 1000.0,
            "n_genes": 100,
            "source_file": "synthetic",
        }
    )
    row = pd.DataFrame(
        [
            {
                "dataset_id": dataset_id,
                "n_cells": n_cells,
                "n_genes": n_genes,
                "n_samples": 8,
                "n_sensitive": int((labels == "sensitive").sum()),
                "n_resistant": int((labels == "resistant").sum()),
                "n_unknown": 0,
                "drug": "drug" + dataset_id[-1],
                "species": "human",
                "value_type": "counts",
                "created_at": utc_now(),
            }
        ]
    )
    with connect(store.catalog_path, write=True) as con:
        con.register("d", row)
        con.register("c", cells)
        con.execute("INSERT INTO datasets BY NAME SELECT * FROM d")
        con.execute("INSERT INTO cells BY NAME SELECT * FROM c")
    return cells


def embedding_store(
    root: Path, n_datasets: int, cells_per_dataset: int, dim: int, chunk_size: int = 20_000
) -> Store:
    """Catalogued cells plus a complete embedding `bench` of each data set."""
    store = Store(root)
    rng = np.random.default_rng(0)
    for d in range(n_datasets):
        dataset_id = f"ds{d}"
        cells = _register(store, dataset_id, cells_per_dataset, 0, rng)
        array = EmbeddingArray.create(
            store.embedding_path("bench", dataset_id),
            n_cells=cells_per_dataset,
            dim=dim,
            chunk_size=chunk_size,
            dtype="float32",
            attrs={"key": "bench", "model": "synthetic", "settings_hash": "synthetic"},
        )
        signal = (cells["label"] == "sensitive").to_numpy(dtype=np.float32)[:, None]
        for chunk in range(array.n_chunks):
            start, stop = array.chunk_bounds(chunk)
            values = rng.standard_normal((stop - start, dim), dtype=np.float32)
            values[:, :8] += 0.5 * signal[start:stop]
            array.write_chunk(chunk, values, np.ones(stop - start, dtype=np.float32))
    return store


def counts_store(root: Path, n_cells: int, n_genes: int = 2000, density: float = 0.1) -> Store:
    """One data set of sparse negative-binomial-like counts, written in one go."""
    store = Store(root)
    rng = np.random.default_rng(1)
    counts = sparse.random(
        n_cells,
        n_genes,
        density=density,
        format="csr",
        dtype=np.float32,
        random_state=rng,
        data_rvs=lambda k: rng.geometric(0.3, size=k).astype(np.float32),
    )
    genes = [f"GENE{i:05d}" for i in range(n_genes)]
    var = pd.DataFrame({"gene_id": genes, "id_type": "symbol"}, index=genes)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])
    store.path.mkdir(parents=True, exist_ok=True)
    write_dataset_zarr(store.path / "datasets" / "big.zarr", counts, obs, var, {})
    _register(store, "big", n_cells, n_genes, rng)
    return store
