"""Read-only SQL over the catalog.

The catalog is opened read-only, external file access is switched off and
locked, and only query statements are admitted, so a question asked of the
store can neither change it nor read or write files beside it (the HTTP
service relies on this too).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from scdrugmap.errors import InputError
from scdrugmap.store.catalog import connect

_ALLOWED = {"SELECT", "EXPLAIN"}


def check_read_only(query: str) -> None:
    """Reject anything but a single query statement, naming what was refused."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as error:
        raise InputError(f"SQL does not parse: {str(error).splitlines()[0]}") from error
    if len(statements) != 1:
        raise InputError(
            f"SQL holds {len(statements)} statements; give exactly one SELECT statement"
        )
    kind = str(statements[0].type).rsplit(".", 1)[-1]
    if kind not in _ALLOWED:
        raise InputError(f"SQL statement of type {kind} refused: the store is read-only to sql")


def run_query(catalog: Path, query: str, limit: int | None = None) -> pd.DataFrame:
    check_read_only(query)
    with connect(catalog) as con:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            relation = con.sql(query)
            if limit is not None:
                relation = relation.limit(limit)
            return relation.df() if relation is not None else pd.DataFrame()
        except duckdb.Error as error:
            raise InputError(f"SQL failed: {str(error).splitlines()[0]}") from error
