"""Results read against chance: each real run beside its shuffled control, ranked by
AUROC and MCC, and the held-out data sets a fitted baseline had already seen.

F1 of the sensitive class rises with the share of sensitive cells whatever the model
does, so a ranking by F1 rewards prevalence; AUROC and MCC do not. A shuffled control
scored on the same folds shows the level a result must beat on these very cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CONTROL_METRICS = ("auroc", "mcc")
RANK_METRICS = ("auroc", "mcc")


def _pair_keys(summary: pd.DataFrame) -> list[str]:
    keys = ["embedding", "classifier", "split", "selection", "dataset_id"]
    return [k for k in keys if k in summary.columns]


def with_controls(summary: pd.DataFrame) -> pd.DataFrame:
    """The real rows of a `summarise` frame, each with its shuffled control's AUROC and
    MCC as `<metric>_shuffled_mean` / `_sem` (NaN where no control was run)."""
    if "control" not in summary.columns:
        return summary
    is_control = summary["control"].fillna("") != ""
    real, controls = summary.loc[~is_control], summary.loc[is_control]
    keys = _pair_keys(summary)
    columns = {
        f"{m}_{stat}": f"{m}_shuffled_{stat}" for m in CONTROL_METRICS for stat in ("mean", "sem")
    }
    present = {k: v for k, v in columns.items() if k in controls.columns}
    paired = controls[[*keys, *present]].rename(columns=present).drop_duplicates(keys)
    merged = real.reset_index(drop=True).merge(paired, on=keys, how="left")
    for column in present.values():
        merged[column] = merged[column].astype(float)
    return merged


def controlled_metrics(summary: pd.DataFrame) -> tuple[str, ...]:
    """The control columns `with_controls` added, for the tables to show."""
    return tuple(
        f"{m}_shuffled" for m in CONTROL_METRICS if f"{m}_shuffled_mean" in summary.columns
    )


def ranked(summary: pd.DataFrame) -> pd.DataFrame:
    """Within each split (and data set), best AUROC first, MCC breaking ties."""
    groups = [k for k in ("split", "dataset_id") if k in summary.columns]
    by = [f"{m}_mean" for m in RANK_METRICS if f"{m}_mean" in summary.columns]
    return summary.sort_values(
        [*groups, *by],
        ascending=[True] * len(groups) + [False] * len(by),
        na_position="last",
        kind="stable",
    )


def fit_overlap_notes(results: pd.DataFrame) -> list[str]:
    """One note per cross-dataset run whose held-out data sets were in its embedding's
    fit: a pca or hvg fitted on every data set has seen the held-out cells' genes, so
    its score is not that of an unseen data set."""
    needed = {"fit_datasets", "split", "fold_name", "run_id"}
    if not needed <= set(results.columns):
        return []
    runs = results.loc[results["split"] == "cross-dataset"]
    notes = []
    for _, rows in runs.groupby("run_id", sort=True):
        fitted = rows["fit_datasets"].iloc[0]
        if not isinstance(fitted, list | tuple | np.ndarray) or not len(fitted):
            continue  # a checkpoint model, or fits made within each fold
        seen = sorted(set(rows["fold_name"].astype(str)) & {str(d) for d in fitted})
        if not seen:
            continue
        first = rows.iloc[0]
        control = f" ({first['control']} control)" if first.get("control") else ""
        notes.append(
            f"{first['embedding']} × {first['classifier']} × cross-dataset{control}: "
            f"held-out data sets {', '.join(seen)} were in the embedding's fit, so they "
            "were not unseen; `scdrugmap benchmark --fit-within-folds` fits per fold"
        )
    return notes
