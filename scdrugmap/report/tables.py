"""Fold-level results condensed into mean ± s.e.m. tables.

The results table holds one row per fold and metric; readers need one row per
configuration (embedding, classifier, split). An undefined metric is NaN with a
reason, so the summaries ignore NaN folds but never hide them: how many folds
went into a mean and why the others are missing travel with the numbers.

Every row also says what its folds held out whole (`grouping`: a cell-level row is
marked optimistic) and whether it is a label-shuffled control, which sorts next to
its real run so that the chance level is read beside the result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from scdrugmap.classify.metrics import CALIBRATED_SUFFIX, CALIBRATION_METRIC_NAMES, METRIC_NAMES

__all__ = [
    "CALIBRATION_METRICS",
    "DEFAULT_METRICS",
    "LOWER_IS_BETTER",
    "METRICS",
    "METRIC_LABELS",
    "calibration_table",
    "format_mean_sem",
    "results_table",
    "summarise",
    "table_from_summary",
]

CALIBRATION_METRICS = tuple(
    f"{name}{suffix}" for name in CALIBRATION_METRIC_NAMES for suffix in ("", CALIBRATED_SUFFIX)
)
METRICS = (*METRIC_NAMES, *CALIBRATION_METRICS)
# Errors, not scores: the best of them is the lowest.
LOWER_IS_BETTER = frozenset(CALIBRATION_METRICS)
# F1 only beside its chance level and MCC: F1 rises with prevalence whatever the model.
DEFAULT_METRICS = (
    "f1_sensitive",
    "f1_chance",
    "mcc",
    "f1_macro",
    "auroc",
    "auprc",
    "balanced_accuracy",
)
METRIC_LABELS = {
    "f1_sensitive": "F1 (sensitive)",
    "f1_chance": "F1 if all called sensitive",
    "mcc": "MCC",
    "f1_macro": "F1 (macro)",
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "precision": "precision",
    "recall": "recall",
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "ece": "ECE",
    "ece_calibrated": "ECE, calibrated",
    "brier": "Brier",
    "brier_calibrated": "Brier, calibrated",
}
CONFIG = ("embedding", "classifier", "split")
# Kept apart when present: runs on other cell selections (`--where`), controls and real
# runs; and the grouping, which is one per run and travels with its numbers.
RUN_KEYS = ("selection", "control", "grouping")
SCOPES = ("pooled", "dataset")
OPTIMISTIC = "cell (optimistic)"
_REQUIRED = (*CONFIG, "fold", "scope", "dataset_id", "metric", "value", "reason")


def _keys(scope: str, columns: Iterable[str]) -> list[str]:
    """Summary keys; runs on different cell selections or controls are never pooled."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    present = set(columns)
    config = [*CONFIG, *(k for k in RUN_KEYS if k in present)]
    return [*config, "dataset_id"] if scope == "dataset" else config


def _metric_order(names: Iterable[str]) -> list[str]:
    present = set(names)
    return [m for m in METRICS if m in present] + sorted(present - set(METRICS))


def _fold_columns(results: pd.DataFrame) -> list[str]:
    # Two runs of one configuration are different folds, not the same fold twice.
    return ["run_id", "fold"] if "run_id" in results.columns else ["fold"]


