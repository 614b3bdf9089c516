"""Reliability diagrams: does a probability of 0.8 mean that four in five cells are sensitive?

Each line joins, per equal-width bin of the probability of sensitivity (10 bins, as the
ECE in classify/metrics.py counts them), the bin's mean probability (x) and the share of
sensitive cells in it (y); a calibrated classifier lies on the diagonal. Marker areas
follow the bins' cell counts, so a far-off point resting on three cells reads as such.
Drawn from bin counts alone (`reliability_bins`), so a predictor's diagram needs only the
counts kept in its record, and a report's only the held-out predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.classify.metrics import ece_from_bins, reliability_bins
from scdrugmap.report.figures import _palette, new_figure, plain_label, save_figure

__all__ = ["Panel", "plot_reliability", "reliability_panels"]

# (panel title, [(line label, reliability bins), ...])
Panel = tuple[str, Sequence[tuple[str, dict]]]


def _points(bins: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.asarray(bins["n_cells"], dtype=float)
    kept = n > 0
    mean = np.asarray([m if m is not None else np.nan for m in bins["mean_prob"]], dtype=float)
    share = np.asarray(bins["n_sensitive"], dtype=float)[kept] / n[kept]
    return mean[kept], share, n[kept]


def plot_reliability(panels: Sequence[Panel], path: Path, title: str) -> Path | None:
    """One square panel per entry, one line per (label, bins), with its ECE in the legend;
    None when no panel has a cell. Writes `<stem>.png` and `<stem>.svg`."""
    panels = [(t, [(label, b) for label, b in lines if sum(b["n_cells"])]) for t, lines in panels]
    panels = [(t, lines) for t, lines in panels if lines]
    if not panels:
        return None
    columns = min(len(panels), 2)
    rows = -(-len(panels) // columns)
    figure = new_figure(4.6 * columns + 0.4, 4.4 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (panel_title, lines) in zip(axes, panels, strict=False):
        ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
        largest = max(max(b["n_cells"]) for _, b in lines)
        for colour, (label, bins) in zip(_palette(len(lines)), lines, strict=True):
            x, y, n = _points(bins)
            ax.plot(
                x,
                y,
                color=colour,
                marker="o",
                markersize=0,
                linewidth=1.2,
                label=plain_label(f"{label} (ECE {ece_from_bins(bins):.3f})", 56),
            )
            ax.scatter(x, y, s=12 + 140 * n / largest, color=colour, alpha=0.75, linewidths=0)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
        ax.set_xlabel("mean probability of sensitivity in the bin")
        ax.set_ylabel("share of sensitive cells in the bin")
        ax.set_title(plain_label(panel_title, 60), fontsize=10)
        ax.grid(color="#eeeeee", linewidth=0.6)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=11)
    return save_figure(figure, path)


def reliability_panels(curves: pd.DataFrame) -> list[Panel]:
    """Per split, a panel of the raw held-out probabilities and, where the runs calibrated,
    one of the calibrated ones; a line per embedding / classifier. `curves` is
    `curve_rows(...)` output (split, row, label, prob_sensitive, prob_calibrated)."""
    if curves.empty:
        return []
    panels: list[Panel] = []
    for split in sorted(curves["split"].unique()):
        mine = curves[curves["split"] == split]
        for column, when in (("prob_sensitive", "before"), ("prob_calibrated", "after")):
            if column not in mine.columns:
                continue
            lines = []
            for name in sorted(mine["row"].unique()):
                cells = mine[(mine["row"] == name) & mine[column].notna()]
                if len(cells):
                    bins = reliability_bins(cells["label"].to_numpy(int), cells[column].to_numpy())
                    lines.append((name, bins))
            if lines:
                panels.append((f"{when} calibration, split: {split}", lines))
    return panels
