"""The sql command answers questions and refuses to change anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from scdrugmap.errors import InputError
from scdrugmap.store.store import Store
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
