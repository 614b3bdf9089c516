"""The issue's real-data cases: PC9 (pooled, honest fallback) and SCAD (cross-dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scdrugmap import Store
from tests.store_builders import ingest_pc9, scad_options


@pytest.fixture(scope="module")
def pc9_store(real_data: Path, tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("pc9") / "store")
    ingest_pc9(
        store,
        real_data / "pc9_erlotinib",
        drug="erlotinib",
        cancer_type="lung adenocarcinoma",
        tissue="cell line",
        therapy="targeted",
    )
    store.embed("pca", chunk_size=5000)
    return store


def test_pc9_is_one_data_set_of_two_samples(pc9_store: Store) -> None:
    row = pc9_store.dataset("pc9")
    assert (row["n_cells"], row["n_samples"]) == (3_650, 2)
    assert (row["n_sensitive"], row["n_resistant"]) == (1_500, 2_150)
    assert row["gene_id_type"] == "symbol"
    embedding = pc9_store.embeddings().iloc[0]
    assert embedding["complete"] and embedding["n_cells"] == 3_650
    assert 0.02 < embedding["mean_coverage"] < 0.5  # 2,000 HVGs of ~25k genes


def test_pc9_pooled_evaluation_records_the_cell_level_fallback(pc9_store: Store) -> None:
    record = pc9_store.evaluate("pca", "lightgbm", "pooled", where="drug = 'erlotinib'", n_folds=3)
    assert record.cell_level
    assert "sample" in record.note
    run = pc9_store.sql("SELECT cell_level, note FROM runs").iloc[0]
    assert bool(run["cell_level"]) and run["note"] == record.note
    split = pc9_store.sql("SELECT cell_level, note FROM splits").iloc[0]
    assert bool(split["cell_level"])
    auroc = record.results.query("scope == 'pooled' and metric == 'auroc'")["value"]
    assert len(auroc) == 3 and auroc.min() > 0.6


@pytest.fixture(scope="module")
def scad_store(real_data: Path, tmp_path_factory) -> Store:
    folder = real_data / "scad"
    store = Store(tmp_path_factory.mktemp("scad") / "store")
    for drug, dataset_id in (("PLX4720", "plx4720"), ("Afatinib", "afatinib")):
        store.ingest([folder / f"{drug}.tsv.gz"], scad_options(dataset_id, drug))
    store.embed("pca", key="pca-scad", n_components=20)
    return store


def test_scad_tables_are_normalised_entrez_data_sets(scad_store: Store) -> None:
    frame = scad_store.datasets().set_index("dataset_id")
    assert frame.loc["plx4720", "n_cells"] == 108
    assert frame.loc["afatinib", "n_cells"] == 120
    assert set(frame["value_type"]) == {"normalized"}
    assert set(frame["gene_id_type"]) == {"entrez"}


def test_scad_cross_dataset_evaluation(scad_store: Store) -> None:
    record = scad_store.evaluate("pca-scad", "logreg", "cross-dataset")
    pooled = record.results.query("scope == 'pooled'")
    assert sorted(pooled["fold_name"].unique()) == ["afatinib", "plx4720"]
    assert not record.cell_level
    values = pooled.query("metric == 'accuracy'")["value"].to_numpy()
    assert np.isfinite(values).all()
    assert (pooled.query("fold_name == 'plx4720'")["n_test"] == 108).all()
