"""Content hashes on real cells: one per cell, blind to gene order, file and all-zero genes;
and the same SCAD cells stored twice, once with every label inverted, flagged at ingest."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import sparse

from scdrugmap import Store
from scdrugmap.cli import main
from scdrugmap.data.content_hash import content_hashes
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.data.source import SourceTable

SCAD_OPTIONS = {
    "label_column": "response",
    "sensitive_values": ["1"],
    "resistant_values": ["0"],
    "values": "normalized",
}


def test_the_hash_ignores_gene_order_and_all_zero_genes(pc9_control: SourceTable) -> None:
    counts, genes = pc9_control.counts, list(pc9_control.genes)
    hashes = content_hashes(counts, genes)
    assert hashes.shape == (counts.shape[0],)
    assert all(len(h) == 32 and int(h, 16) >= 0 for h in hashes[:50])

    order = np.random.default_rng(5).permutation(len(genes))
    assert (content_hashes(counts[:, order], [genes[i] for i in order]) == hashes).all()

    # An extra gene nobody expresses, stored as explicit zeros (0.0 and -0.0) in two cells.
    coo = counts.tocoo()
    padded = sparse.csr_matrix(
        (
            np.r_[coo.data, np.float32(0.0), np.float32(-0.0)],
            (np.r_[coo.row, 1, 3], np.r_[coo.col, len(genes), len(genes)]),
        ),
        shape=(counts.shape[0], len(genes) + 1),
    )
    assert padded.nnz == counts.nnz + 2
    assert (content_hashes(padded, [*genes, "NOT-EXPRESSED"]) == hashes).all()

    changed = counts.copy()
    changed.data[changed.indptr[7]] += 1  # one count of one gene of cell 7
    differs = content_hashes(changed, genes) != hashes
    assert differs[7] and differs.sum() == 1
    # Another name for a gene that about half the cells express: exactly those change.
    in_cells = np.bincount(counts.indices, minlength=len(genes))
    gene = int(np.argmax(np.minimum(in_cells, counts.shape[0] - in_cells)))
    renamed = [*genes[:gene], genes[gene] + "-other", *genes[gene + 1 :]]
    expressing = counts[:, [gene]].toarray().ravel() != 0
    assert 0 < expressing.sum() < len(expressing)
    assert ((content_hashes(counts, renamed) != hashes) == expressing).all()


def _label_inverted_copy(table: Path, out: Path) -> Path:
    """The SCAD table with every response flipped and its columns in another order."""
    frame = pd.read_csv(table, sep="\t", index_col=0, dtype={"response": "int64"})
    frame["response"] = 1 - frame["response"]
    genes = [c for c in frame.columns if c != "response"]
    frame[[*genes[::-1], "response"]].to_csv(out, sep="\t")
    return out


@pytest.fixture(scope="module")
def twice_stored(real_data: Path, tmp_path_factory) -> tuple[Store, dict, dict, Path]:
    root = tmp_path_factory.mktemp("copies")
    original = real_data / "scad" / "PLX4720.tsv.gz"
    inverted = _label_inverted_copy(original, root / "relabelled.tsv.gz")
    store = Store(root / "store")
    first = store.ingest([original], IngestOptions(dataset_id="plx4720", **SCAD_OPTIONS))
    second = store.ingest([inverted], IngestOptions(dataset_id="plx-inverted", **SCAD_OPTIONS))
    return store, first, second, inverted


def test_a_label_inverted_copy_is_flagged_at_ingest(twice_stored) -> None:
    store, first, second, _ = twice_stored
    assert first["shared_cells"] == [] and first["warnings"] == []
    assert (first["n_sensitive"], first["n_resistant"]) == (62, 46)
    assert (second["n_sensitive"], second["n_resistant"]) == (46, 62)
    assert second["shared_cells"] == [
        {"dataset_id": "plx4720", "n_shared": 108, "n_conflicting": 108}
    ]
    assert second["n_duplicates"] == 0
    (warning,) = second["warnings"]
    assert "108 of the 108 cells of plx-inverted are identical to cells of plx4720" in warning
    assert "of which 108 carry the opposite label: a label-inverted copy?" in warning

    pairs = store.sql(
        "SELECT a.content_hash AS a, b.content_hash AS b FROM cells a JOIN cells b "
        "USING (barcode) WHERE a.dataset_id = 'plx4720' AND b.dataset_id = 'plx-inverted'"
    )
    assert len(pairs) == 108 and pairs["a"].notna().all() and (pairs["a"] == pairs["b"]).all()
    assert pairs["a"].str.fullmatch("[0-9a-f]{32}").all() and pairs["a"].nunique() == 108
    view = store.sql("SELECT * FROM shared_cells ORDER BY dataset_id")
    assert view.to_dict("records") == [
        {"dataset_id": d, "other_dataset_id": o, "n_shared": 108, "n_conflicting": 108}
        for d, o in (("plx-inverted", "plx4720"), ("plx4720", "plx-inverted"))
    ]
    listing = CliRunner().invoke(main, ["--store", str(store.path), "datasets"])
    assert listing.exit_code == 0, listing.output
    assert "shared_cells" in listing.stdout
    assert "plx4720: 108 (108 conflicting)" in listing.stdout
    assert "plx-inverted: 108 (108 conflicting)" in listing.stdout


def test_the_service_lists_shared_cells(twice_stored) -> None:
    from scdrugmap.serve.catalog_routes import datasets

    store, *_ = twice_stored
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(store=store)))
    listed = {row["dataset_id"]: row["shared_cells"] for row in datasets(request)}
    assert listed == {
        "plx4720": [{"dataset_id": "plx-inverted", "n_shared": 108, "n_conflicting": 108}],
        "plx-inverted": [{"dataset_id": "plx4720", "n_shared": 108, "n_conflicting": 108}],
    }


def test_the_cli_reports_shared_cells_in_ingest_and_datasets(twice_stored) -> None:
    store, _, _, inverted = twice_stored
    runner = CliRunner()
    ingest = runner.invoke(
        main,
        [
            *("--store", str(store.path), "ingest", str(inverted), "--dataset", "plx-again"),
            *("--label-column", "response", "--sensitive", "1", "--resistant", "0"),
            *("--values", "normalized"),
        ],
    )
    assert ingest.exit_code == 0, ingest.output
    assert (
        "identical cells in other data sets: plx-inverted 108, "
        "plx4720 108 (108 with the opposite label)" in ingest.stdout
    )
    warnings = [line for line in ingest.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "identical to cells of plx-inverted" in warnings[0]
    assert warnings[0].endswith("a copy of the same cells?")
    assert "of which 108 carry the opposite label" in warnings[1]

    records = json.loads(
        runner.invoke(main, ["--store", str(store.path), "datasets", "--json"]).stdout
    )
    shared = {r["dataset_id"]: r["shared_cells"] for r in records}
    assert shared["plx4720"] == [
        {"dataset_id": "plx-again", "n_shared": 108, "n_conflicting": 108},
        {"dataset_id": "plx-inverted", "n_shared": 108, "n_conflicting": 108},
    ]
    assert shared["plx-again"][1] == {
        "dataset_id": "plx4720",
        "n_shared": 108,
        "n_conflicting": 108,
    }
    assert shared["plx-again"][0]["n_conflicting"] == 0
    store.drop_dataset("plx-again")


def test_real_pc9_cells_share_nothing_with_scad(twice_stored, real_data: Path) -> None:
    store, *_ = twice_stored
    folder = real_data / "pc9_erlotinib"
    row = store.ingest(
        [folder / "Day11_control.txt.gz", folder / "Day11_Erlotinib.txt.gz"],
        IngestOptions(
            dataset_id="pc9", samples=["control", "erlotinib"], labels=["sensitive", "resistant"]
        ),
    )
    assert row["shared_cells"] == [] and row["n_duplicates"] == 0
    assert not any("identical" in w or "repeat" in w for w in row["warnings"])
    counts = store.sql(
        "SELECT n_genes > 0 AS expressing, count(*) AS cells, "
        "count(DISTINCT content_hash) AS hashes, count(content_hash) AS hashed "
        "FROM cells WHERE dataset_id = 'pc9' GROUP BY ALL ORDER BY ALL"
    ).to_dict("records")
    # Every cell expressing something has a hash of its own; PC9's two empty droplets
    # share one (they hold the same nothing) and are left out of the overlap counts.
    assert counts == [
        {"expressing": False, "cells": 2, "hashes": 1, "hashed": 2},
        {"expressing": True, "cells": 3_648, "hashes": 3_648, "hashed": 3_648},
    ]
    store.drop_dataset("pc9")


def test_a_store_from_before_content_hashes_still_lists_and_upgrades(
    real_data: Path, tmp_path: Path
) -> None:
    store = Store(tmp_path / "old")
    store.ingest(
        [real_data / "scad" / "PLX4720.tsv.gz"],
        IngestOptions(dataset_id="plx4720", **SCAD_OPTIONS),
    )
    with duckdb.connect(str(store.catalog_path)) as con:  # as an older version left it
        con.execute("DROP VIEW shared_cells")
        con.execute("ALTER TABLE cells DROP COLUMN content_hash")
    runner = CliRunner()
    listing = runner.invoke(main, ["--store", str(store.path), "datasets", "--json"])
    assert listing.exit_code == 0, listing.output
    assert json.loads(listing.stdout)[0]["shared_cells"] is None

    inverted = _label_inverted_copy(real_data / "scad" / "PLX4720.tsv.gz", tmp_path / "x.tsv")
    row = store.ingest([inverted], IngestOptions(dataset_id="plx-inverted", **SCAD_OPTIONS))
    assert row["shared_cells"] == []  # the old cells carry no hash to compare with
    hashed = store.sql(
        "SELECT dataset_id, count(content_hash) AS n FROM cells GROUP BY ALL ORDER BY ALL"
    )
    assert hashed.to_dict("records") == [
        {"dataset_id": "plx-inverted", "n": 108},
        {"dataset_id": "plx4720", "n": 0},
    ]
