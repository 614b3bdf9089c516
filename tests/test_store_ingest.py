"""Ingest into a real store: atomic, validated, byte-identical on failure."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.errors import InputError, ScdrugmapError
from tests.store_builders import synthetic_store
from tests.synthetic import counts_matrix, tree_digest, write_genes_by_cells


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Store:
    return synthetic_store(tmp_path_factory.mktemp("ingest"))


def test_datasets_and_cells_are_catalogued(built: Store) -> None:
    datasets = built.datasets().set_index("dataset_id")
    assert list(datasets.index) == ["ds0", "ds1"]
    assert datasets.loc["ds0", "n_cells"] == 240
    assert datasets.loc["ds0", "n_samples"] == 4
    assert datasets.loc["ds0", "n_sensitive"] == 120
    assert datasets.loc["ds0", "n_resistant"] == 120
    counts = built.sql(
        "SELECT dataset_id, sample, label, count(*) AS n FROM cells GROUP BY ALL ORDER BY ALL"
    )
    assert len(counts) == 8
    assert set(counts["n"]) == {60}


def test_counts_round_trip_through_the_zarr(built: Store, tmp_path: Path) -> None:
    reader = built.reader("ds0")
    expected = counts_matrix(60, False, 0)
    np.testing.assert_array_equal(reader.read_rows(0, 60).toarray(), expected)
    assert reader.gene_ids[:3] == ["GENE0000", "GENE0001", "GENE0002"]


def _bad_inputs(root: Path) -> dict[str, tuple[list[Path], dict, str]]:
    good = write_genes_by_cells(root / "good.tsv", counts_matrix(5, False, 1))
    negative = counts_matrix(5, False, 2)
    negative[0, 0] = -3
    fractional = root / "fractional.tsv"
    fractional.write_text("GENE\ta\tb\nG1\t1.5\t2\nG2\t0\t1\n")
    nan = root / "nan.tsv"
    nan.write_text("GENE\ta\tb\nG1\tNaN\t2\nG2\t0\t1\n")
    text = root / "text.tsv"
    text.write_text("GENE\ta\tb\nG1\tlots\t2\nG2\t0\t1\n")
    empty = root / "empty.tsv"
    empty.write_text("")
    duplicate_genes = root / "dupgenes.tsv"
    duplicate_genes.write_text("GENE\ta\tb\nG1\t1\t2\nG1\t0\t1\n")
    duplicate_cells = root / "dupcells.tsv"
    duplicate_cells.write_text("GENE\ta\ta\nG1\t1\t2\nG2\t0\t1\n")
    corrupt = root / "corrupt.tsv.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with gzip.open(root / "header_only.tsv.gz", "wt") as handle:
        handle.write("GENE\ta\tb\n")
    return {
        "taken id": ([good], {"dataset_id": "ds0"}, "already"),
        "negative": (
            [write_genes_by_cells(root / "neg.tsv", negative)],
            {"dataset_id": "neg"},
            "negative",
        ),
        "non-integer": ([fractional], {"dataset_id": "frac"}, "integer"),
        "nan": ([nan], {"dataset_id": "nan"}, "nan"),
        "non-numeric": ([text], {"dataset_id": "text"}, "numeric"),
        "empty": ([empty], {"dataset_id": "empty"}, "empty"),
        "missing file": ([root / "absent.tsv"], {"dataset_id": "absent"}, "absent.tsv"),
        "duplicate genes": ([duplicate_genes], {"dataset_id": "dupg"}, "duplicate"),
        "duplicate barcodes": ([duplicate_cells], {"dataset_id": "dupc"}, "duplicate"),
        "unreadable": ([corrupt], {"dataset_id": "corrupt"}, "corrupt.tsv.gz"),
        "no cells": ([root / "header_only.tsv.gz"], {"dataset_id": "hdr"}, "header_only"),
        "label column missing": (
            [good],
            {
                "dataset_id": "lc",
                "label_column": "response",
                "sensitive_values": ["1"],
                "resistant_values": ["0"],
            },
            "response",
        ),
        "bad dataset id": ([good], {"dataset_id": "../escape"}, "escape"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "taken id",
        "negative",
        "non-integer",
        "nan",
        "non-numeric",
        "empty",
        "missing file",
        "duplicate genes",
        "duplicate barcodes",
        "unreadable",
        "no cells",
        "label column missing",
        "bad dataset id",
    ],
)
def test_bad_input_leaves_store_byte_identical(built: Store, tmp_path: Path, case: str) -> None:
    files, options, fragment = _bad_inputs(tmp_path)[case]
    before = tree_digest(built.path)
    with pytest.raises(ScdrugmapError) as raised:
        built.ingest(files, IngestOptions(**options))
    message = str(raised.value)
    assert "\n" not in message
    assert fragment.lower() in message.lower()
    assert tree_digest(built.path) == before


def test_failed_first_ingest_creates_no_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "fresh")
    bad = tmp_path / "bad.tsv"
    bad.write_text("GENE\ta\nG1\t-1\n")
    with pytest.raises(InputError):
        store.ingest([bad], IngestOptions(dataset_id="x"))
    assert not store.path.exists()


def test_replace_swaps_the_data_set_and_drops_its_stale_embeddings(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path, n_datasets=1, cells_per_sample=20)
    store.embed("pca", chunk_size=50)
    assert store.embedding_path("pca", "ds0").exists()
    replacement = write_genes_by_cells(tmp_path / "new.tsv", counts_matrix(7, True, 9))
    row = store.ingest(
        [replacement], IngestOptions(dataset_id="ds0", labels=["resistant"]), replace=True
    )
    assert row["n_cells"] == 7
    assert store.sql("SELECT count(*) AS n FROM cells")["n"][0] == 7
    assert store.embeddings().empty
    assert not store.embedding_path("pca", "ds0").exists()
    leftovers = [p.name for p in (store.path / "datasets").iterdir()]
    assert leftovers == ["ds0.zarr"]
