"""Fitted classifiers saved in formats that load without running code (no pickle).

A predictor may be shared and loaded by a web service, so unpickling one
must never be able to execute anything: linear models and k-NN are plain
arrays (`.npz` read with `allow_pickle=False`), LightGBM is its own text
model, the MLP head is safetensors. The calibrator beside the classifier is JSON: Platt's
two numbers, or the isotonic thresholds (floats written as Python's shortest repr, which
reads back to the very same doubles, so a reloaded predictor gives the same probabilities).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scdrugmap.classify.calibration import Calibrator
from scdrugmap.errors import StoreError

LINEAR = "linear.npz"
NEIGHBOURS = "neighbours.npz"
TREES = "lightgbm.txt"
HEAD = "mlp.safetensors"
CALIBRATOR = "calibration.json"


def _standardised(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """As sklearn's StandardScaler does it on float32 features: in float32."""
    features = np.asarray(X, dtype=np.float32)
    return (features - mean.astype(np.float32)) / scale.astype(np.float32)


class StandardisedLinear:
    """Logistic regression on standardised features, from its arrays."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept) -> None:
        self.mean, self.scale, self.coef, self.intercept = mean, scale, coef, intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = _standardised(X, self.mean, self.scale) @ self.coef.T
        p = 1.0 / (1.0 + np.exp(-(z.ravel() + self.intercept[0])))
        return np.stack([1 - p, p], axis=1)


class TreesFromText:
    """A LightGBM booster read back from its text model."""

    def __init__(self, text: str) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_str=text)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = self.booster.predict(np.asarray(X, dtype=np.float32))
        return np.stack([1 - p, p], axis=1)


def _steps(model) -> dict:
    return dict(model.estimator_.steps)


def save_classifier(kind: str, model, folder: Path) -> str:
    """Write a fitted classifier of `kind` into `folder`; returns the file it wrote."""
    if kind == "logreg":
        steps = _steps(model)
        scaler, linear = steps["standardscaler"], steps["logisticregression"]
        np.savez(
            folder / LINEAR,
            mean=scaler.mean_,
            scale=scaler.scale_,
            coef=linear.coef_,
            intercept=linear.intercept_,
            classes=linear.classes_,
        )
        return LINEAR
    if kind == "knn":
        steps = _steps(model)
        scaler, knn = steps["standardscaler"], steps["kneighborsclassifier"]
        np.savez(
            folder / NEIGHBOURS,
            mean=scaler.mean_,
            scale=scaler.scale_,
            features=knn._fit_X,
            labels=knn.classes_[knn._y],
            n_neighbors=np.array(knn.n_neighbors),
        )
        return NEIGHBOURS
    if kind == "lightgbm":
        (folder / TREES).write_text(model.estimator_.booster_.model_to_string())
        return TREES
    if kind == "mlp":
        from safetensors.numpy import save_file

        save_file(model.state_dict(), str(folder / HEAD))
        return HEAD
    raise StoreError(f"no saved form for classifier {kind!r}")


def load_classifier(kind: str, folder: Path):
    """A model with `predict_proba`, read from what `save_classifier` wrote."""
    if kind == "logreg":
        arrays = np.load(folder / LINEAR, allow_pickle=False)
        return StandardisedLinear(
            arrays["mean"], arrays["scale"], arrays["coef"], arrays["intercept"]
        )
    if kind == "knn":
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        arrays = np.load(folder / NEIGHBOURS, allow_pickle=False)
        mean, scale = arrays["mean"], arrays["scale"]
        knn = KNeighborsClassifier(n_neighbors=int(arrays["n_neighbors"]), weights="distance")
        knn.fit(arrays["features"], arrays["labels"])
        standardise = FunctionTransformer(lambda X: _standardised(X, mean, scale))
        return make_pipeline(standardise, knn)
    if kind == "lightgbm":
        return TreesFromText((folder / TREES).read_text())
    if kind == "mlp":
        from safetensors.numpy import load_file

        from scdrugmap.classify.mlp import MLPHeadClassifier

        return MLPHeadClassifier.from_state_dict(load_file(str(folder / HEAD)))
    raise StoreError(f"no saved form for classifier {kind!r}")


def save_calibrator(calibrator: Calibrator, folder: Path) -> str:
    """Write a fitted calibrator as JSON into `folder`; returns the file it wrote."""
    (folder / CALIBRATOR).write_text(json.dumps(calibrator.to_json()))
    return CALIBRATOR


def load_calibrator(folder: Path) -> Calibrator | None:
    """The calibrator `save_calibrator` wrote, or None for a predictor kept without one
    (trained before calibration existed, or on cells that could not be cross-validated)."""
    path = folder / CALIBRATOR
    if not path.is_file():
        return None
    try:
        return Calibrator.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise StoreError(f"{path}: not a calibrator scdrugmap wrote ({error})") from error
