"""scdrugmap: drug response of single cancer cells from foundation-model embeddings.

The public Python API: `scdrugmap.open_store(path)` gives a `Store` with the
operations as methods (ingest, embed, evaluate, train_predictor, predict, finetune,
report, export); the CLI and the service call the same workflow functions.
`scdrugmap.embed_anndata(adata, model="pca")` embeds a scanpy user's AnnData into
`adata.obsm["X_pca"]` through the same code, without a store to keep.
"""

from scdrugmap.errors import InputError, ScdrugmapError, StoreError
from scdrugmap.version import __version__

__all__ = [
    "InputError",
    "ScdrugmapError",
    "Store",
    "StoreError",
    "__version__",
    "embed_anndata",
    "open_store",
]


def __getattr__(name: str):
    # Imported lazily so that `import scdrugmap` (and `scdrugmap --help`) stays fast.
    if name in ("Store", "open_store"):
        from scdrugmap.workflows import api

        return getattr(api, name)
    if name == "embed_anndata":
        from scdrugmap.workflows.anndata import embed_anndata

        return embed_anndata
    raise AttributeError(name)
