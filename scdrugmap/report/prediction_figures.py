"""Figures of one prediction: where the cells lie and how sure the predictor is per sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps

from scdrugmap.report.figures import new_figure, plain_label, save_figure

# More samples than this are drawn as the largest ones plus one panel for the rest,
# so the figure stays readable.
MAX_SAMPLE_PANELS = 12
_BINS = np.linspace(0.0, 1.0, 21)
# Cells with no call (NaN probability) stay on the map, in grey.
NO_CALL_GREY = colormaps["coolwarm"].with_extremes(bad="#9a9a9a")


def plot_probability_map(
    cells: pd.DataFrame, explained: np.ndarray, path: Path, title: str
) -> Path:
    """Cells at (map_x, map_y) coloured by probability of sensitivity (0 blue, 1 red)."""
    figure = new_figure(6.4, 5.2)
    ax = figure.subplots()
    size = float(np.clip(4000 / max(len(cells), 1), 2, 30))
    points = ax.scatter(
        cells["map_x"],
        cells["map_y"],
        c=cells["prob_sensitive"],
        cmap=NO_CALL_GREY,
        vmin=0.0,
        vmax=1.0,
        s=size,
        linewidths=0,
        rasterized=True,
    )
    figure.colorbar(points, ax=ax, label="probability of sensitivity")
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    ax.set_title(plain_label(title, 70), fontsize=10)
    return save_figure(figure, path)


def _sample_groups(cells: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """Each sample's probabilities (cells with no call, NaN, left out)."""
    cells = cells[cells["prob_sensitive"].notna()]
    counts = cells["sample"].value_counts(sort=True)
    shown = list(counts.index[:MAX_SAMPLE_PANELS])
    groups = [
        (str(s), cells.loc[cells["sample"] == s, "prob_sensitive"].to_numpy())
        for s in sorted(shown)
    ]
    rest = cells.loc[~cells["sample"].isin(shown), "prob_sensitive"].to_numpy()
    if len(rest):
        groups.append((f"{len(counts) - len(shown)} other samples", rest))
    return groups


def plot_probability_histograms(cells: pd.DataFrame, path: Path) -> Path:
    """One histogram of the probability of sensitivity per sample, with the 0.5 threshold."""
    groups = _sample_groups(cells)
    columns = min(3, len(groups))
    rows = -(-len(groups) // columns)
    figure = new_figure(3.2 * columns + 0.4, 2.6 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, prob) in zip(axes, groups):
        ax.hist(prob, bins=_BINS, color="#4c72b0")
        ax.axvline(0.5, color="#c44e52", linestyle="--", linewidth=1)
        share = float((prob >= 0.5).mean()) if len(prob) else float("nan")
        ax.set_title(
            plain_label(f"{name}: {len(prob)} cells, {share:.0%} sensitive", 48), fontsize=9
        )
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability of sensitivity")
        ax.set_ylabel("cells")
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    return save_figure(figure, path)
