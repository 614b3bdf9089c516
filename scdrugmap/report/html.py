"""A results report a collaborator can open without installing anything.

One static page (inline CSS, no scripts, no external assets) with the figures
as files beside it, plus the same tables as Markdown for pasting into notes or
a pull request. Every string that came from the results (embedding names,
reasons, notes) is escaped, because model and data-set names are user input.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from scdrugmap.classify.classifiers import LORA_CLASSIFIER
from scdrugmap.report.chance import controlled_metrics, fit_overlap_notes, ranked, with_controls
from scdrugmap.report.tables import (
    CALIBRATION_METRICS,
    DEFAULT_METRICS,
    LOWER_IS_BETTER,
    METRIC_LABELS,
    summarise,
    table_from_summary,
)

__all__ = ["write_report"]

_HEADERS = {"embedding": "embedding", "classifier": "classifier", "split": "split",
            "dataset_id": "data set", "folds": "folds", "notes": "undefined metrics",
            "grouping": "held out whole", "auroc_shuffled": "AUROC, shuffled labels",
            "mcc_shuffled": "MCC, shuffled labels"}  # fmt: skip
# Columns that are references, not results: never marked best.
_REFERENCES = ("f1_chance", "auroc_shuffled", "mcc_shuffled")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 78rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; font-size: 0.88rem; margin: 0.6rem 0; }
th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f4f4f4; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; }
td.notes { color: #8a5300; font-size: 0.82rem; }
caption { caption-side: bottom; text-align: left; color: #666; font-size: 0.82rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.85rem; }
ul.notes li { margin: 0.2rem 0; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None or value is pd.NA else str(value), quote=True)


def _best_cells(summary: pd.DataFrame, metrics: Sequence[str]) -> set[tuple[object, str]]:
    """(row index, metric) of the best mean per split (and data set): the highest, or the
    lowest for the calibration errors (ECE, Brier)."""
    groups = ["split", "dataset_id"] if "dataset_id" in summary.columns else ["split"]
    best = set()
    for metric in (m for m in metrics if m not in _REFERENCES):
        column = f"{metric}_mean"
        if column not in summary.columns:
            continue
        for _, group in summary.groupby(groups, dropna=False):
            values = group[column]
            if len(group) > 1 and values.notna().any():
                target = values.min() if metric in LOWER_IS_BETTER else values.max()
                best.update((i, metric) for i in values.index[values == target])
    return best


def _plain_table(frame: pd.DataFrame) -> str:
    """A frame as an HTML table, every value escaped."""
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _html_table(summary: pd.DataFrame, metrics: Sequence[str], caption: str) -> str:
    table = table_from_summary(summary, metrics, sort=False)
    best = _best_cells(summary, metrics)
    head = "".join(f"<th>{_e(_HEADERS.get(c, METRIC_LABELS.get(c, c)))}</th>" for c in table)
    body = []
    for index, row in table.iterrows():
        cells = []
        for column, value in row.items():
            if column in metrics:
                kind = "num best" if (index, column) in best else "num"
            else:
                kind = "notes" if column == "notes" else ""
            cells.append(
                f'<td class="{kind}">{_e(value)}</td>' if kind else f"<td>{_e(value)}</td>"
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<table>\n<caption>{_e(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{chr(10).join(body)}\n</tbody>\n</table>"
    )


def _nan_reasons(results: pd.DataFrame) -> pd.DataFrame:
    """Each distinct reason for an undefined metric, with how often and how widely it struck."""
    values = pd.to_numeric(results["value"], errors="coerce")
    missing = results.loc[values.isna()]
    if missing.empty:
        return pd.DataFrame(columns=["scope", "metric", "reason", "results", "configurations"])
    missing = missing.assign(
        reason=missing["reason"].where(missing["reason"].notna(), "no reason given"),
        configuration=missing["embedding"].astype(str)
        + "\0"
        + missing["classifier"].astype(str)
        + "\0"
        + missing["split"].astype(str),
    )
    return (
        missing.groupby(["scope", "metric", "reason"])
        .agg(results=("value", "size"), configurations=("configuration", "nunique"))
        .reset_index()
        .sort_values(["scope", "results"], ascending=[False, False], kind="stable")
    )


def _figures(
    results: pd.DataFrame, pooled: pd.DataFrame, out_dir: Path, curves: pd.DataFrame
) -> list[tuple[str, str]]:
    from scdrugmap.report.figures import plot_f1_bars, plot_metric_heatmap, plot_roc_pr
    from scdrugmap.report.reliability import plot_reliability, reliability_panels

    figures = []
    if "auroc_mean" in pooled.columns:
        png = plot_f1_bars(pooled, out_dir / "auroc_bars.png", metric="auroc")
        figures.append((png.name, "AUROC, pooled over data sets (0.5: chance)."))
    heatmap = plot_metric_heatmap(results, out_dir / "auroc_by_dataset.png", metric="auroc")
    if heatmap is not None:
        figures.append((heatmap.name, "AUROC within each data set."))
    roc_pr = plot_roc_pr(curves, out_dir / "roc_pr_curves.png")
    if roc_pr is not None:
        figures.append(
            (roc_pr.name, "ROC and precision-recall curves of held-out cells, folds pooled.")
        )
    reliability = plot_reliability(
        reliability_panels(curves),
        out_dir / "reliability.png",
        "Reliability of held-out cells' probabilities, folds pooled",
    )
    if reliability is not None:
        figures.append(
            (
                reliability.name,
                "Reliability diagrams of held-out cells: the share of sensitive cells against "
                "the mean probability of sensitivity in 10 equal-width bins (marker area: "
                "cells), before and after each fold's calibrator, which was chosen and "
                "fitted by cross-validation on that fold's training cells only; a "
                "calibrated classifier lies on the diagonal.",
            )
        )
    return figures


def frozen_vs_lora(pooled: pd.DataFrame, metric: str = "f1_sensitive") -> pd.DataFrame:
    """Per embedding and split where both exist: the best frozen classifier beside LoRA."""
    column = f"{metric}_mean"
    if pooled.empty or column not in pooled.columns:
        return pd.DataFrame()
    tuned = pooled[pooled["classifier"] == LORA_CLASSIFIER]
    frozen = pooled[pooled["classifier"] != LORA_CLASSIFIER]
    rows = []
    for row in tuned.itertuples():
        same = frozen[(frozen["embedding"] == row.embedding) & (frozen["split"] == row.split)]
        if same.empty or same[column].isna().all():
            continue
        best = same.loc[same[column].idxmax()]
        rows.append(
            {
                "embedding": row.embedding,
                "split": row.split,
                "best frozen": f"{best['classifier']} {best[column]:.3f}",
                f"LoRA ({LORA_CLASSIFIER})": f"{getattr(row, column):.3f}",
            }
        )
    return pd.DataFrame(rows)


def curve_rows(results: pd.DataFrame, predictions: pd.DataFrame | None) -> pd.DataFrame:
    """Held-out predictions labelled with their run's split and embedding / classifier."""
    if predictions is None or predictions.empty or "run_id" not in results.columns:
        return pd.DataFrame()
    runs = results[["run_id", "embedding", "classifier", "split"]].drop_duplicates("run_id")
    merged = predictions.merge(runs, on="run_id")
    return merged.assign(
        row=merged["embedding"].astype(str) + " / " + merged["classifier"].astype(str)
    )


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        text = html.escape("" if value is None else str(value), quote=False)
        return text.replace("|", "\\|").replace("\n", " ")

    header = [_HEADERS.get(c, METRIC_LABELS.get(c, c)) for c in table.columns]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def _markdown(
    title: str,
    stamp: str,
    notes: Sequence[str],
    tables: Sequence[tuple[str, pd.DataFrame]],
) -> str:
    parts = [f"# {html.escape(title, quote=False)}", "", stamp, ""]
    if notes:
        parts += ["## Notes", "", *(f"- {html.escape(n, quote=False)}" for n in notes), ""]
    for heading, table in tables:
        parts += [f"## {heading}", "", "Mean ± s.e.m. over folds.", "", _markdown_table(table), ""]
    return "\n".join(parts)


