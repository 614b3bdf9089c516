"""Classifiers learn, are reproducible under a seed, and refuse one-class training data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.base import clone

from scdrugmap.classify.classifiers import (
    CLASSIFIER_NAMES,
    describe_classifier,
    make_classifier,
)
from scdrugmap.classify.metrics import compute_metrics
from scdrugmap.classify.mlp import MLPHeadClassifier
from scdrugmap.errors import InputError


def _separable(n: int = 400, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int8)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    features[:, :4] += 2.5 * labels[:, None]
    return features, labels


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    features, labels = _separable()
    return features[:280], labels[:280], features[280:], labels[280:]


def _prob_sensitive(model, features: np.ndarray) -> np.ndarray:
    return model.predict_proba(features)[:, list(model.classes_).index(1)]


@pytest.mark.parametrize("name", CLASSIFIER_NAMES)
def test_learns_a_separable_signal_and_is_deterministic(name: str, data) -> None:
    x_train, y_train, x_test, y_test = data
    first = make_classifier(name, seed=3).fit(x_train, y_train)
    second = make_classifier(name, seed=3).fit(x_train, y_train)
    proba = first.predict_proba(x_test)
    assert proba.shape == (len(x_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert list(first.classes_) == [0, 1]
    np.testing.assert_array_equal(proba, second.predict_proba(x_test))
    assert compute_metrics(y_test, _prob_sensitive(first, x_test))["f1_sensitive"].value > 0.9
    assert set(first.predict(x_test)) <= {0, 1}


@pytest.mark.parametrize("name", CLASSIFIER_NAMES)
def test_one_class_training_cells_are_refused(name: str, data) -> None:
    x_train = data[0]
    with pytest.raises(InputError, match="training cells hold only one class \\(sensitive\\)"):
        make_classifier(name).fit(x_train[:20], np.ones(20, dtype=np.int8))


def test_unknown_names_and_parameters() -> None:
    with pytest.raises(InputError, match="logreg, lightgbm, mlp, knn"):
        make_classifier("forest")
    with pytest.raises(InputError, match="logreg, lightgbm, mlp, knn"):
        describe_classifier("forest")
    with pytest.raises(InputError, match=r"no parameter 'depth'.*n_neighbors"):
        make_classifier("knn", depth=3)


def test_descriptions_are_one_line() -> None:
    for name in CLASSIFIER_NAMES:
        description = describe_classifier(name)
        assert description and "\n" not in description


def test_recipes_and_overrides() -> None:
    lgbm = make_classifier("lightgbm", seed=5, n_jobs=2).estimator
    assert (lgbm.n_estimators, lgbm.learning_rate, lgbm.num_leaves) == (200, 0.05, 31)
    assert (lgbm.random_state, lgbm.n_jobs, lgbm.deterministic) == (5, 2, True)
    logreg = make_classifier("logreg", C=0.1).estimator.steps[-1][1]
    assert (logreg.C, logreg.max_iter, logreg.solver) == (0.1, 1000, "lbfgs")
    knn = make_classifier("knn").estimator.steps[-1][1]
    assert (knn.n_neighbors, knn.weights) == (15, "distance")
    mlp = make_classifier("mlp", seed=4, max_epochs=2)
    assert (mlp.random_state, mlp.max_epochs, mlp.hidden_size) == (4, 2, 512)
    assert clone(mlp).get_params() == mlp.get_params()


def test_mlp_early_stopping_keeps_the_best_weights() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 20)).astype(np.float32)
    noise_labels = rng.integers(0, 2, size=400)
    settings = {"hidden_size": 64, "learning_rate": 3e-3, "random_state": 2}
    model = MLPHeadClassifier(max_epochs=300, patience=3, **settings).fit(features, noise_labels)
    val_loss = model.history_["val_loss"]
    assert model.n_epochs_run_ < 300
    assert len(val_loss) == len(model.history_["train_loss"]) == model.n_epochs_run_
    # early stopping starts at the first epoch ending at or after min_steps (300) steps:
    # 360 training cells at batch 128 are 3 steps an epoch, so epoch 99
    first = 99
    assert model.best_epoch_ == first + int(np.argmin(val_loss[first:]))
    assert model.n_epochs_run_ == model.best_epoch_ + 1 + 3
    assert val_loss[-1] > val_loss[model.best_epoch_]
    # the same run stopped at the best epoch reaches exactly the weights that were kept
    prefix = MLPHeadClassifier(max_epochs=model.best_epoch_ + 1, patience=1000, **settings)
    prefix.fit(features, noise_labels)
    np.testing.assert_array_equal(model.predict_proba(features), prefix.predict_proba(features))


def test_mlp_safetensors_round_trip(tmp_path, data) -> None:
    x_train, y_train, x_test, _ = data
    model = MLPHeadClassifier(hidden_size=32, max_epochs=2).fit(x_train, y_train)
    state = model.state_dict()
    assert state["fc1.weight"].shape == (32, x_train.shape[1])
    assert state["fc3.weight"].shape == (2, 32)
    save_file(state, tmp_path / "head.safetensors")
    restored = MLPHeadClassifier.from_state_dict(load_file(tmp_path / "head.safetensors"))
    assert restored.hidden_size == 32
    probabilities = restored.predict_proba(x_test)
    assert probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities, model.predict_proba(x_test))
    with pytest.raises(InputError, match=r"missing fc3\.bias"):
        MLPHeadClassifier.from_state_dict({k: v for k, v in state.items() if k != "fc3.bias"})


def test_mlp_balanced_class_weight_favours_the_rare_class() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(600) < 0.1).astype(np.int8)
    features = rng.normal(size=(600, 8)).astype(np.float32) + 0.7 * labels[:, None]
    settings = {"hidden_size": 32, "max_epochs": 3, "random_state": 0}
    plain = MLPHeadClassifier(**settings).fit(features, labels)
    balanced = MLPHeadClassifier(class_weight="balanced", **settings).fit(features, labels)
    assert (
        balanced.predict_proba(features)[:, 1].mean() > plain.predict_proba(features)[:, 1].mean()
    )
    with pytest.raises(InputError, match="class_weight"):
        MLPHeadClassifier(class_weight="heavy").fit(features, labels)


def test_mlp_refuses_bad_features(data) -> None:
    x_train, y_train, _, _ = data
    broken = x_train.copy()
    broken[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        MLPHeadClassifier(max_epochs=1).fit(broken, y_train)
    model = MLPHeadClassifier(hidden_size=8, max_epochs=1).fit(x_train, y_train)
    with pytest.raises(InputError, match="dimensions"):
        model.predict_proba(x_train[:, :3])


def test_cpu_stage_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import scdrugmap.classify.classifiers, scdrugmap.classify.mlp\n"
        "import scdrugmap.classify.splits, scdrugmap.classify.metrics\n"
        "from scdrugmap.classify.classifiers import make_classifier\n"
        "make_classifier('mlp')\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
