"""The classifiers a run can name, each an sklearn estimator with a fixed recipe.

The recipes are fixed (and seeded) so that a classifier name plus a seed in
the runs table is enough to repeat a result. Every classifier refuses training
cells of one class with an InputError: a model that has seen one class cannot
tell the classes apart, and some estimators would otherwise "succeed" silently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from scdrugmap.classify.labels import check_training_labels
from scdrugmap.errors import InputError

CLASSIFIER_NAMES: tuple[str, ...] = ("logreg", "lightgbm", "mlp", "knn")
# The name fine-tuning runs are recorded under (a LoRA-adapted model with an MLP head).
LORA_CLASSIFIER = "lora-mlp"

_DESCRIPTIONS = {
    "logreg": "standardised features + logistic regression (lbfgs, C=1)",
    "lightgbm": "gradient-boosted trees (LightGBM, 200 trees, lr 0.05, 31 leaves, 63 bins, "
    "half the features per tree, deterministic)",
    "mlp": "scDrugMap head: 512-512 ReLU MLP, AdamW, 10 epochs and at least 300 steps, "
    "early stopping (torch where installed, numpy otherwise)",
    "knn": "standardised features + 15 nearest neighbours, distance-weighted",
}


class ResponseClassifier(ClassifierMixin, BaseEstimator):
    """An sklearn classifier behind the checks every response classifier shares."""

    def __init__(self, estimator: BaseEstimator | None = None) -> None:
        self.estimator = estimator

    def fit(self, X: np.ndarray, y: np.ndarray) -> ResponseClassifier:
        labels = check_training_labels(y)
        features = np.asarray(X, dtype=np.float32)
        self.estimator_ = clone(self.estimator).fit(features, labels)
        self.classes_ = np.asarray(self.estimator_.classes_)
        self.n_features_in_ = features.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _logreg(seed: int, n_jobs: int, params: dict) -> BaseEstimator:
    model = LogisticRegression(solver="lbfgs", max_iter=1000, C=1.0, random_state=seed)
    return ResponseClassifier(make_pipeline(StandardScaler(), model.set_params(**params)))


# 63 bins and half the features per tree: ~5x faster on embeddings of hundreds of
# dimensions, with no loss we could measure. The overhead benchmark fits the plain
# library with these very parameters.
LIGHTGBM_PARAMS = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "max_bin": 63,
    "colsample_bytree": 0.5,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}


def _lightgbm(seed: int, n_jobs: int, params: dict) -> BaseEstimator:
    from lightgbm import LGBMClassifier  # imported on use: listing classifiers stays fast

    model = LGBMClassifier(**LIGHTGBM_PARAMS, random_state=seed, n_jobs=n_jobs)
    return ResponseClassifier(model.set_params(**params))


def _mlp(seed: int, n_jobs: int, params: dict) -> BaseEstimator:
    from scdrugmap.classify.mlp import MLPHeadClassifier

    return MLPHeadClassifier(random_state=seed).set_params(**params)


def _knn(seed: int, n_jobs: int, params: dict) -> BaseEstimator:
    model = KNeighborsClassifier(n_neighbors=15, weights="distance", n_jobs=n_jobs)
    return ResponseClassifier(make_pipeline(StandardScaler(), model.set_params(**params)))


_FACTORIES: dict[str, Callable[[int, int, dict], BaseEstimator]] = {
    "logreg": _logreg,
    "lightgbm": _lightgbm,
    "mlp": _mlp,
    "knn": _knn,
}


def _check_name(name: str) -> None:
    if name not in _FACTORIES:
        raise InputError(
            f"unknown classifier {name!r}; choose one of: {', '.join(CLASSIFIER_NAMES)}"
        )


def _tunable(model: BaseEstimator) -> BaseEstimator:
    """The estimator whose hyperparameters **params override."""
    if isinstance(model, ResponseClassifier):
        model = model.estimator
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def make_classifier(name: str, seed: int = 0, n_jobs: int = 1, **params) -> BaseEstimator:
    """A fresh, unfitted classifier; `params` override the recipe's hyperparameters."""
    _check_name(name)
    default = _FACTORIES[name](seed, n_jobs, {})
    allowed = set(_tunable(default).get_params(deep=False))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InputError(
            f"classifier {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(sorted(allowed))}"
        )
    return _FACTORIES[name](seed, n_jobs, params) if params else default


def describe_classifier(name: str) -> str:
    _check_name(name)
    return _DESCRIPTIONS[name]
