"""Report: an HTML page with figures of the latest results."""

from __future__ import annotations

import os
from pathlib import Path

from scdrugmap.errors import StoreError
from scdrugmap.report.html import write_report
from scdrugmap.store.storage import Storage


def report(store: Storage, out_dir: str | os.PathLike) -> Path:
    """An HTML report (with figures) of the latest results."""
    results = store.results()
    if results.empty:
        raise StoreError(f"{store.path}: no results yet; run `scdrugmap evaluate` first")
    run_ids = set(results["run_id"])
    notes = sorted(
        {
            f"{r.embedding} × {r.classifier} × {r.split}: {r.note}"
            for r in store.runs().itertuples()
            if r.run_id in run_ids and isinstance(r.note, str) and r.note
        }
    )
    predictions = store.held_out_predictions(sorted(run_ids))
    return write_report(results, Path(out_dir), notes=notes, predictions=predictions)
