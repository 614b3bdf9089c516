"""A predictor's benchmark figures: how its classifier did when cross-validated.

Drawn from the catalog the first time they are asked for and kept in the
server's folder under the run they show, so a predictor trained again (a new
run) gets new figures and old ones are never shown for it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from scdrugmap.errors import StoreError
from scdrugmap.predict.train import load_predictor
from scdrugmap.report.figures import plot_f1_bars, plot_metric_heatmap, plot_roc_pr
from scdrugmap.report.tables import summarise

PREDICTOR_FIGURES = {
    "roc_pr": "ROC and precision-recall curves of its cross-validated run (held-out cells)",
    "f1_by_dataset": "F1 of the sensitive class per data set in its cross-validated run",
    "f1_bars": "F1 of every embedding and classifier on the same split, baselines included",
}
# Two requests for a figure not drawn yet must not both write its files.
_DRAWING = threading.Lock()


def _run_of(store, name: str) -> dict:
    record, _ = load_predictor(store, name)
    checked = record.get("cross_validated")
    if not checked:
        raise StoreError(
            f"predictor {name!r} has no cross-validated run to draw; run `scdrugmap evaluate "
            f"--embedding {record['embedding']['key']} --classifier {record['classifier']}` "
            "and train it again"
        )
    return checked


def _draw(store, run: dict, figure: str, path: Path) -> Path | None:
    results = store.results(latest=False)
    if figure == "roc_pr":
        cells = store.query(
            "SELECT label, prob_sensitive FROM predictions WHERE run_id = ? AND label IS NOT NULL",
            [run["run_id"]],
        )
        mine = results[results["run_id"] == run["run_id"]].iloc[0]
        curves = cells.assign(
            split=mine["split"], row=f"{mine['embedding']} / {mine['classifier']}"
        )
        return plot_roc_pr(curves, path)
    if figure == "f1_by_dataset":
        return plot_metric_heatmap(results[results["run_id"] == run["run_id"]], path)
    latest = store.results()
    pooled = summarise(latest[latest["split"] == run["split"]], "pooled")
    return plot_f1_bars(pooled, path) if not pooled.empty else None


def predictor_figure(store, name: str, figure: str, fmt: str, cache: Path) -> Path:
    """The figure's file, drawn now if this run's copy is not kept yet."""
    run = _run_of(store, name)
    folder = cache / name / str(run["run_id"])
    path = folder / f"{figure}.{fmt}"
    with _DRAWING:
        if not path.exists() and _draw(store, run, figure, folder / f"{figure}.png") is None:
            raise StoreError(f"predictor {name!r}: its run has nothing to draw as {figure}")
    return path


def figure_list(store, name: str) -> list[dict]:
    """Which figures a predictor offers (none without a cross-validated run)."""
    try:
        _run_of(store, name)
    except StoreError:
        return []
    return [{"figure": f, "caption": c} for f, c in PREDICTOR_FIGURES.items()]
