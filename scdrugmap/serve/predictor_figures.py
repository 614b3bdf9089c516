"""A predictor's benchmark figures: how its classifier did when cross-validated, and how
well its probabilities are calibrated.

The benchmark figures are drawn from the catalog the first time they are asked for and
kept in the server's folder under the run they show, so a predictor trained again (a new
run) gets new figures and old ones are never shown for it. The reliability diagram is
drawn from the bin counts the predictor's record keeps (its training cells' out-of-fold
probabilities before and after calibration), kept under the predictor's creation time.
"""

from __future__ import annotations

import threading
from pathlib import Path

from scdrugmap.errors import StoreError
from scdrugmap.report.figures import plot_f1_bars, plot_metric_heatmap, plot_roc_pr
from scdrugmap.report.html import curve_rows
from scdrugmap.report.reliability import plot_reliability
from scdrugmap.report.tables import summarise
from scdrugmap.workflows.predict import read_predictor_record

BENCHMARK_FIGURES = {
    "roc_pr": "ROC and precision-recall curves of its cross-validated run (held-out cells)",
    "f1_by_dataset": "F1 of the sensitive class per data set in its cross-validated run",
    "f1_bars": "F1 of every embedding and classifier on the same split, baselines included",
}
RELIABILITY = {
    "reliability": "Reliability of its probabilities: the share of sensitive training cells "
    "against their mean out-of-fold probability in 10 equal-width bins, before and after "
    "its calibrator (chosen and fitted by cross-validation on the training cells)",
}
PREDICTOR_FIGURES = {**BENCHMARK_FIGURES, **RELIABILITY}
# Two requests for a figure not drawn yet must not both write its files.
_DRAWING = threading.Lock()


def _run_of(record: dict) -> dict:
    checked = record.get("cross_validated")
    if not checked:
        raise StoreError(
            f"predictor {record['name']!r} has no cross-validated run to draw; run `scdrugmap "
            f"evaluate --embedding {record['embedding']['key']} --classifier "
            f"{record['classifier']}` and train it again"
        )
    return checked


def _reliability(record: dict) -> dict:
    calibration = record.get("calibration") or {}
    if not calibration.get("reliability"):
        reason = calibration.get("note") or "it was trained before predictors were calibrated"
        raise StoreError(
            f"predictor {record['name']!r} has no reliability diagram: {reason}; train it again"
        )
    return calibration


def _draw_reliability(record: dict, path: Path) -> Path | None:
    calibration = _reliability(record)
    bins = calibration["reliability"]
    lines = [
        ("before calibration", bins["raw"]),
        (f"after calibration ({calibration['method']})", bins["calibrated"]),
    ]
    grouping = calibration.get("grouping")
    title = f"{record['name']}: training cells out of fold" + (
        f", held out by {grouping}" if grouping else ""
    )
    return plot_reliability([("out-of-fold probabilities", lines)], path, title)


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
    """The figure's file, drawn now if this run's (or this fit's) copy is not kept yet."""
    record = read_predictor_record(store, name)
    if figure in RELIABILITY:
        _reliability(record)
        stamp = "".join(c for c in str(record["created_at"]) if c.isalnum())
        folder = cache / name / f"fit-{stamp}"
    else:
        run = _run_of(record)
        folder = cache / name / str(run["run_id"])
    path = folder / f"{figure}.{fmt}"
    with _DRAWING:
        if not path.exists():
            png = folder / f"{figure}.png"
            drawn = (
                _draw_reliability(record, png)
                if figure in RELIABILITY
                else _draw(store, run, figure, png)
            )
            if drawn is None:
                raise StoreError(f"predictor {name!r}: nothing to draw as {figure}")
    return path


def figure_list(record: dict) -> list[dict]:
    """Which figures a predictor offers: its benchmark figures with a cross-validated run,
    its reliability diagram when it was calibrated."""
    offered = dict(BENCHMARK_FIGURES) if record.get("cross_validated") else {}
    if (record.get("calibration") or {}).get("reliability"):
        offered |= RELIABILITY
    return [{"figure": f, "caption": c} for f, c in offered.items()]
