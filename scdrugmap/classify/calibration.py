"""Calibrating a classifier's probabilities on its own training cells, never on held-out ones.

A probability of 0.9 should mean that nine in ten such cells are sensitive; most
classifiers are over- or under-confident, and a sample's share of sensitive cells is only
as good as its cells' calls. A calibrator maps a raw probability to a calibrated one,
monotonely (a cell more likely sensitive before stays so after):

- Platt: sigmoid(a * logit(p) + b) with a >= 0, fitted by maximum likelihood on
  Platt's smoothed targets; two numbers.
- isotonic: the non-decreasing step function that best fits the labels (least squares),
  read between its thresholds by linear interpolation and clipped at its ends.

Which of the two, and the calibrator itself, come from cross-validation on the training
cells alone (`fit_calibration`): inner folds give every training cell a probability from
a classifier that did not see it (out of fold); each method is scored by the Brier score
of each inner fold's cells when fitted on the other folds' out-of-fold probabilities; the
better one (Platt on a tie: two numbers overfit less) is fitted on all of them. The inner
folds hold out whole samples where the training cells have at least two samples of each
label, else they are stratified folds of cells (`classify/splits.py`, pooled split), and
the result records which. Identical cells stay on one side as in every split.

A calibrator is saved as plain numbers (`to_json`) and applied with numpy alone, so the
same numbers give the same probabilities after a reload.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from scdrugmap.classify.metrics import brier_score, ece_from_bins, reliability_bins
from scdrugmap.classify.splits import make_split
from scdrugmap.errors import InputError, StoreError

METHODS = ("platt", "isotonic")
# As many inner folds as evaluate's default: with three, sample-grouped folds of a few
# data sets held out every sample of one label of a data set at once (the demo's inner
# out-of-fold AUROC fell from 0.70 to 0.49), and calibrated that confound, not the model.
CALIBRATION_FOLDS = 5
# Raw probabilities of exactly 0 or 1 (trees, a saturated MLP) have no finite logit.
_EPS = 1e-7


def _logit(prob: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibrator: Platt's (a, b), or isotonic thresholds (x ascending, y)."""

    method: str
    a: float = math.nan
    b: float = math.nan
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of sensitivity (float64, in [0, 1]); NaN stays NaN."""
        raw = np.asarray(prob, dtype=np.float64)
        if self.method == "platt":
            out = 1.0 / (1.0 + np.exp(-(self.a * _logit(raw) + self.b)))
        else:
            out = np.interp(raw, np.asarray(self.x), np.asarray(self.y))
        return np.where(np.isnan(raw), np.nan, out)

    def to_json(self) -> dict:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_json(cls, data: dict) -> Calibrator:
        method = data.get("method")
        if method == "platt":
            return cls("platt", a=float(data["a"]), b=float(data["b"]))
        if method == "isotonic":
            x, y = tuple(map(float, data["x"])), tuple(map(float, data["y"]))
            if not x or len(x) != len(y) or any(b < a for a, b in pairwise(x)):
                raise StoreError("isotonic calibrator: thresholds missing or out of order")
            return cls("isotonic", x=x, y=y)
        raise StoreError(f"unknown calibration method {method!r}; choose {', '.join(METHODS)}")


def fit_platt(prob: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Platt scaling on the log-odds, with Platt's targets (n+ + 1)/(n+ + 2) and
    1/(n- + 2) so that a separable training set does not drive the slope to infinity;
    the slope is kept >= 0, so the map never reverses the ranking."""
    from scipy.optimize import minimize

    z = _logit(prob)
    y = np.asarray(labels, dtype=np.float64)
    n_pos, n_neg = float(y.sum()), float(y.size - y.sum())
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        s = params[0] * z + params[1]
        # log(1 + e^s) - t s, and its gradient, without overflow.
        value = np.sum(np.logaddexp(0.0, s) - target * s)
        residual = 1.0 / (1.0 + np.exp(-s)) - target
        return float(value), np.array([np.sum(residual * z), np.sum(residual)])

    prior = math.log((n_pos + 1) / (n_neg + 1))
    bounds = [(0.0, None), (None, None)]
    fitted = minimize(loss, np.array([1.0, prior]), jac=True, method="L-BFGS-B", bounds=bounds)
    return Calibrator("platt", a=float(fitted.x[0]), b=float(fitted.x[1]))


