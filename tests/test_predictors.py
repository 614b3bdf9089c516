"""Predictors: fitted on a stored embedding, saved without pickle, read back to the same
probabilities, with their provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scdrugmap.classify.classifiers import CLASSIFIER_NAMES, make_classifier
from scdrugmap.errors import InputError, StoreError
from scdrugmap.predict.train import load_predictor, predictor_path
from scdrugmap.store.store import Store
from tests.store_builders import synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    built = synthetic_store(
        tmp_path_factory.mktemp("predictors"), n_datasets=2, cells_per_sample=30
    )
    built.embed("pca", n_components=8)
    built.evaluate("pca", "logreg", "pooled", n_folds=2)
    return built


def _holds_no_pickle(folder) -> None:
    """Every file is plain data: arrays readable with pickles refused, text, or safetensors."""
    for path in folder.iterdir():
        assert path.suffix in {".npz", ".json", ".txt", ".safetensors"}, path.name
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                for name in arrays.files:
                    arrays[name]  # an object array would raise here


@pytest.mark.parametrize("classifier", CLASSIFIER_NAMES)
def test_a_saved_predictor_gives_the_fitted_models_probabilities(store: Store, classifier) -> None:
    record = store.train_predictor("pca", classifier, f"pca-{classifier}", seed=3)
    cells = store.cells(None, columns=("dataset_id", "cell_index", "label"))
    features = store.load_embedding("pca", cells)
    labels = (cells["label"] == "sensitive").to_numpy(dtype=np.int8)
    fitted = make_classifier(classifier, seed=3).fit(features, labels)
    loaded_record, loaded = load_predictor(store, f"pca-{classifier}")
    assert loaded_record == json.loads(json.dumps(record, default=str))
    np.testing.assert_allclose(
        loaded.predict_proba(features), fitted.predict_proba(features), atol=1e-5
    )
    _holds_no_pickle(predictor_path(store, f"pca-{classifier}"))


def test_the_record_carries_provenance_and_cross_validated_metrics(store: Store) -> None:
    record = store.train_predictor("pca", "logreg", "with-metrics")
    assert record["n_cells"] == 240 and record["n_sensitive"] == 120
    embedding = record["embedding"]
    assert embedding["model"] == "pca" and embedding["dataset_ids"] == ["ds0", "ds1"]
    assert len(embedding["settings_hash"]) == 16
    checked = record["cross_validated"]
    assert checked["split"] == "pooled" and 0 <= checked["metrics"]["auroc"] <= 1
    assert store.train_predictor("pca", "knn", "no-run")["cross_validated"] is None
    cells = np.load(predictor_path(store, "with-metrics") / "cells.npz", allow_pickle=False)
    assert len(cells["cell_index"]) == 240
    listed = store.query("SELECT name, classifier FROM predictors ORDER BY name")
    assert {"with-metrics", "no-run"} <= set(listed["name"])


def test_bad_requests_leave_nothing_behind(store: Store) -> None:
    store.train_predictor("pca", "logreg", "taken")
    with pytest.raises(StoreError, match="exists"):
        store.train_predictor("pca", "logreg", "taken")
    with pytest.raises(StoreError, match="no embedding 'nope'"):
        store.train_predictor("nope", "logreg", "fresh")
    with pytest.raises(InputError, match="unknown classifier"):
        store.train_predictor("pca", "svm", "fresh")
    with pytest.raises(InputError, match="predictor name"):
        store.train_predictor("pca", "logreg", "../escape")
    with pytest.raises(InputError, match="one class"):
        store.train_predictor("pca", "logreg", "fresh", where="label = 'sensitive'")
    assert not predictor_path(store, "fresh").exists()
    assert not list((store.path / "predictors").glob(".creating-*"))
    with pytest.raises(StoreError, match="no predictor"):
        load_predictor(store, "fresh")
