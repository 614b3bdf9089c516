"""The store: one directory holding a DuckDB catalog and zarr arrays."""

import warnings

from scdrugmap.store.store import Store

# zarr-python announces format changes on every array it writes; users cannot act on them.
warnings.filterwarnings("ignore", message=".*autosharding.*")
warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")

__all__ = ["Store"]
