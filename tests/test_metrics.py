"""Metrics: hand-computed values, and every undefined case is NaN with a reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from scdrugmap.classify.metrics import METRIC_NAMES, MetricValue, compute_metrics, mean_sem
from scdrugmap.errors import InputError

pytestmark = pytest.mark.filterwarnings("error")


def _values(metrics: dict[str, MetricValue]) -> dict[str, float]:
    return {name: m.value for name, m in metrics.items()}


def _assert_reasons_match_nan(metrics: dict[str, MetricValue]) -> None:
    for name, metric in metrics.items():
        if math.isnan(metric.value):
            assert metric.reason, name
        else:
            assert metric.reason is None, name


def test_hand_computed_values() -> None:
    # predicted at 0.5: [1, 1, 0, 1, 0] -> tp 2, fp 1, fn 1, tn 1
    metrics = compute_metrics(np.array([1, 1, 1, 0, 0]), np.array([0.9, 0.6, 0.2, 0.7, 0.1]))
    assert list(metrics) == list(METRIC_NAMES)
    expected = {
        "f1_sensitive": 2 / 3,
        "f1_chance": 2 * 3 / (2 * 3 + 2),  # every cell called sensitive: tp 3, fp 2
        "mcc": (2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2),
        "f1_macro": (2 / 3 + 1 / 2) / 2,
        "auroc": 4 / 6,
        "auprc": (1 + 2 / 3 + 3 / 4) / 3,
        "precision": 2 / 3,
        "recall": 2 / 3,
        "balanced_accuracy": (2 / 3 + 1 / 2) / 2,
        "accuracy": 3 / 5,
    }
    assert _values(metrics) == pytest.approx(expected)
    _assert_reasons_match_nan(metrics)


def test_threshold_is_inclusive_and_moves_predictions() -> None:
    y, prob = np.array([1, 0]), np.array([0.5, 0.3])
    assert compute_metrics(y, prob)["accuracy"].value == 1.0
    assert compute_metrics(y, prob, threshold=0.2)["precision"].value == 0.5


def test_agrees_with_sklearn_when_everything_is_defined() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=200)
    prob = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    predicted = (prob >= 0.5).astype(int)
    got = _values(compute_metrics(y, prob))
    assert got == pytest.approx(
        {
            "f1_sensitive": f1_score(y, predicted),
            "f1_chance": f1_score(y, np.ones_like(y)),
            "mcc": matthews_corrcoef(y, predicted),
            "f1_macro": f1_score(y, predicted, average="macro"),
            "auroc": roc_auc_score(y, prob),
            "auprc": average_precision_score(y, prob),
            "precision": precision_score(y, predicted),
            "recall": recall_score(y, predicted),
            "balanced_accuracy": balanced_accuracy_score(y, predicted),
            "accuracy": np.mean(y == predicted),
        }
    )


def test_only_resistant_cells() -> None:
    metrics = compute_metrics(np.array([0, 0, 0]), np.array([0.2, 0.7, 0.1]))
    _assert_reasons_match_nan(metrics)
    for name in ("auroc", "mcc", "f1_macro", "balanced_accuracy"):
        assert math.isnan(metrics[name].value)
        assert "only class resistant" in metrics[name].reason
    for name in ("recall", "f1_sensitive", "f1_chance", "auprc"):
        assert math.isnan(metrics[name].value)
        assert "no sensitive cell" in metrics[name].reason
    assert metrics["auroc"].reason == "test cells hold only class resistant: AUROC undefined"
    # one cell was predicted sensitive, wrongly: a real 0, not undefined
    assert metrics["precision"].value == 0.0
    assert metrics["accuracy"].value == pytest.approx(2 / 3)


def test_only_sensitive_cells() -> None:
    metrics = compute_metrics(np.array([1, 1]), np.array([0.8, 0.3]))
    _assert_reasons_match_nan(metrics)
    for name in ("auroc", "f1_macro", "balanced_accuracy"):
        assert math.isnan(metrics[name].value)
        assert "only class sensitive" in metrics[name].reason
    assert metrics["precision"].value == 1.0
    assert metrics["recall"].value == 0.5
    assert metrics["f1_sensitive"].value == pytest.approx(2 / 3)
    assert metrics["f1_chance"].value == 1.0
    assert metrics["auprc"].value == 1.0


def test_nothing_predicted_sensitive() -> None:
    metrics = compute_metrics(np.array([1, 0, 0]), np.array([0.1, 0.2, 0.3]))
    _assert_reasons_match_nan(metrics)
    assert math.isnan(metrics["precision"].value)
    assert "no test cell predicted sensitive" in metrics["precision"].reason
    assert metrics["recall"].value == 0.0
    # sensitive cells exist and all were missed: F1 is a real 0
    assert metrics["f1_sensitive"].value == 0.0
    assert metrics["f1_macro"].value == pytest.approx((0 + 0.8) / 2)
    # one call for every cell says nothing about the labels: MCC 0, as sklearn has it
    assert metrics["mcc"].value == 0.0 == matthews_corrcoef([1, 0, 0], [0, 0, 0])


def test_shuffled_labels_score_f1_near_chance_and_mcc_near_zero() -> None:
    # 70 % sensitive and probabilities unrelated to the labels: an F1 of about 0.7 looks
    # good until set beside f1_chance, which calling every cell sensitive beats
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.7).astype(int)
    prob = np.clip(rng.normal(0.6, 0.2, 2000), 0, 1)
    metrics = _values(compute_metrics(y, prob))
    assert metrics["f1_sensitive"] > 0.6
    assert metrics["f1_sensitive"] < metrics["f1_chance"]
    assert abs(metrics["mcc"]) < 0.05 and abs(metrics["auroc"] - 0.5) < 0.05


def test_no_test_cells() -> None:
    metrics = compute_metrics(np.array([], dtype=np.int8), np.array([]))
    assert all(math.isnan(m.value) and "no test cells" in m.reason for m in metrics.values())


@pytest.mark.parametrize(
    ("y", "prob", "match"),
    [
        ([1, 0], [0.5], "one probability per test cell"),
        ([1, 2], [0.5, 0.5], "only 0"),
        ([1, 0], [0.5, np.nan], "finite probabilities"),
        ([1, 0], [1.5, 0.5], "finite probabilities"),
    ],
)
def test_bad_input(y, prob, match) -> None:
    with pytest.raises(InputError, match=match):
        compute_metrics(np.array(y), np.array(prob))


def test_mean_sem() -> None:
    mean, sem, n = mean_sem([1.0, 2.0, 3.0, math.nan])
    assert (mean, n) == (2.0, 3)
    assert sem == pytest.approx(1 / math.sqrt(3))
    mean, sem, n = mean_sem([5.0])
    assert (mean, n) == (5.0, 1) and math.isnan(sem)
    for empty in ([], [math.nan]):
        mean, sem, n = mean_sem(empty)
        assert math.isnan(mean) and math.isnan(sem) and n == 0
