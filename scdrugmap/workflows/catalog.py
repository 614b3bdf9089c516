"""Looking things up: the catalog's rows by the fast path, the embedders on offer, and
the results tables, for the CLI's listing commands and the service."""

from __future__ import annotations

from pathlib import Path

from scdrugmap.errors import StoreError
from scdrugmap.store.location import CATALOG_NAME, default_store_path
from scdrugmap.store.overlaps import HAS_SHARED_CELLS_VIEW
from scdrugmap.store.sql import SqlLimits, query_rows, user_rows


def catalog_file(store_path: Path | None) -> Path:
    return (store_path or default_store_path()) / CATALOG_NAME


def catalog_rows(
    store_path: Path | None, query: str, limit: int | None = None
) -> tuple[list[str], list[tuple]]:
    """A read-only query on the store's catalog, without pandas, so listing commands start
    in well under a second."""
    return query_rows(_existing_catalog(store_path), query, limit)


def _existing_catalog(store_path: Path | None) -> Path:
    catalog = catalog_file(store_path)
    if not catalog.exists():
        path = catalog.parent
        raise StoreError(
            f"{path}: no scdrugmap store here; run `scdrugmap --store {path} ingest ...` "
            "first, or point --store / $SCDRUGMAP_STORE at one"
        )
    return catalog


def sql_rows(
    store_path: Path | None, query: str, limit: int | None, seconds: float | None
) -> tuple[list[str], list[tuple]]:
    """A user's query for the `sql` command: on a snapshot of the catalog (no writer waits
    for it), stopped after `seconds`, within DuckDB memory and answer-size limits."""
    return user_rows(_existing_catalog(store_path), query, limit, SqlLimits(seconds=seconds))


DATASET_COLUMNS = (
    "dataset_id, n_cells, n_genes, n_samples, n_sensitive, n_resistant, n_unknown, "
    "drug, cancer_type, tissue, therapy, value_type, gene_id_type"
)

# Per data set, what it shares with the others (the shared_cells view, one aggregate):
# text for people ("afatinib: 120 (120 conflicting)"), a list of records for scripts.
_SHARED_TEXT = """string_agg(other_dataset_id || ': ' || n_shared || CASE WHEN n_conflicting > 0
    THEN ' (' || n_conflicting || ' conflicting)' ELSE '' END, ', '
    ORDER BY n_shared DESC, other_dataset_id)"""
_SHARED_LIST = """list({'dataset_id': other_dataset_id, 'n_shared': n_shared,
    'n_conflicting': n_conflicting} ORDER BY n_shared DESC, other_dataset_id)"""


def _has_shared_cells_view(store_path: Path | None) -> bool:
    """False for a store from before content hashes that no write has upgraded yet."""
    _, found = catalog_rows(store_path, HAS_SHARED_CELLS_VIEW)
    return bool(found[0][0])


def shared_cells_by_dataset(store_path: Path | None) -> dict[str, list[dict]]:
    """Per data set, the other data sets holding identical cells: {dataset_id, n_shared,
    n_conflicting} records, most shared first (data sets sharing nothing are absent)."""
    if not _has_shared_cells_view(store_path):
        return {}
    _, rows = catalog_rows(
        store_path,
        f"SELECT dataset_id, {_SHARED_LIST} FROM shared_cells GROUP BY dataset_id",
    )
    return dict(rows)


def dataset_rows(
    store_path: Path | None, all_columns: bool = False
) -> tuple[list[str], list[tuple]]:
    """The `datasets` listing by the fast path: the main columns (or all of them) and
    `shared_cells`, the cells each data set shares with every other stored one. A store
    from before content hashes, never written since, lists it empty."""
    columns = "d.*" if all_columns else ", ".join(f"d.{c}" for c in DATASET_COLUMNS.split(", "))
    if not _has_shared_cells_view(store_path):
        query = f"SELECT {columns}, NULL AS shared_cells FROM datasets d ORDER BY d.dataset_id"
        return catalog_rows(store_path, query)
    shared, empty = (_SHARED_LIST, "[]") if all_columns else (_SHARED_TEXT, "NULL")
    query = (
        f"SELECT {columns}, coalesce(s.shared, {empty}) AS shared_cells FROM datasets d "
        f"LEFT JOIN (SELECT dataset_id, {shared} AS shared FROM shared_cells "
        "GROUP BY dataset_id) s ON s.dataset_id = d.dataset_id ORDER BY d.dataset_id"
    )
    return catalog_rows(store_path, query)


def model_rows(with_descriptions: bool = False) -> tuple[list[str], list[list]]:
    """One row per embedder: name, size, gene identifiers, input length, the authors'
    cell filter and its default, checkpoint files and whether it is ready to run here."""
    from scdrugmap.embed.checkpoints import availability
    from scdrugmap.embed.registry import MODELS

    columns = ["model", "embedding", "genes", "max length", "cell filter", "checkpoint files"]
    columns.append("status")
    rows = []
    for spec in MODELS.values():
        if spec.fitted_in_store:
            files, status = "none: fitted in the store", "ready"
        else:
            files, status = ", ".join(spec.checkpoint_files), availability(spec).describe()
        row = [spec.name, spec.dim, spec.gene_ids, spec.max_length, spec.cell_filter, files, status]
        if with_descriptions:
            row += [spec.description, spec.source]
        rows.append(row)
    if with_descriptions:
        columns += ["description", "published at"]
    return columns, rows