def fit_isotonic(prob: np.ndarray, labels: np.ndarray) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(np.asarray(prob, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    return Calibrator(
        "isotonic",
        x=tuple(float(v) for v in model.X_thresholds_),
        y=tuple(float(v) for v in model.y_thresholds_),
    )


_FITTERS = {"platt": fit_platt, "isotonic": fit_isotonic}


@dataclass
class Calibration:
    """What `fit_calibration` found: the calibrator (None when the training cells could
    not be cross-validated, with the reason), how its inner folds held cells out, each
    method's inner-CV Brier score, and every training cell's out-of-fold probability
    before and after calibration (the latter cross-fitted: each inner fold's cells
    calibrated by the chosen method fitted on the other folds)."""

    calibrator: Calibrator | None
    grouping: str | None
    n_folds: int
    note: str | None
    scores: dict[str, float] = field(default_factory=dict)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    raw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    calibrated: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def method(self) -> str | None:
        return None if self.calibrator is None else self.calibrator.method

    def apply(self, prob: np.ndarray) -> np.ndarray | None:
        return None if self.calibrator is None else self.calibrator(prob)

    def summary(self) -> dict:
        """JSON-ready: the method, how it was chosen, and the out-of-fold reliability bins,
        ECE and Brier score of the training cells before and after calibration."""
        summary = {
            "method": self.method,
            "chosen_by": f"{self.n_folds}-fold cross-validation on the training cells, Brier score",
            "grouping": self.grouping,
            "n_folds": self.n_folds,
            "note": self.note,
            "brier_by_method": self.scores,
        }
        if self.calibrator is None:
            return summary
        before = reliability_bins(self.labels, self.raw)
        after = reliability_bins(self.labels, self.calibrated)
        return {
            **summary,
            "ece_raw": ece_from_bins(before),
            "ece_calibrated": ece_from_bins(after),
            "brier_raw": brier_score(self.labels, self.raw),
            "brier_calibrated": brier_score(self.labels, self.calibrated),
            "reliability": {"raw": before, "calibrated": after},
        }


def _sensitive_probability(model, features: np.ndarray) -> np.ndarray:
    column = list(model.classes_).index(1)
    return np.asarray(model.predict_proba(features)[:, column], dtype=np.float64)


def fit_calibration(
    new_model: Callable[[], object],
    features: np.ndarray,
    labels: np.ndarray,
    samples: np.ndarray,
    datasets: np.ndarray,
    content_hashes: np.ndarray | None = None,
    *,
    seed: int = 0,
    n_folds: int = CALIBRATION_FOLDS,
) -> Calibration:
    """Choose and fit a calibrator by inner cross-validation on these (training) cells.

    `new_model()` gives a fresh, unfitted classifier of the kind being calibrated; it is
    fitted once per inner fold. When the cells cannot be split so (a label on fewer than
    two cells, an inner training fold of one class), the result has no calibrator and
    says why, rather than calibrating on the cells it was fitted on."""
    labels = np.asarray(labels, dtype=np.int8)
    try:
        plan = make_split(
            "pooled",
            labels,
            samples,
            datasets,
            n_folds=n_folds,
            seed=seed,
            content_hashes=content_hashes,
        )
        raw = np.full(labels.size, np.nan)
        for fold in plan.folds:
            model = new_model()
            model.fit(features[fold.train], labels[fold.train])
            raw[fold.test] = _sensitive_probability(model, features[fold.test])
    except InputError as error:
        return Calibration(None, None, 0, f"not calibrated: {error}")
    tests = [fold.test for fold in plan.folds]
    scores, cross_fitted = {}, {}
    for method, fit in _FITTERS.items():
        out = np.full(labels.size, np.nan)
        for held in tests:
            rest = np.setdiff1d(np.arange(labels.size), held, assume_unique=True)
            out[held] = fit(raw[rest], labels[rest])(raw[held])
        scores[method], cross_fitted[method] = brier_score(labels, out), out
    chosen = min(METHODS, key=lambda m: (scores[m], METHODS.index(m)))
    return Calibration(
        _FITTERS[chosen](raw, labels),
        plan.grouping,
        len(plan.folds),
        plan.note,
        scores,
        labels,
        raw,
        cross_fitted[chosen],
    )
