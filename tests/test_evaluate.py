"""Evaluation runs on real stores: honest splits, recorded, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from scdrugmap import Store
from scdrugmap.errors import InputError
from tests.store_builders import synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    built = synthetic_store(tmp_path_factory.mktemp("evaluate"), n_datasets=3, cells_per_sample=40)
    built.embed("pca", chunk_size=500, n_components=10)
    return built


def _split_arrays(store: Store, run_id: str) -> dict[str, np.ndarray]:
    split_id = store.sql(f"SELECT split_id FROM runs WHERE run_id = '{run_id}'")["split_id"][0]
    with np.load(store.path / "splits" / f"{split_id}.npz", allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def test_pooled_split_groups_samples_and_records_everything(store: Store) -> None:
    record = store.evaluate("pca", "logreg", "pooled", n_folds=3)
    assert not record.cell_level
    run = store.sql(f"SELECT * FROM runs WHERE run_id = '{record.run_id}'").iloc[0]
    assert run["n_cells"] == 480 and run["n_folds"] == 3
    arrays = _split_arrays(store, record.run_id)
    cells = store.cells()
    sample = (cells["dataset_id"] + "/" + cells["sample"]).to_numpy()
    for fold in range(3):
        train, test = arrays[f"fold{fold}_train"], arrays[f"fold{fold}_test"]
        assert not set(sample[train]) & set(sample[test])
    predictions = store.sql(
        f"SELECT count(*) AS n, count(DISTINCT (dataset_id, cell_index)) AS cells "
        f"FROM predictions WHERE run_id = '{record.run_id}'"
    ).iloc[0]
    assert predictions["n"] == predictions["cells"] == 480
    pooled = record.results.query("scope == 'pooled' and metric == 'auroc'")
    assert len(pooled) == 3
    assert pooled["value"].mean() > 0.9


def test_cross_dataset_holds_out_each_data_set(store: Store) -> None:
    record = store.evaluate("pca", "lightgbm", "cross-dataset")
    folds = record.results.query("scope == 'pooled'")["fold_name"].unique()
    assert sorted(folds) == ["ds0", "ds1", "ds2"]
    arrays = _split_arrays(store, record.run_id)
    for fold, name in enumerate(arrays["fold_names"]):
        assert set(arrays["dataset_id"][arrays[f"fold{fold}_test"]]) == {name}
        assert name not in set(arrays["dataset_id"][arrays[f"fold{fold}_train"]])


def test_few_shot_and_where_selection(store: Store) -> None:
    record = store.evaluate("pca", "knn", "few-shot", shots=3, where="dataset_id <> 'ds2'")
    assert record.n_cells == 320
    assert set(record.results["fold_name"]) == {"ds0", "ds1"}


def test_same_seed_same_metrics(store: Store) -> None:
    first = store.evaluate("pca", "mlp", "pooled", n_folds=2, seed=7)
    second = store.evaluate("pca", "mlp", "pooled", n_folds=2, seed=7)
    columns = ["fold", "scope", "dataset_id", "metric", "value"]
    np.testing.assert_array_equal(
        first.results[columns].to_numpy(dtype=str), second.results[columns].to_numpy(dtype=str)
    )
    latest = store.results()
    assert first.run_id not in set(latest["run_id"])
    assert second.run_id in set(latest["run_id"])


def test_undefined_metrics_are_nan_with_a_reason(store: Store) -> None:
    record = store.evaluate(
        "pca", "logreg", "cross-dataset", where="NOT (dataset_id = 'ds2' AND label = 'resistant')"
    )
    one_class = record.results.query("fold_name == 'ds2' and metric == 'auroc'")
    assert len(one_class) == 2
    assert one_class["value"].isna().all()
    assert one_class["reason"].str.len().min() > 0
    both = record.results.query("fold_name == 'ds0' and metric == 'auroc'")
    assert both["value"].notna().all()


def test_bad_requests(store: Store) -> None:
    with pytest.raises(InputError, match="no labelled cells"):
        store.evaluate("pca", "logreg", "pooled", where="dataset_id = 'nope'")
    with pytest.raises(InputError, match="logreg"):
        store.evaluate("pca", "forest", "pooled")
    with pytest.raises(InputError, match="pooled"):
        store.evaluate("pca", "logreg", "leave-some-out")
    with pytest.raises(Exception, match="no embedding"):
        store.evaluate("nokey", "logreg", "pooled")
