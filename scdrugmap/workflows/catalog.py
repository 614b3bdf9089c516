"""Looking things up: the catalog's rows by the fast path, the embedders on offer, and
the results tables, for the CLI's listing commands and the service."""

from __future__ import annotations

from pathlib import Path

from scdrugmap.errors import StoreError
from scdrugmap.store.location import CATALOG_NAME, default_store_path
from scdrugmap.store.sql import query_rows


def catalog_file(store_path: Path | None) -> Path:
    return (store_path or default_store_path()) / CATALOG_NAME


def catalog_rows(
    store_path: Path | None, query: str, limit: int | None = None
) -> tuple[list[str], list[tuple]]:
    """A read-only query on the store's catalog, without pandas, so listing commands start
    in well under a second."""
    catalog = catalog_file(store_path)
    if not catalog.exists():
        path = catalog.parent
        raise StoreError(
            f"{path}: no scdrugmap store here; run `scdrugmap --store {path} ingest ...` "
            "first, or point --store / $SCDRUGMAP_STORE at one"
        )
    return query_rows(catalog, query, limit)


def model_rows(with_descriptions: bool = False) -> tuple[list[str], list[list]]:
    """One row per embedder: name, size, gene identifiers, input length, checkpoint files
    and whether it is ready to run here."""
    from scdrugmap.embed.checkpoints import availability
    from scdrugmap.embed.registry import MODELS

    columns = ["model", "embedding", "genes", "max length", "checkpoint files", "status"]
    rows = []
    for spec in MODELS.values():
        if spec.fitted_in_store:
            files, status = "none: fitted in the store", "ready"
        else:
            files, status = ", ".join(spec.checkpoint_files), availability(spec).describe()
        row = [spec.name, spec.dim, spec.gene_ids, spec.max_length, files, status]
        if with_descriptions:
            row += [spec.description, spec.source]
        rows.append(row)
    if with_descriptions:
        columns += ["description", "published at"]
    return columns, rows
