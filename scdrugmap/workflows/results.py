"""The results tables people read: mean ± s.e.m. per configuration, pooled or per data set."""

from __future__ import annotations

import pandas as pd

from scdrugmap.report.tables import results_table, summarise
from scdrugmap.store.storage import Storage

__all__ = ["results_summary", "results_table", "summarise"]


def results_summary(store: Storage, scope: str = "pooled") -> pd.DataFrame:
    """One row per (embedding, classifier, split) of the latest runs, and data set when
    `scope` is 'dataset'; empty when nothing has run yet."""
    results = store.results()
    return summarise(results, scope=scope) if not results.empty else results
