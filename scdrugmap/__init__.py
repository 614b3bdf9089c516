"""scdrugmap: drug response of single cancer cells from foundation-model embeddings.

The public Python API is `scdrugmap.Store`; the CLI only wraps it.
"""

from scdrugmap.errors import InputError, ScdrugmapError, StoreError

__version__ = "0.1.0"

__all__ = ["InputError", "ScdrugmapError", "Store", "StoreError", "__version__"]


def __getattr__(name: str):
    # Imported lazily so that `import scdrugmap` (and `scdrugmap --help`) stays fast.
    if name == "Store":
        from scdrugmap.store import Store

        return Store
    raise AttributeError(name)
