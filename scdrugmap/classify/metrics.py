"""Metrics of one test set, with undefined values reported as NaN and a reason.

A metric that cannot be computed on a test set is NaN with a sentence saying
why, never 0: a 0 would read as "the classifier failed" when in truth the test
set could not measure it (DESIGN.md, "Honest evaluation"). Where a class is
needed, it is the sensitive class (label 1). A cell is predicted sensitive when
its probability is >= `threshold`.

Rules (tp, fp, fn: sensitive-class counts at the threshold):

- no test cells: every metric NaN.
- accuracy: defined whenever there are test cells.
- precision = tp / (tp + fp): NaN when no cell is predicted sensitive.
- recall = tp / (tp + fn): NaN when the test cells hold no sensitive cell.
- f1_sensitive = 2 tp / (2 tp + fp + fn): NaN when the test cells hold no
  sensitive cell (there is nothing to find, as for recall). When sensitive
  cells exist but none is predicted, it is a real 0: the classifier missed
  every one of them, which is a failure and not an unmeasurable case.
- f1_macro (mean of both classes' F1), balanced_accuracy (mean of both
  classes' recall) and auroc: NaN unless both classes are in the test cells.
- auprc (average precision of the sensitive class): NaN when the test cells
  hold no sensitive cell; with only sensitive cells it is 1 by definition.
- mcc (Matthews correlation of calls and labels): NaN unless both classes are
  in the test cells. When every cell gets one call it is 0, not NaN: such calls
  are measurable and carry no information, which is what 0 says.
- f1_chance: the F1 of the sensitive class had every test cell been called
  sensitive, 2 n_s / (2 n_s + n_r). F1 rises with the share of sensitive cells
  whatever the classifier does (a label-shuffled run can score 0.7), so F1 means
  something only next to this; NaN when the test cells hold no sensitive cell.

Calibration (`calibration_metrics`): how far the probabilities are from the share of
sensitive cells among the cells given them; both are defined whenever there are test
cells, with one class too, and lower is better.

- ece, the expected calibration error: the probabilities of sensitivity are put in
  CALIBRATION_BINS = 10 equal-width bins of [0, 1] ([0, 0.1), ..., [0.9, 1.0], 1.0 in
  the last), and ECE = sum over bins of (cells in the bin / all cells) x |mean
  probability in the bin - share of sensitive cells in the bin|.
- brier: the mean of (probability - label)^2.
- `<name>_calibrated`: the same of the probabilities after a calibrator fitted on the
  fold's training cells only (classify/calibration.py).

`wilson_interval` gives the 95 % Wilson score interval of a share (k of n), for the share
of a sample's cells called sensitive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scdrugmap.classify.labels import CLASS_NAMES
from scdrugmap.errors import InputError

METRIC_NAMES = (
    "f1_sensitive",
    "f1_chance",
    "mcc",
    "f1_macro",
    "auroc",
    "auprc",
    "precision",
    "recall",
    "balanced_accuracy",
    "accuracy",
)

CALIBRATION_BINS = 10
CALIBRATION_METRIC_NAMES = ("ece", "brier")
CALIBRATED_SUFFIX = "_calibrated"
# The two-sided 95 % normal quantile, for Wilson intervals.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class MetricValue:
    value: float
    reason: str | None

    @classmethod
    def undefined(cls, reason: str) -> MetricValue:
        return cls(math.nan, reason)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn)


def _mcc(tp: int, fp: int, fn: int, tn: int) -> float:
    """Matthews correlation; 0 when all calls are one class (the product below is 0)."""
    denominator = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def _validated(y_true: np.ndarray, prob_sensitive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    prob = np.asarray(prob_sensitive, dtype=np.float64).ravel()
    if y.shape != prob.shape:
        raise InputError(
            f"y_true holds {y.size} labels but prob_sensitive holds {prob.size} values; "
            "pass one probability per test cell"
        )
    if not np.isin(y, (0, 1)).all():
        raise InputError("y_true must hold only 0 (resistant) and 1 (sensitive)")
    if not (np.isfinite(prob).all() and (prob >= 0).all() and (prob <= 1).all()):
        raise InputError("prob_sensitive must hold finite probabilities in [0, 1]")
    return y.astype(np.int8), prob


def compute_metrics(
    y_true: np.ndarray, prob_sensitive: np.ndarray, threshold: float = 0.5
) -> dict[str, MetricValue]:
    """Every metric of METRIC_NAMES for one test set, in that order."""
    y, prob = _validated(y_true, prob_sensitive)
    if y.size == 0:
        return {
            name: MetricValue.undefined(f"no test cells: {name} undefined") for name in METRIC_NAMES
        }
    predicted = prob >= threshold
    truth = y == 1
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    tn = int(np.sum(~predicted & ~truth))
    present = sorted({int(v) for v in np.unique(y)})
    one_class = (
        f"test cells hold only class {CLASS_NAMES[present[0]]}" if len(present) == 1 else None
    )
    no_sensitive = "test cells hold no sensitive cell" if fn + tp == 0 else None

    # Imported here so that the metric names can be read without loading sklearn.
    from sklearn.metrics import average_precision_score, roc_auc_score

    metrics: dict[str, MetricValue] = {}
    metrics["f1_sensitive"] = (
        MetricValue.undefined(f"{no_sensitive}: F1 of the sensitive class undefined")
        if no_sensitive
        else MetricValue(_f1(tp, fp, fn), None)
    )
    metrics["f1_chance"] = (
        MetricValue.undefined(f"{no_sensitive}: chance F1 undefined")
        if no_sensitive
        else MetricValue(_f1(tp + fn, fp + tn, 0), None)
    )
    if one_class:
        for name, label in (("mcc", "MCC"), ("f1_macro", "macro F1"), ("auroc", "AUROC")):
            metrics[name] = MetricValue.undefined(f"{one_class}: {label} undefined")
    else:
        metrics["mcc"] = MetricValue(_mcc(tp, fp, fn, tn), None)
        metrics["f1_macro"] = MetricValue((_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2, None)
        metrics["auroc"] = MetricValue(float(roc_auc_score(y, prob)), None)
    metrics["auprc"] = (
        MetricValue.undefined(f"{no_sensitive}: AUPRC undefined")
        if no_sensitive
        else MetricValue(float(average_precision_score(y, prob)), None)
    )
    metrics["precision"] = (
        MetricValue.undefined(
            f"no test cell predicted sensitive at threshold {threshold:g}: precision undefined"
        )
        if tp + fp == 0
        else MetricValue(tp / (tp + fp), None)
    )
    metrics["recall"] = (
        MetricValue.undefined(f"{no_sensitive}: recall undefined")
        if no_sensitive
        else MetricValue(tp / (tp + fn), None)
    )
    metrics["balanced_accuracy"] = (
        MetricValue.undefined(f"{one_class}: balanced accuracy undefined")
        if one_class
        else MetricValue((tp / (tp + fn) + tn / (tn + fp)) / 2, None)
    )
    metrics["accuracy"] = MetricValue((tp + tn) / y.size, None)
    return {name: metrics[name] for name in METRIC_NAMES}


def mean_sem(values: Sequence[float]) -> tuple[float, float, int]:
    """NaN-ignoring mean, standard error of the mean (ddof=1) and the count used.

    Undefined fold values are left out rather than counted as 0; the count says
    how many folds the mean rests on. The s.e.m. is NaN below two values.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    n = int(finite.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(finite.mean())
    sem = float(finite.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return mean, sem, n


def _bin_of(prob: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins of [0, 1]; a probability of exactly 1 falls in the last."""
    return np.minimum((prob * n_bins).astype(np.int64), n_bins - 1)


def reliability_bins(
    y_true: np.ndarray, prob_sensitive: np.ndarray, n_bins: int = CALIBRATION_BINS
) -> dict[str, list]:
    """Per equal-width bin of the probability of sensitivity: its edges, how many cells
    fell in it, how many of them are sensitive, and their mean probability (None for an
    empty bin). Enough to draw a reliability diagram, or compute ECE, without the cells."""
    y, prob = _validated(y_true, prob_sensitive)
    bins = _bin_of(prob, n_bins)
    n_cells = np.bincount(bins, minlength=n_bins)
    n_sensitive = np.bincount(bins, weights=y, minlength=n_bins)
    sums = np.bincount(bins, weights=prob, minlength=n_bins)
    return {
        "edges": [i / n_bins for i in range(n_bins + 1)],
        "n_cells": [int(n) for n in n_cells],
        "n_sensitive": [int(n) for n in n_sensitive],
        "mean_prob": [float(s / n) if n else None for s, n in zip(sums, n_cells, strict=True)],
    }


def ece_from_bins(bins: dict[str, list]) -> float:
    """The expected calibration error of `reliability_bins` (NaN without cells)."""
    total = sum(bins["n_cells"])
    if total == 0:
        return math.nan
    return float(
        sum(
            n * abs(mean - k / n)
            for n, k, mean in zip(bins["n_cells"], bins["n_sensitive"], bins["mean_prob"])
            if n
        )
        / total
    )


def expected_calibration_error(
    y_true: np.ndarray, prob_sensitive: np.ndarray, n_bins: int = CALIBRATION_BINS
) -> float:
    """ECE over `n_bins` equal-width bins of the probability of sensitivity (see above)."""
    return ece_from_bins(reliability_bins(y_true, prob_sensitive, n_bins))


def brier_score(y_true: np.ndarray, prob_sensitive: np.ndarray) -> float:
    """Mean squared difference of probability and label (NaN without cells)."""
    y, prob = _validated(y_true, prob_sensitive)
    return float(np.mean((prob - y) ** 2)) if y.size else math.nan


def calibration_metrics(
    y_true: np.ndarray, prob_sensitive: np.ndarray, suffix: str = ""
) -> dict[str, MetricValue]:
    """ece and brier of one test set, named `<metric><suffix>`."""
    y, prob = _validated(y_true, prob_sensitive)
    if y.size == 0:
        return {
            f"{name}{suffix}": MetricValue.undefined(f"no test cells: {name} undefined")
            for name in CALIBRATION_METRIC_NAMES
        }
    return {
        f"ece{suffix}": MetricValue(expected_calibration_error(y, prob), None),
        f"brier{suffix}": MetricValue(brier_score(y, prob), None),
    }


def wilson_interval(
    successes: np.ndarray, n: np.ndarray, z: float = Z_95
) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of the share `successes / n` (95 % by default), NaN
    where n is 0. Unlike the normal approximation it stays inside [0, 1] and is not
    zero-width at a share of 0 or 1, which matters for small samples."""
    k = np.asarray(successes, dtype=np.float64)
    count = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = k / count
        z2 = z * z
        denominator = 1.0 + z2 / count
        centre = (share + z2 / (2 * count)) / denominator
        half = z / denominator * np.sqrt(share * (1 - share) / count + z2 / (4 * count * count))
        low = np.where(count > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        high = np.where(count > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high
