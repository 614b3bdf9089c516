"""The sql command answers questions and refuses to change anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from scdrugmap import Store
from scdrugmap.errors import InputError
from tests.store_builders import synthetic_store
from tests.synthetic import tree_digest


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return synthetic_store(tmp_path_factory.mktemp("sql"), n_datasets=1, cells_per_sample=10)


def test_select_answers(store: Store) -> None:
    frame = store.sql(
        "SELECT dataset_id, label, count(*) AS n FROM cells GROUP BY ALL ORDER BY ALL"
    )
    assert frame.to_dict("records") == [
        {"dataset_id": "ds0", "label": "resistant", "n": 20},
        {"dataset_id": "ds0", "label": "sensitive", "n": 20},
    ]
    assert len(store.sql("SELECT * FROM cell_meta WHERE drug = 'drugA'")) == 40
    assert len(store.sql("SELECT * FROM cells", limit=3)) == 3


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE cells",
        "DELETE FROM cells",
        "INSERT INTO datasets (dataset_id) VALUES ('x')",
        "UPDATE cells SET label = 'sensitive'",
        "CREATE TABLE t AS SELECT 1",
        "ALTER TABLE cells ADD COLUMN x INT",
        "COPY cells TO 'stolen.csv'",
        "ATTACH 'other.duckdb'",
        "SELECT 1; DROP TABLE cells",
        "INSTALL httpfs",
        "SET enable_external_access = true",
    ],
)
def test_statements_that_write_are_refused(store: Store, statement: str) -> None:
    before = tree_digest(store.path)
    with pytest.raises(InputError, match=r"refused|statements"):
        store.sql(statement)
    assert tree_digest(store.path) == before


def test_select_cannot_reach_files(store: Store, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(InputError):
        store.sql(f"SELECT * FROM read_csv('{secret}')")


def test_where_cannot_smuggle_a_second_statement(store: Store) -> None:
    with pytest.raises(InputError):
        store.cells("1=1; DROP TABLE cells")
    assert len(store.cells()) == 40


def test_a_query_past_its_time_limit_is_stopped(store: Store) -> None:
    with pytest.raises(InputError, match=r"time limit of 0\.3 s"):
        store.sql("SELECT count(*) FROM range(100000000000) a, range(100) b", seconds=0.3)
    assert store.sql("SELECT 42 AS answer", seconds=0.3)["answer"].tolist() == [42]


def test_threads_read_while_another_writes(store: Store) -> None:
    """DuckDB refuses a read-only and a writing connection to one file in one process at
    once; the catalog's process lock makes threads (the service's) take turns instead."""
    from concurrent.futures import ThreadPoolExecutor

    from scdrugmap.store.catalog import connect

    def write(i: int) -> None:
        with connect(store.catalog_path, write=True) as con:
            con.execute("CREATE TABLE IF NOT EXISTS scratch (i INT)")
            con.execute("INSERT INTO scratch VALUES (?)", [i])

    def read(_: int) -> int:
        return len(store.sql("SELECT * FROM cells"))

    with ThreadPoolExecutor(max_workers=4) as pool:
        writes = [pool.submit(write, i) for i in range(20)]
        reads = [pool.submit(read, i) for i in range(40)]
        assert [r.result() for r in reads] == [40] * 40
        for w in writes:
            w.result()
    assert len(store.sql("SELECT * FROM scratch")) == 20
    with connect(store.catalog_path, write=True) as con:
        con.execute("DROP TABLE scratch")
