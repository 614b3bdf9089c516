"""The MLP head trained in torch: the numpy head's rules and weights, its saved form, and
its scores on real cells (issue 19)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from sklearn.metrics import roc_auc_score

from scdrugmap import Store
from scdrugmap.classify.evaluate import embedding_left_out, select_and_split
from scdrugmap.classify.mlp import MLPHeadClassifier
from scdrugmap.errors import InputError
from scdrugmap.predict.saved import load_classifier, save_classifier
from tests.store_builders import ingest_pc9


@pytest.fixture(scope="module")
def pc9_fold(real_data: Path, tmp_path_factory):
    """The first pooled fold of the real PC9 cells (both samples) on 50 pca dimensions."""
    store = Store(tmp_path_factory.mktemp("mlp-torch") / "store")
    ingest_pc9(store, real_data / "pc9_erlotinib")
    store.embed("pca", n_components=50)
    selection = select_and_split(
        store, None, "pooled", n_folds=5, shots=5, seed=0, left_out=embedding_left_out(store, "pca")
    )
    features = store.load_embedding("pca", selection.cells)
    fold = selection.plan.folds[0]
    labels = selection.labels
    return features[fold.train], labels[fold.train], features[fold.test], labels[fold.test]


def _noise(n: int = 300, dim: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int8)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    features[:, :3] += labels[:, None]
    return features, labels


def test_both_backends_start_from_the_same_weights_and_take_the_same_steps() -> None:
    features, labels = _noise()
    settings = {"hidden_size": 32, "max_epochs": 1, "min_steps": 1, "random_state": 3}
    numpy_head = MLPHeadClassifier(backend="numpy", **settings).fit(features, labels)
    torch_head = MLPHeadClassifier(backend="torch", **settings).fit(features, labels)
    assert torch_head.backend_ == "torch" and numpy_head.backend_ == "numpy"
    assert torch_head.n_steps_run_ == numpy_head.n_steps_run_ == 3
    for key, value in numpy_head.params_.items():
        np.testing.assert_allclose(torch_head.params_[key], value, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        torch_head.history_["val_loss"], numpy_head.history_["val_loss"], rtol=1e-5
    )


def test_torch_keeps_the_training_rules() -> None:
    """At least min_steps steps, early stopping only after them, the best epoch's weights."""
    features, labels = _noise(100)
    settings = {"hidden_size": 16, "learning_rate": 3e-3, "patience": 1, "random_state": 1}
    model = MLPHeadClassifier(backend="torch", min_steps=50, **settings).fit(features, labels)
    assert model.n_steps_run_ == model.n_epochs_run_ >= 50
    assert model.best_epoch_ == 49 + int(np.argmin(model.history_["val_loss"][49:]))
    prefix = MLPHeadClassifier(
        backend="torch", min_steps=50, max_epochs=model.best_epoch_ + 1, **settings
    )
    prefix.set_params(patience=1000).fit(features, labels)
    np.testing.assert_array_equal(model.predict_proba(features), prefix.predict_proba(features))


def test_a_torch_fit_runs_on_one_thread_and_gives_the_threads_back() -> None:
    features, labels = _noise()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []

    class Watching(MLPHeadClassifier):
        def _trainer(self, *args, **kwargs):
            seen.append(torch.get_num_threads())
            return super()._trainer(*args, **kwargs)

    try:
        Watching(backend="torch", hidden_size=8, max_epochs=1, min_steps=1).fit(features, labels)
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_on_real_cells_torch_scores_as_numpy_does(pc9_fold) -> None:
    x_train, y_train, x_test, y_test = pc9_fold
    scores, probabilities = {}, {}
    for backend in ("numpy", "torch"):
        model = MLPHeadClassifier(backend=backend).fit(x_train, y_train)
        probabilities[backend] = model.predict_proba(x_test)[:, 1]
        scores[backend] = roc_auc_score(y_test, probabilities[backend])
        assert model.n_steps_run_ >= 300
    assert scores["numpy"] > 0.7
    assert abs(scores["torch"] - scores["numpy"]) < 0.01, scores
    assert np.abs(probabilities["torch"] - probabilities["numpy"]).max() < 0.05


def test_a_torch_fitted_head_saves_and_loads_as_the_numpy_one(pc9_fold, tmp_path: Path) -> None:
    x_train, y_train, x_test, _ = pc9_fold
    model = MLPHeadClassifier(backend="torch", hidden_size=64, max_epochs=2).fit(x_train, y_train)
    expected = model.predict_proba(x_test)
    save_file(model.state_dict(), tmp_path / "head.safetensors")
    restored = MLPHeadClassifier.from_state_dict(load_file(tmp_path / "head.safetensors"))
    np.testing.assert_array_equal(restored.predict_proba(x_test), expected)
    save_classifier("mlp", model, tmp_path)
    np.testing.assert_array_equal(load_classifier("mlp", tmp_path).predict_proba(x_test), expected)


def test_bad_backends_are_refused() -> None:
    features, labels = _noise(40)
    with pytest.raises(InputError, match="backend must be one of auto, torch, numpy"):
        MLPHeadClassifier(backend="jax").fit(features, labels)


def test_the_numpy_backend_fits_without_importing_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from scdrugmap.classify.classifiers import make_classifier\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 2\n"
        "make_classifier('mlp', backend='numpy', hidden_size=8, min_steps=2).fit(x, y)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
