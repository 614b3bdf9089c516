"""Read-only SQL over the catalog.

Only query statements are admitted, external file access is switched off and locked,
and the functions that would show where the store lives on disk are refused, so a
question asked of the store can neither change it nor read or write files beside it
(the HTTP service relies on this too).

A user's query (the `sql` command, the service's /api/sql) runs on a snapshot: a
private copy of the catalog taken under a brief shared lock and reused until the
catalog changes. It therefore never holds the lock a writer needs, however long it
runs, and queries run side by side instead of one after another. It is bounded in
time (a timer interrupts it), in memory and threads (DuckDB's own limits, spilling
to a temporary folder outside the store) and in the bytes it may return, measured
before the rows are fetched, since fetching is what costs the memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from scdrugmap.errors import InputError
from scdrugmap.store.catalog import connect

if TYPE_CHECKING:
    import pandas as pd

_ALLOWED = {"SELECT", "EXPLAIN"}
# Table functions and settings that reveal the store's absolute path or the machine's.
_REVEALING = re.compile(
    r"\b(duckdb_settings|duckdb_databases|pragma_database_list|database_list|"
    r"duckdb_temporary_files|current_setting|getenv|duckdb_extensions|duckdb_secrets|"
    r"pragma_storage_info|pragma_metadata_info|duckdb_memory)\b",
    re.IGNORECASE,
)
_ROW = "__scdrugmap_row"
_SNAPSHOTS_KEPT = 2
_CONFIGURING = threading.Lock()


@dataclass(frozen=True)
class SqlLimits:
    """What one user query may take: seconds (None: no limit), DuckDB's memory and
    threads, and the bytes of its answer (None: no limit, for Python callers, whose
    answer lands in their own process)."""

    seconds: float | None = 60.0
    memory_mb: int = 1024
    threads: int = 2
    max_bytes: int | None = 64 * 2**20


def check_read_only(query: str) -> str:
    """Reject anything but a single query statement, naming what was refused; return the
    statement's kind (SELECT or EXPLAIN)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as error:
        if _too_deep(error):
            raise InputError(_TOO_DEEP) from error
        raise InputError(f"SQL does not parse: {str(error).splitlines()[0]}") from error
    if len(statements) != 1:
        raise InputError(
            f"SQL holds {len(statements)} statements; give exactly one SELECT statement"
        )
    kind = str(statements[0].type).rsplit(".", 1)[-1]
    if kind not in _ALLOWED:
        raise InputError(f"SQL statement of type {kind} refused: the store is read-only to sql")
    revealing = _REVEALING.search(query)
    if revealing:
        raise InputError(
            f"SQL function {revealing.group(1)} refused: it shows the machine's settings and "
            "paths, not the store's data"
        )
    return kind


# DuckDB's own message advises a SET, which read-only SQL refuses.
_TOO_DEEP = "SQL nests too deeply (past DuckDB's expression depth limit); write it flatter"


def _too_deep(error: duckdb.Error) -> bool:
    return "expression depth" in str(error).lower()


def _failure(error: duckdb.Error, seconds: float | None) -> InputError:
    if isinstance(error, duckdb.InterruptException):
        return InputError(
            f"SQL stopped after the time limit of {seconds:g} s; narrow the query "
            "(a WHERE, a LIMIT) or ask for fewer joins"
        )
    first = str(error).splitlines()[0]
    if _too_deep(error):
        return InputError(_TOO_DEEP)
    if isinstance(error, duckdb.OutOfMemoryException):
        return InputError(
            "SQL needs more memory than a query may take; narrow it (a WHERE, a LIMIT, "
            "fewer or smaller columns)"
        )
    return InputError(f"SQL failed: {first}")


@contextmanager
def _interrupted_after(con: duckdb.DuckDBPyConnection, seconds: float | None) -> Iterator[None]:
    timer = threading.Timer(seconds, con.interrupt) if seconds is not None else None
    if timer is not None:
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


@contextmanager
def _query(
    catalog: Path, query: str, limit: int | None, seconds: float | None
) -> Iterator[duckdb.DuckDBPyRelation]:
    """A query on the catalog itself, for the store's own reads (cells of a selection)."""
    check_read_only(query)
    with connect(catalog) as con:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        with _interrupted_after(con, seconds):
            try:
                relation = con.sql(query)
                if limit is not None:
                    relation = relation.limit(limit)
                yield relation
            except duckdb.Error as error:
                raise _failure(error, seconds) from error


def run_query(
    catalog: Path, query: str, limit: int | None = None, seconds: float | None = None
) -> pd.DataFrame:
    """A read-only query's rows (at most `limit`), stopped after `seconds` when given."""
    with _query(catalog, query, limit, seconds) as relation:
        return relation.df()


