"""The store: one directory holding a DuckDB catalog and zarr arrays."""

from scdrugmap.store.store import Store

__all__ = ["Store"]
