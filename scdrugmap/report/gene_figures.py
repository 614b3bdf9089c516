"""The volcano plot of a gene ranking: which genes set two groups of cells apart, by how
much (log2 fold change) and how surely (adjusted p-value), the strongest named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.report.figures import new_figure, plain_label, save_figure

# The ends of the coolwarm map the prediction figures colour probabilities with: resistant
# cells (probability of sensitivity near 0) blue, sensitive ones red.
GROUP_COLOURS = ("#3b4cc0", "#b40426")
NOT_SIGNIFICANT = "#b0b0b0"
SIGNIFICANT = 0.05
FOLD_SHOWN = 10.0
# An adjusted p-value rounded to 0 is drawn at the smallest positive double instead.
_FLOOR = np.finfo(np.float64).tiny


def _spread(heights: np.ndarray, gap: float, floor: float) -> np.ndarray:
    """Label heights, highest first, each at least `gap` below the one above it and none
    below `floor`, so the names of genes with close p-values do not print over one
    another (or over the threshold line)."""
    placed = heights.astype(np.float64).copy()
    for i in range(1, len(placed)):
        placed[i] = min(placed[i], placed[i - 1] - gap)
    for i in range(len(placed) - 1, -1, -1):
        below = placed[i + 1] + gap if i + 1 < len(placed) else floor
        placed[i] = max(placed[i], below)
    return placed


def _name_genes(ax, x, y, genes, colour: str, side: int, gap: float) -> None:
    """Name genes beside their points (right of them for side 1, left for -1), moved down
    where they would overlap, with a thin line to the point when moved."""
    order = np.argsort(-y, kind="stable")
    heights = _spread(y[order], gap, -np.log10(SIGNIFICANT) + gap)
    for i, height in zip(order, heights):
        ax.annotate(
            plain_label(genes[i], 16),
            (x[i], y[i]),
            xytext=(x[i] + side * 0.02 * np.ptp(ax.get_xlim()), height),
            textcoords="data",
            ha="left" if side > 0 else "right",
            va="center",
            fontsize=7,
            color=colour,
            arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.4},
        )


def plot_volcano(
    table: pd.DataFrame, names: tuple[str, str], path: Path, title: str, n_named: int = 8
) -> Path:
    """Each gene at (log2 fold change of names[0] over names[1], -log10 adjusted p);
    genes up in a group at adjusted p < 0.05 in its colour, its top `n_named` by score
    named. A gene seen in one group only has a fold change near +-30 (the 1e-9 the ratio
    adds); those beyond +-FOLD_SHOWN are drawn at the edge as triangles, and so are genes
    whose adjusted p-value underflowed to 0, at the top. PNG and SVG."""
    rows = table[table["group"] == names[0]].reset_index(drop=True)
    fold = rows["logfoldchange"].to_numpy()
    x = np.clip(fold, -FOLD_SHOWN, FOLD_SHOWN)
    y = -np.log10(np.maximum(rows["pval_adj"].to_numpy(), _FLOOR))
    significant = rows["pval_adj"].to_numpy() < SIGNIFICANT
    up = (significant & (fold > 0), significant & (fold < 0))
    underflow = rows["pval_adj"].to_numpy() == 0
    edge = (np.abs(fold) > FOLD_SHOWN) | underflow
    figure = new_figure(6.4, 5.2)
    ax = figure.subplots()
    ax.set_xlim(-FOLD_SHOWN * 1.08, FOLD_SHOWN * 1.08)
    layers = [(~(up[0] | up[1]), NOT_SIGNIFICANT, None)] + [
        (up[g], GROUP_COLOURS[g], f"up in {names[g]} ({int(up[g].sum())} genes)") for g in (0, 1)
    ]
    for mask, colour, label in layers:
        for shape, where in (("o", mask & ~edge), ("^", mask & edge)):
            ax.scatter(
                x[where],
                y[where],
                s=6 if shape == "o" else 10,
                c=colour,
                marker=shape,
                linewidths=0,
                rasterized=True,
                label=label if shape == "o" else None,
            )
    ax.set_ylim(bottom=-0.02 * max(float(y.max()), 1.0))
    gap = 0.035 * np.ptp(ax.get_ylim())
    genes = rows["gene"].to_numpy()
    for g, side in ((0, 1), (1, -1)):
        # Each group's rows come by descending score, the strongest first; only genes up
        # in the group are its to name.
        mine = table[table["group"] == names[g]]
        named = mine[(mine["pval_adj"] < SIGNIFICANT) & (mine["score"] > 0)]
        picked = np.flatnonzero(np.isin(genes, named["gene"].head(n_named).to_numpy()))
        _name_genes(ax, x[picked], y[picked], genes[picked], GROUP_COLOURS[g], side, gap)
    ax.axhline(-np.log10(SIGNIFICANT), color="#555555", linestyle="--", linewidth=0.8)
    ax.axvline(0, color="#555555", linewidth=0.5)
    ax.set_xlabel(
        f"log2 fold change, {plain_label(names[0])} / {plain_label(names[1])} "
        f"(beyond ±{FOLD_SHOWN:g} at the edge)"
    )
    ax.set_ylabel("-log10 adjusted p-value (Wilcoxon, Benjamini-Hochberg)")
    if underflow.any():
        ax.annotate(
            f"{int(underflow.sum())} gene(s) at p = 0 (below 1e-308) drawn at the top",
            (0.99, 0.99),
            xycoords="axes fraction",
            ha="right",
            va="top",
            fontsize=7,
            color="#555555",
        )
    ax.set_title(plain_label(title, 70), fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return save_figure(figure, path)