def _real_runs(results: pd.DataFrame) -> pd.DataFrame:
    if "control" not in results.columns:
        return results
    return results.loc[results["control"].fillna("") == ""]


def write_report(
    results: pd.DataFrame,
    out_dir: Path,
    *,
    title: str = "scdrugmap results",
    notes: Sequence[str] = (),
    predictions: pd.DataFrame | None = None,
) -> Path:
    """Write `index.html`, `results.md` and the figures into `out_dir`; return the HTML path.

    `notes` are caveats the caller knows and the results table does not (for
    example a split that fell back to cell-level folds); they are shown first.
    `predictions` (run_id, label, prob_sensitive of held-out cells) give the ROC
    and precision-recall curves.
    """
    from scdrugmap.version import __version__

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = [*notes, *fit_overlap_notes(results)]
    # The tables and figures show real runs, each with its control's numbers beside it.
    pooled = ranked(with_controls(summarise(results, "pooled")))
    per_dataset = ranked(with_controls(summarise(results, "dataset")))
    metrics = (*DEFAULT_METRICS, *controlled_metrics(pooled))
    real = _real_runs(results)
    curves = curve_rows(real, predictions)
    figures = (
        _figures(real, pooled, out_dir, curves) if not pooled.empty or not per_dataset.empty else []
    )
    reasons = _nan_reasons(results)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    n_runs = results["run_id"].nunique() if "run_id" in results.columns else 0
    stamp = (
        f"Generated {now} by scdrugmap {__version__} from {len(results)} result rows"
        f" ({n_runs} runs)."
    )

    sections = [f"<h1>{_e(title)}</h1>", f'<p class="meta">{_e(stamp)}</p>']
    if notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in notes)
        sections.append(f'<h2>Notes</h2>\n<ul class="notes">{items}</ul>')
    sections.append("<h2>Results, pooled over data sets</h2>")
    if pooled.empty:
        sections.append("<p>No pooled results.</p>")
    else:
        sections.append(
            _html_table(
                pooled,
                metrics,
                "Mean ± s.e.m. over folds (s.e.m. omitted below two defined folds; n/a: "
                "undefined in every fold). Ranked within a split by AUROC, then MCC. F1 "
                "beside its chance level (every cell called sensitive); 'shuffled labels': "
                "the same folds with labels permuted within each data set. 'cell "
                "(optimistic)': cells of one sample on both sides of a fold. Bold: best "
                "mean within a split.",
            )
        )
    for name, caption in figures:
        svg = Path(name).with_suffix(".svg").name
        sections.append(
            f'<figure><img src="{_e(name)}" alt="{_e(caption)}">'
            f'<figcaption>{_e(caption)} <a href="{_e(svg)}">SVG</a></figcaption></figure>'
        )
    calibration = summarise(real.loc[real["metric"].isin(CALIBRATION_METRICS)], "pooled")
    if not calibration.empty:
        sections.append(
            "<h2>Calibration</h2>\n"
            + _html_table(
                calibration,
                CALIBRATION_METRICS,
                "Mean ± s.e.m. over folds of the held-out cells' expected calibration error "
                "(ECE, 10 equal-width bins of the probability of sensitivity) and Brier "
                "score, before and after each fold's calibrator (Platt or isotonic, chosen and "
                "fitted by cross-validation on that fold's training cells only). Lower is "
                "better; bold: best within a split.",
            )
        )
    versus = frozen_vs_lora(pooled)
    if not versus.empty:
        sections.append(
            "<h2>Frozen embeddings vs LoRA fine-tuning</h2>\n<p>F1 of the sensitive class, "
            "mean over folds: the best classifier on the frozen embedding beside the "
            "fine-tuned model.</p>" + _plain_table(versus)
        )
    if not per_dataset.empty:
        sections.append(
            "<h2>Results per data set</h2>\n<details><summary>Show the table</summary>\n"
            + _html_table(
                per_dataset,
                metrics,
                "Mean ± s.e.m. over folds of the test cells of each data set. "
                "Bold: best mean within a split and data set.",
            )
            + "\n</details>"
        )
    sections.append("<h2>Undefined metrics</h2>")
    if reasons.empty:
        sections.append("<p>Every metric was defined in every fold.</p>")
    else:
        sections.append(
            "<p>Metrics that are undefined for a fold are NaN, never 0, and are left out "
            "of the means.</p>" + _plain_table(reasons)
        )

    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    tables = [("Results, pooled over data sets", table_from_summary(pooled, metrics, sort=False))]
    if not calibration.empty:
        tables.append(("Calibration", table_from_summary(calibration, CALIBRATION_METRICS)))
    if not per_dataset.empty:
        tables.append(
            ("Results per data set", table_from_summary(per_dataset, metrics, sort=False))
        )
    (out_dir / "results.md").write_text(_markdown(title, stamp, notes, tables), encoding="utf-8")
    return index
