"""scdrugmap: drug response of single cancer cells from foundation-model embeddings.

The public Python API: `scdrugmap.open_store(path)` gives a `Store` with the
operations as methods (ingest, embed, evaluate, train_predictor, predict, finetune,
report, export); the CLI and the service call the same workflow functions.
"""

from scdrugmap.errors import InputError, ScdrugmapError, StoreError
from scdrugmap.version import __version__

__all__ = [
    "InputError",
    "ScdrugmapError",
    "Store",
    "StoreError",
    "__version__",
    "open_store",
]


def __getattr__(name: str):
    # Imported lazily so that `import scdrugmap` (and `scdrugmap --help`) stays fast.
    if name in ("Store", "open_store"):
        from scdrugmap.workflows import api

        return getattr(api, name)
    raise AttributeError(name)
