"""The store: one directory holding a DuckDB catalog and zarr arrays."""

__all__ = ["Store"]


def __getattr__(name: str):
    # Lazy, so that `scdrugmap sql` can use store.sql without importing pandas.
    if name == "Store":
        from scdrugmap.store.store import Store

        return Store
    raise AttributeError(name)