def query_rows(
    catalog: Path, query: str, limit: int | None = None
) -> tuple[list[str], list[tuple]]:
    """Column names and rows, without pandas: the CLI's fast path for its own listings."""
    with _query(catalog, query, limit, None) as relation:
        return list(relation.columns), relation.fetchall()


def _snapshot_folder(catalog: Path) -> Path:
    owner = hashlib.sha256(str(catalog.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"scdrugmap-sql-{os.getuid()}" / owner


def _stamp(catalog: Path) -> str:
    wal = catalog.with_name(catalog.name + ".wal")
    parts = [catalog.stat()] + ([wal.stat()] if wal.exists() else [])
    return "-".join(f"{s.st_mtime_ns}.{s.st_size}" for s in parts)


def snapshot(catalog: Path) -> Path:
    """A private copy of the catalog as it is now, made under a shared lock (no writer is
    halfway) and reused for as long as the catalog is unchanged."""
    folder = _snapshot_folder(catalog)
    folder.mkdir(parents=True, exist_ok=True)
    with connect(catalog):
        target = folder / f"{_stamp(catalog)}.duckdb"
        if not target.exists():
            partial = folder / f".{target.name}-{os.getpid()}-{threading.get_ident()}"
            shutil.copyfile(catalog, partial)
            wal = catalog.with_name(catalog.name + ".wal")
            if wal.exists():
                shutil.copyfile(wal, partial.with_name(target.name + ".wal"))
            os.replace(partial, target)
    # Older copies go; a query still reading one keeps its open file.
    older = sorted(folder.glob("*.duckdb"), key=lambda p: p.stat().st_mtime_ns)
    for stale in [p for p in older if p != target][: max(0, len(older) - _SNAPSHOTS_KEPT)]:
        stale.unlink(missing_ok=True)
        stale.with_name(stale.name + ".wal").unlink(missing_ok=True)
    return target


@contextmanager
def _user_query(
    catalog: Path, query: str, limit: int | None, limits: SqlLimits
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The query executed on a snapshot within `limits`; the connection holds its rows."""
    kind = check_read_only(query)
    copy = snapshot(catalog)
    spill = copy.parent / "spill"
    spill.mkdir(exist_ok=True)
    con = _snapshot_connection(copy, limits, spill)
    try:
        with _interrupted_after(con, limits.seconds):
            try:
                relation = con.sql(query)
                if limit is not None:
                    relation = relation.limit(limit)
                if limits.max_bytes is not None and kind == "SELECT":
                    _check_bytes(con, relation, limits.max_bytes)
                con.execute(relation.sql_query())
                yield con
            except duckdb.Error as error:
                raise _failure(error, limits.seconds) from error
    finally:
        con.close()


def _snapshot_connection(copy: Path, limits: SqlLimits, spill: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a snapshot, its database locked against files and SET.

    Connections to one snapshot share one database: the first configures and locks it,
    the others find it locked (hence the lock around connecting)."""
    config = {
        "memory_limit": f"{limits.memory_mb}MB",
        "threads": limits.threads,
        "temp_directory": str(spill),
    }
    with _CONFIGURING:
        con = duckdb.connect(str(copy), read_only=True, config=config)
        if not con.execute("SELECT current_setting('lock_configuration')").fetchone()[0]:
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
    return con


def _check_bytes(con: duckdb.DuckDBPyConnection, relation, max_bytes: int) -> None:
    """Refuse an answer larger than `max_bytes` before fetching it: summing each row's
    text streams through DuckDB in bounded memory, fetching the rows would not."""
    probe = f"SELECT sum(strlen(CAST({_ROW} AS VARCHAR))) FROM ({relation.sql_query()}) {_ROW}"
    size = con.execute(probe).fetchone()[0] or 0
    if size > max_bytes:
        raise InputError(
            f"SQL answer of about {size / 2**20:.0f} MiB is over the {max_bytes / 2**20:.0f} "
            "MiB a query may return; select fewer rows or columns"
        )


def user_query(
    catalog: Path, query: str, limit: int | None = None, limits: SqlLimits | None = None
) -> pd.DataFrame:
    """A user's read-only query as a DataFrame, on a snapshot and within `limits`."""
    with _user_query(catalog, query, limit, limits or SqlLimits()) as con:
        return con.fetchdf()


def user_rows(
    catalog: Path, query: str, limit: int | None = None, limits: SqlLimits | None = None
) -> tuple[list[str], list[tuple]]:
    """A user's read-only query as column names and rows (no pandas), within `limits`."""
    with _user_query(catalog, query, limit, limits or SqlLimits()) as con:
        return [d[0] for d in con.description], con.fetchall()