def _scope_rows(results: pd.DataFrame, scope: str) -> pd.DataFrame:
    missing = [c for c in _REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {', '.join(missing)}")
    rows = results.loc[results["scope"] == scope].copy()
    rows["value"] = pd.to_numeric(rows["value"], errors="coerce").astype(float)
    return rows


def _notes(
    nan_rows: pd.DataFrame, keys: list[str], folds: list[str], n_folds: pd.Series
) -> pd.Series:
    """'auroc: only one class in test fold (2 of 5 folds)' per metric and reason, joined."""
    if nan_rows.empty:
        return pd.Series("", index=n_folds.index, dtype=object)
    nan_rows = nan_rows.assign(
        reason=nan_rows["reason"].where(nan_rows["reason"].notna(), "no reason given")
    )
    counts = (
        nan_rows.drop_duplicates([*keys, "metric", "reason", *folds])
        .groupby([*keys, "metric", "reason"], dropna=False)
        .size()
    )
    order = {m: i for i, m in enumerate(_metric_order(counts.index.get_level_values("metric")))}
    notes: dict[tuple, list[tuple[int, str]]] = {}
    for (*key, metric, reason), count in counts.items():
        total = n_folds.loc[tuple(key)]
        text = f"{metric}: {reason} ({count} of {total} folds)"
        notes.setdefault(tuple(key), []).append((order[metric], text))
    return pd.Series(
        ["; ".join(t for _, t in sorted(notes.get(k, []))) for k in n_folds.index],
        index=n_folds.index,
        dtype=object,
    )


def summarise(results: pd.DataFrame, scope: str = "pooled") -> pd.DataFrame:
    """One row per configuration (and data set for scope='dataset'), metrics as mean and s.e.m.

    Columns: the keys, `<metric>_mean` and `<metric>_sem` per metric present,
    `n_folds` (folds seen), `nan_folds` (folds with at least one NaN metric) and
    `notes` (each NaN reason with its metric and fold count). NaN folds are left
    out of mean and s.e.m. (ddof=1); the s.e.m. is NaN below two finite folds.
    """
    keys = _keys(scope, results.columns)
    rows = _scope_rows(results, scope)
    for key in ("selection", "control"):
        if key in keys:
            rows[key] = rows[key].fillna("")
    if "grouping" in keys:
        rows["grouping"] = rows["grouping"].fillna("unrecorded")
    folds = _fold_columns(rows)
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "n_folds", "nan_folds", "notes"])

    stats = rows.groupby([*keys, "metric"], dropna=False)["value"].agg(["mean", "std", "count"])
    stats["sem"] = (stats["std"] / np.sqrt(stats["count"])).where(stats["count"] >= 2)
    wide = stats[["mean", "sem"]].unstack("metric")
    columns = {}
    for metric in _metric_order(wide.columns.get_level_values("metric")):
        for stat in ("mean", "sem"):
            columns[f"{metric}_{stat}"] = wide[(stat, metric)]
    summary = pd.DataFrame(columns, index=wide.index)

    n_folds = rows.drop_duplicates([*keys, *folds]).groupby(keys, dropna=False).size()
    nan_rows = rows.loc[rows["value"].isna()]
    nan_folds = nan_rows.drop_duplicates([*keys, *folds]).groupby(keys, dropna=False).size()
    summary["n_folds"] = n_folds.reindex(summary.index).astype(int)
    summary["nan_folds"] = nan_folds.reindex(summary.index, fill_value=0).astype(int)
    summary["notes"] = _notes(nan_rows, keys, folds, n_folds).reindex(summary.index)
    return summary.reset_index().sort_values(keys, kind="stable", ignore_index=True)


def format_mean_sem(mean: float | None, sem: float | None, digits: int = 3) -> str:
    """'0.912 ± 0.011'; 'n/a' for an undefined mean; the mean alone when the s.e.m. is undefined."""
    if mean is None or math.isnan(mean):
        return "n/a"
    if sem is None or math.isnan(sem):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sem:.{digits}f}"


def table_from_summary(
    summary: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    digits: int = 3,
    *,
    sort: bool = True,
) -> pd.DataFrame:
    """Display strings from a `summarise` frame; rows keep the summary's index, for styling.

    `sort=False` keeps the summary's order (a ranking the caller made)."""
    keys = [k for k in (*CONFIG, *RUN_KEYS, "dataset_id") if k in summary.columns]
    for optional in ("selection", "control"):
        if optional in keys and not summary[optional].fillna("").astype(bool).any():
            keys.remove(optional)
    table = summary[keys].copy()
    if "grouping" in keys:
        table["grouping"] = table["grouping"].replace({"cell": OPTIMISTIC})
    table["folds"] = summary["n_folds"]
    for metric in metrics:
        mean, sem = summary.get(f"{metric}_mean"), summary.get(f"{metric}_sem")
        if mean is None:
            table[metric] = "n/a"
            continue
        table[metric] = [format_mean_sem(m, s, digits) for m, s in zip(mean, sem, strict=True)]
    table["notes"] = summary["notes"]
    if not sort:
        return table
    order = ["split", "dataset_id", "embedding", "classifier", "selection", "control"]
    return table.sort_values([k for k in order if k in keys], kind="stable")


def results_table(
    results: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    scope: str = "pooled",
) -> pd.DataFrame:
    """Human-readable table: one row per configuration, 'mean ± s.e.m.' per metric.

    Sorted by split (then data set), embedding and classifier, so that the
    embeddings compared under one split sit together.
    """
    return table_from_summary(summarise(results, scope), metrics).reset_index(drop=True)


def calibration_table(results: pd.DataFrame, *, scope: str = "pooled") -> pd.DataFrame:
    """How well calibrated the held-out probabilities were: ECE and Brier score per
    configuration before and after each fold's calibrator, 'mean ± s.e.m.' over folds, for
    the runs that recorded them (a table of its own: the results table is full)."""
    rows = results.loc[results["metric"].isin(CALIBRATION_METRICS)]
    if rows.empty:
        return pd.DataFrame()
    return table_from_summary(summarise(rows, scope), CALIBRATION_METRICS).reset_index(drop=True)
