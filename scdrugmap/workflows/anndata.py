"""embed_anndata: a scanpy user's AnnData in, the same AnnData back with a model's
embedding in `.obsm`, and no store to make or keep.

It goes through the store path itself rather than beside it: the data layer prepares
the AnnData's counts exactly as it prepares a file's (`data.anndata_source`: the same
count validation, gene identifier detection and merge, read from memory, so no .h5ad
is written and read back), the prepared data set is added to a temporary store in a
temporary directory (under $TMPDIR), and the `embed` workflow embeds it (the same
vocabulary coverage check, tokenisation, chunked streaming and failure records). The
rows are read back and the directory is removed, also on error. Writing the counts
to a store costs a little time, but memory stays bounded as for any stored data set
(the prepared copy is freed before the runner streams chunks back from disk), and there
is one code path to trust instead of two that could drift apart.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from scdrugmap.data.anndata_source import prepare_anndata
from scdrugmap.embed.registry import get_model
from scdrugmap.store.storage import Storage, check_key
from scdrugmap.workflows.embed import embed

# The temporary store's one data set; errors about it ("data set 'adata': ...") name it.
DATASET_ID = "adata"


def embed_anndata(
    adata,
    model: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    key: str | None = None,
    layer: str | None = None,
    gene_column: str | None = None,
    sample_column: str | None = None,
    device: str = "auto",
    chunk_size: int = 10_000,
    min_coverage: float | None = None,
    show_progress: bool = False,
    **model_options,
):
    """Embed `adata`'s cells with `model`; returns `adata` with three entries added.

    - `adata.obsm["X_<key>"]`: float32, one row per cell in adata's order (`key`
      defaults to the model's name);
    - `adata.obs["coverage_<key>"]`: the share of each cell's expressed genes the model
      knows (as `export` writes);
    - `adata.obs["<key>_failure"]`: why the model saw nothing of a cell (no expressed
      gene, or none in its vocabulary), '' for the others; such a cell's row carries no
      information, so drop those cells before clustering or classifying.

    Raw counts are read from `adata.X`, or from `adata.layers[layer]` (scanpy workflows
    often keep them in `layer="counts"`); gene identifiers from `adata.var_names`, or the
    var column `gene_column`. `sample_column` names the obs column of samples, for models
    that embed a cell with the others of its sample (CellPLM); otherwise the cells are
    one sample. Nothing else of `adata` is changed.

    The rows equal what `store.ingest` + `store.embed` + `store.export` give for the same
    cells: this runs that code on a temporary store. So the baselines (`pca`, `hvg`) are
    fitted on these cells, and another AnnData gets another fit; for one fit shared by
    several data sets, use a store. `checkpoint`, `device`, `chunk_size`,
    `min_coverage`, `show_progress` and `**model_options` mean what they mean to
    `store.embed`. Bad input (no AnnData, no cells, values that are not counts, an
    unknown model, too little vocabulary coverage) raises a one-line
    `scdrugmap.errors.InputError`.
    """
    get_model(model)  # an unknown model is refused before any counts are read
    key = check_key(key or model)
    with tempfile.TemporaryDirectory(prefix="scdrugmap-embed-") as folder:
        store = Storage(Path(folder) / "store")
        _add_counts(store, adata, layer, gene_column, sample_column)
        embed(
            store,
            model,
            [DATASET_ID],
            key=key,
            checkpoint=checkpoint,
            chunk_size=chunk_size,
            show_progress=show_progress,
            device=device,
            min_coverage=min_coverage,
            **model_options,
        )
        rows, coverage, failures = _read_back(store, key, adata.n_obs)
    adata.obsm[f"X_{key}"] = rows
    adata.obs[f"coverage_{key}"] = coverage
    adata.obs[f"{key}_failure"] = failures
    return adata


def _add_counts(
    store: Storage,
    adata,
    layer: str | None,
    gene_column: str | None,
    sample_column: str | None,
) -> None:
    """The AnnData's counts as the store's one data set. The prepared copy lives only in
    this call, so it is freed before embedding starts."""
    prepared = prepare_anndata(
        adata, DATASET_ID, layer=layer, gene_column=gene_column, sample_column=sample_column
    )
    store.add_prepared(prepared)


def _read_back(store: Storage, key: str, n_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The embedding's rows, each cell's coverage, and each cell's failure reason ('')."""
    array = store.embedding_array(key, DATASET_ID)
    failed = store.query(
        "SELECT cell_index, reason FROM failures WHERE key = ? AND dataset_id = ?",
        [key, DATASET_ID],
    )
    failures = np.full(n_cells, "", dtype=object)
    failures[failed["cell_index"].to_numpy(dtype=np.int64)] = failed["reason"].to_numpy()
    return array.read_all().astype(np.float32, copy=False), array.read_coverage(), failures
