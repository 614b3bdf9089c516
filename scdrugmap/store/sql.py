"""Read-only SQL over the catalog.

The catalog is opened read-only, external file access is switched off and
locked, and only query statements are admitted, so a question asked of the
store can neither change it nor read or write files beside it (the HTTP
service relies on this too). A time limit interrupts the query from a timer
thread, so a runaway cross join cannot hold the catalog.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from scdrugmap.errors import InputError
from scdrugmap.store.catalog import connect

if TYPE_CHECKING:
    import pandas as pd

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


@contextmanager
def _query(
    catalog: Path, query: str, limit: int | None, seconds: float | None
) -> Iterator[duckdb.DuckDBPyRelation]:
    check_read_only(query)
    with connect(catalog) as con:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        timer = threading.Timer(seconds, con.interrupt) if seconds is not None else None
        if timer is not None:
            timer.start()
        try:
            relation = con.sql(query)
            if limit is not None:
                relation = relation.limit(limit)
            yield relation
        except duckdb.InterruptException as error:
            raise InputError(
                f"SQL stopped after the time limit of {seconds:g} s; narrow the query "
                "(a WHERE, a LIMIT) or ask for fewer joins"
            ) from error
        except duckdb.Error as error:
            raise InputError(f"SQL failed: {str(error).splitlines()[0]}") from error
        finally:
            if timer is not None:
                timer.cancel()


def run_query(
    catalog: Path, query: str, limit: int | None = None, seconds: float | None = None
) -> pd.DataFrame:
    """A read-only query's rows (at most `limit`), stopped after `seconds` when given."""
    with _query(catalog, query, limit, seconds) as relation:
        return relation.df()


def query_rows(
    catalog: Path, query: str, limit: int | None = None
) -> tuple[list[str], list[tuple]]:
    """Column names and rows, without pandas: the CLI's fast path."""
    with _query(catalog, query, limit, None) as relation:
        return list(relation.columns), relation.fetchall()
