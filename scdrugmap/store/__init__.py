"""The store: one directory holding a DuckDB catalog and zarr arrays (persistence only)."""

__all__ = ["Storage"]


def __getattr__(name: str):
    # Lazy, so that `scdrugmap sql` can use store.sql without importing pandas.
    if name == "Storage":
        from scdrugmap.store.storage import Storage

        return Storage
    raise AttributeError(name)
