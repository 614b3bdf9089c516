"""The results tables people read: mean ± s.e.m. per configuration, pooled or per data set."""

from __future__ import annotations

import os

import pandas as pd

from scdrugmap.report.tables import calibration_table, results_table, summarise
from scdrugmap.store.storage import Storage

__all__ = ["calibration_table", "open_results", "results_summary", "results_table", "summarise"]


def open_results(path: str | os.PathLike | None = None) -> Storage:
    """The store at `path` (default as for `open_store`), opened to read its results.

    `scdrugmap.Store` brings every workflow with it, and with them torch and
    scikit-learn (seconds); reading results needs only the storage underneath, so
    `scdrugmap results` opens the store with this and starts in a fraction of that."""
    return Storage(path)


def results_summary(store: Storage, scope: str = "pooled") -> pd.DataFrame:
    """One row per (embedding, classifier, split, control) of the latest runs, and data
    set when `scope` is 'dataset'; empty when nothing has run yet. `optimistic` marks the
    rows whose folds split cells of one sample, for scripts that read no table."""
    results = store.results()
    if results.empty:
        return results
    summary = summarise(results, scope=scope)
    return summary.assign(optimistic=summary["grouping"] == "cell")
