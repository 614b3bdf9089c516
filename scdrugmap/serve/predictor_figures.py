"""A predictor's benchmark figures: how its classifier did when cross-validated.

Drawn from the catalog the first time they are asked for and kept in the
server's folder under the run they show, so a predictor trained again (a new
run) gets new figures and old ones are never shown for it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from scdrugmap.errors import StoreError
from scdrugmap.report.figures import plot_f1_bars, plot_metric_heatmap, plot_roc_pr
from scdrugmap.report.html import curve_rows
from scdrugmap.report.tables import summarise
from scdrugmap.workflows.predict import read_predictor_record

PREDICTOR_FIGURES = {
    "roc_pr": "ROC and precision-recall curves of its cross-validated run (held-out cells)",
    "f1_by_dataset": "F1 of the sensitive class per data set in its cross-validated run",
    "f1_bars": "F1 of every embedding and classifier on the same split, baselines included",
}
# Two requests for a figure not drawn yet must not both write its files.
_DRAWING = threading.Lock()


def _run_of(store, name: str) -> dict:
    record = read_predictor_record(store, name)
    checked = record.get("cross_validated")
    if not checked:
        raise StoreError(
            f"predictor {name!r} has no cross-validated run to draw; run `scdrugmap evaluate "
            f"--embedding {record['embedding']['key']} --classifier {record['classifier']}` "
            "and train it again"
        )
    return checked


def _draw(store, run: dict, figure: str, path: Path) -> Path | None:
    if figure == "f1_bars":
        latest = store.results()
        pooled = summarise(latest[latest["split"] == run["split"]], "pooled")
        return plot_f1_bars(pooled, path) if not pooled.empty else None
    results = store.results(latest=False)
    mine = results[results["run_id"] == run["run_id"]]
    if figure == "f1_by_dataset":
        return plot_metric_heatmap(mine, path)
    return plot_roc_pr(curve_rows(mine, store.held_out_predictions([run["run_id"]])), path)


def predictor_figure(store, name: str, figure: str, fmt: str, cache: Path) -> Path:
    """The figure's file, drawn now if this run's copy is not kept yet."""
    run = _run_of(store, name)
    folder = cache / name / str(run["run_id"])
    path = folder / f"{figure}.{fmt}"
    with _DRAWING:
        if not path.exists() and _draw(store, run, figure, folder / f"{figure}.png") is None:
            raise StoreError(f"predictor {name!r}: its run has nothing to draw as {figure}")
    return path


def figure_list(record: dict) -> list[dict]:
    """Which figures a predictor offers (none without a cross-validated run)."""
    if not record.get("cross_validated"):
        return []
    return [{"figure": f, "caption": c} for f, c in PREDICTOR_FIGURES.items()]
