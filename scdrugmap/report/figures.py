"""Report figures: does a foundation model beat the baselines, and on which data sets?

matplotlib is imported inside the functions, not with the package, so that the
CLI starts fast; figures are drawn on a bare `Figure` (Agg canvas, no pyplot)
so nothing here touches a caller's global backend or leaks open figures.
Every figure is saved as PNG (for the HTML page) and SVG (for papers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.report.tables import CONFIG, METRIC_LABELS

__all__ = [
    "new_figure",
    "plain_label",
    "plot_f1_bars",
    "plot_metric_heatmap",
    "plot_roc_pr",
    "save_figure",
]

_UNDEFINED = "n/a"


def plain_label(label: object, limit: int = 32) -> str:
    """A name as short literal text: a '$' in a model name must not switch on mathtext.

    Long names are cut (the tables carry them in full) so they cannot squeeze the plot away.
    """
    text = str(label)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path) -> Path:
    png = Path(path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=150, format="png")
    # No date in the SVG, so that the same results give the same file.
    figure.savefig(png.with_suffix(".svg"), format="svg", metadata={"Date": None})
    return png


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_f1_bars(summary: pd.DataFrame, path: Path, metric: str = "f1_sensitive") -> Path:
    """Grouped bars of a metric (default F1 of the sensitive class) with s.e.m. error bars.

    `summary` is `summarise(results, scope="pooled")`: one panel per split, one
    group per embedding, one bar per classifier. A metric undefined in every
    fold is drawn as 'n/a' rather than as a zero-height bar that reads as 0.
    Writes `<stem>.png` and `<stem>.svg`; returns the PNG path.
    """
    mean_column, sem_column = f"{metric}_mean", f"{metric}_sem"
    if summary.empty or mean_column not in summary.columns:
        raise ValueError(f"no {metric} values to plot")
    if summary.duplicated(list(CONFIG)).any():
        raise ValueError("summary has several rows per configuration; pass the pooled summary")
    splits = sorted(summary["split"].unique())
    embeddings = sorted(summary["embedding"].unique())
    classifiers = sorted(summary["classifier"].unique())
    label = METRIC_LABELS.get(metric, metric)

    width = min(4.0 + 0.45 * len(embeddings) * len(classifiers), 14.0) * len(splits) ** 0.5
    figure = new_figure(max(width, 6.5), 4.2)
    axes = figure.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    colours = _palette(len(classifiers))
    group_width = min(0.8, 0.3 * len(classifiers))
    bar_width = group_width / len(classifiers)
    x = np.arange(len(embeddings))
    for ax, split in zip(axes, splits, strict=True):
        rows = summary[summary["split"] == split].set_index(["embedding", "classifier"])
        for k, (classifier, colour) in enumerate(zip(classifiers, colours, strict=True)):
            keys = [(e, classifier) for e in embeddings]
            means = rows[mean_column].reindex(keys).to_numpy(float)
            sems = rows[sem_column].reindex(keys).to_numpy(float)
            offsets = x - group_width / 2 + bar_width * (k + 0.5)
            ax.bar(
                offsets,
                np.nan_to_num(means),
                bar_width * 0.92,
                yerr=sems,
                capsize=2.5,
                color=colour,
                edgecolor="white",
                linewidth=0.5,
                label=plain_label(classifier),
                error_kw={"elinewidth": 0.9, "ecolor": "#333333"},
            )
            present = rows.index.intersection(keys)
            for offset, key, mean in zip(offsets, keys, means, strict=True):
                if np.isnan(mean) and key in present:
                    ax.text(
                        offset, 0.02, _UNDEFINED, ha="center", va="bottom", fontsize=8,
                        rotation=90, color="#444444",
                    )  # fmt: skip
        ax.set_title(plain_label(f"split: {split}", 60), fontsize=10)
        ax.set_xticks(x, [plain_label(e) for e in embeddings])
        if sum(min(len(e), 32) for e in embeddings) > 40:
            ax.tick_params(axis="x", labelrotation=30)
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
        ax.set_xlabel("embedding")
        ax.set_xlim(-0.6, len(embeddings) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel(label)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, title="classifier", loc="outside right upper", frameon=False)
    figure.suptitle(f"{label}: mean ± s.e.m. over folds", fontsize=11)
    return save_figure(figure, path)


def plot_metric_heatmap(
    results: pd.DataFrame, path: Path, metric: str = "f1_sensitive"
) -> Path | None:
    """Heat map of a metric per data set: which data sets does each embedding handle?

    Cells are the mean over folds of scope='dataset' rows, NaN folds left out;
    one panel per split; rows are embeddings (or embedding / classifier when
    several classifiers ran, since averaging over classifiers would hide the
    best one). Returns None when the results have no per-data-set rows.
    """
    from matplotlib import colormaps

    rows = results[(results["scope"] == "dataset") & (results["metric"] == metric)]
    if rows.empty:
        return None
    rows = rows.assign(value=pd.to_numeric(rows["value"], errors="coerce").astype(float))
    several = rows["classifier"].nunique() > 1
    rows = rows.assign(
        row=rows["embedding"].astype(str) + " / " + rows["classifier"].astype(str)
        if several
        else rows["embedding"].astype(str)
    )
    means = rows.groupby(["split", "row", "dataset_id"])["value"].mean()
    splits = sorted(rows["split"].unique())
    row_names = sorted(rows["row"].unique())
    datasets = sorted(rows["dataset_id"].unique())
    label = METRIC_LABELS.get(metric, metric)

    panel_width = 1.0 + 0.8 * len(datasets) + 0.07 * max(min(len(r), 32) for r in row_names)
    figure = new_figure(panel_width * len(splits) + 1.2, max(3.4, 1.6 + 0.38 * len(row_names)))
    axes = figure.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = None
    for ax, split in zip(axes, splits, strict=True):
        grid = (
            means.loc[split]
            .unstack("dataset_id")
            .reindex(index=row_names, columns=datasets)
            .to_numpy(float)
        )
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            text = _UNDEFINED if np.isnan(value) else f"{value:.2f}"
            colour = "black" if np.isnan(value) or value > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(
            range(len(datasets)), [plain_label(d) for d in datasets], rotation=30, ha="right"
        )
        ax.set_yticks(range(len(row_names)), [plain_label(r) for r in row_names])
        ax.set_title(plain_label(f"split: {split}", 60), fontsize=10)
        ax.set_xlabel("data set")
    axes[0].set_ylabel("embedding / classifier" if several else "embedding")
    figure.colorbar(image, ax=list(axes), label=label, shrink=0.9)
    figure.suptitle(f"{label} per data set: mean over folds", fontsize=11)
    return save_figure(figure, path)


def plot_roc_pr(curves: pd.DataFrame, path: Path) -> Path | None:
    """ROC and precision-recall curves of held-out predictions, pooled over folds.

    `curves` holds one row per held-out cell: split, row (embedding / classifier),
    label (1 = sensitive) and prob_sensitive. One pair of panels per split, one
    line per row, with its AUROC or average precision in the legend; a row whose
    cells are all of one class has no curve and is left out.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    if curves.empty:
        return None
    splits = sorted(curves["split"].unique())
    figure = new_figure(9.0, 3.8 * len(splits))
    axes = figure.subplots(len(splits), 2, squeeze=False)
    for (roc_ax, pr_ax), split in zip(axes, splits, strict=True):
        mine = curves[curves["split"] == split]
        names = sorted(mine["row"].unique())
        for colour, name in zip(_palette(len(names)), names, strict=True):
            cells = mine[mine["row"] == name]
            y, p = cells["label"].to_numpy(int), cells["prob_sensitive"].to_numpy(float)
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, p)
            area = auc(fpr, tpr)
            roc_ax.plot(fpr, tpr, color=colour, label=plain_label(f"{name} ({area:.2f})", 48))
            precision, recall, _ = precision_recall_curve(y, p)
            ap = average_precision_score(y, p)
            pr_ax.plot(recall, precision, color=colour, label=plain_label(f"{name} ({ap:.2f})", 48))
        roc_ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
        roc_ax.set(xlabel="false positive rate", ylabel="true positive rate")
        roc_ax.set_title(plain_label(f"ROC, split: {split}", 60), fontsize=10)
        pr_ax.set(xlabel="recall (sensitive)", ylabel="precision (sensitive)", ylim=(0, 1.02))
        pr_ax.set_title(plain_label(f"precision-recall, split: {split}", 60), fontsize=10)
        for ax in (roc_ax, pr_ax):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
    figure.suptitle("Held-out cells, all folds pooled", fontsize=11)
    return save_figure(figure, path)
