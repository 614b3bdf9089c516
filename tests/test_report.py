"""Report tables, figures and the HTML page, on small hand-built results tables."""

from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scdrugmap import __version__
from scdrugmap.report.figures import plot_f1_bars, plot_metric_heatmap
from scdrugmap.report.html import write_report
from scdrugmap.report.tables import format_mean_sem, results_table, summarise

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ONE_CLASS = "only one class in the test fold"


def row(embedding, classifier, fold, metric, value, *, scope="pooled", dataset_id=None,
        reason=None, split="sample", run_id="run1"):  # fmt: skip
    return {
        "run_id": run_id,
        "embedding": embedding,
        "classifier": classifier,
        "split": split,
        "fold": fold,
        "fold_name": f"fold{fold}",
        "scope": scope,
        "dataset_id": dataset_id,
        "metric": metric,
        "value": value,
        "reason": reason,
        "created": "2024-01-01",  # a column the report must ignore
    }


@pytest.fixture
def results() -> pd.DataFrame:
    rows = []
    for fold, (f1, auroc) in enumerate([(0.4, 0.7), (0.5, np.nan), (0.6, np.nan)]):
        rows.append(row("pca", "logreg", fold, "f1_sensitive", f1))
        reason = ONE_CLASS if np.isnan(auroc) else None
        rows.append(row("pca", "logreg", fold, "auroc", auroc, reason=reason))
        rows.append(row("geneformer", "logreg", fold, "f1_sensitive", 0.8))
        rows.append(row("geneformer", "logreg", fold, "auroc", np.nan, reason=ONE_CLASS))
        for dataset, value in (("lung", 0.3 + 0.1 * fold), ("melanoma", 0.9)):
            for embedding in ("pca", "geneformer"):
                rows.append(row(embedding, "logreg", fold, "f1_sensitive", value,
                                scope="dataset", dataset_id=dataset))  # fmt: skip
    return pd.DataFrame(rows)


def by_embedding(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.set_index("embedding")


def test_summarise_mean_sem_and_nan_handling(results):
    summary = by_embedding(summarise(results))
    assert len(summary) == 2
    pca = summary.loc["pca"]
    assert pca["f1_sensitive_mean"] == pytest.approx(0.5)
    assert pca["f1_sensitive_sem"] == pytest.approx(np.std([0.4, 0.5, 0.6], ddof=1) / math.sqrt(3))
    assert pca["auroc_mean"] == pytest.approx(0.7), "NaN folds are left out of the mean"
    assert math.isnan(pca["auroc_sem"]), "one finite fold has no s.e.m."
    assert pca["n_folds"] == 3
    assert pca["nan_folds"] == 2
    assert pca["notes"] == f"auroc: {ONE_CLASS} (2 of 3 folds)"
    geneformer = summary.loc["geneformer"]
    assert math.isnan(geneformer["auroc_mean"])
    assert geneformer["f1_sensitive_sem"] == pytest.approx(0.0)
    assert "3 of 3 folds" in geneformer["notes"]


def test_summarise_per_dataset(results):
    summary = summarise(results, scope="dataset")
    assert set(summary.columns) >= {"dataset_id", "f1_sensitive_mean", "f1_sensitive_sem"}
    assert "auroc_mean" not in summary.columns, "pooled rows stay out of the per-data-set view"
    lung = summary[(summary["dataset_id"] == "lung") & (summary["embedding"] == "pca")]
    assert lung["f1_sensitive_mean"].item() == pytest.approx(0.4)
    assert (summary["notes"] == "").all()


def test_summarise_counts_folds_of_separate_runs(results):
    rerun = results.assign(run_id="run2")
    summary = by_embedding(summarise(pd.concat([results, rerun])))
    assert summary.loc["pca", "n_folds"] == 6


def test_summarise_rejects_bad_input(results):
    with pytest.raises(ValueError, match="scope"):
        summarise(results, scope="cells")
    with pytest.raises(ValueError, match="reason"):
        summarise(results.drop(columns="reason"))
    empty = summarise(results.iloc[:0])
    assert empty.empty
    assert {"embedding", "classifier", "split", "n_folds"} <= set(empty.columns)


def test_missing_reason_is_still_reported():
    frame = pd.DataFrame([row("pca", "knn", 0, "auprc", np.nan), row("pca", "knn", 1, "auprc", 1)])
    assert summarise(frame)["notes"].item() == "auprc: no reason given (1 of 2 folds)"


@pytest.mark.parametrize(
    ("mean", "sem", "digits", "expected"),
    [
        (0.91234, 0.01111, 3, "0.912 ± 0.011"),
        (0.91234, float("nan"), 3, "0.912"),
        (0.91234, None, 3, "0.912"),
        (float("nan"), 0.01, 3, "n/a"),
        (None, None, 3, "n/a"),
        (0.5, 0.25, 1, "0.5 ± 0.2"),
        (1.0, 0.0, 2, "1.00 ± 0.00"),
    ],
)
def test_format_mean_sem(mean, sem, digits, expected):
    assert format_mean_sem(mean, sem, digits) == expected


def test_results_table_strings_and_order(results):
    extra = pd.DataFrame([row("hvg", "knn", 0, "f1_sensitive", 0.1, split="cross_dataset")])
    table = results_table(pd.concat([results, extra]))
    assert list(table.columns[:4]) == ["embedding", "classifier", "split", "folds"]
    assert {"f1_sensitive", "f1_macro", "auroc", "auprc", "balanced_accuracy"} <= set(table)
    assert list(table["split"]) == ["cross_dataset", "sample", "sample"]
    pca = table[table["embedding"] == "pca"].iloc[0]
    assert pca["f1_sensitive"] == "0.500 ± 0.058"
    assert pca["auroc"] == "0.700"
    assert pca["f1_macro"] == "n/a"
    per_dataset = results_table(results, ["f1_sensitive"], scope="dataset")
    assert list(per_dataset["dataset_id"]) == ["lung", "lung", "melanoma", "melanoma"]


def assert_figure_files(png: Path) -> None:
    assert png.suffix == ".png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    svg = png.with_suffix(".svg")
    assert svg.stat().st_size > 0
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_f1_bars_written_as_png_and_svg(results, tmp_path):
    png = plot_f1_bars(summarise(results), tmp_path / "figs" / "bars.png")
    assert png == tmp_path / "figs" / "bars.png"
    assert_figure_files(png)


def test_f1_bars_cope_with_awkward_names_and_nan(tmp_path):
    frame = pd.DataFrame(
        [row(name, clf, fold, "f1_sensitive", value, split=split)
         for name in ("$x$", "<script>", "a" * 40) for clf in ("knn", "lgbm")
         for split in ("sample", "dataset") for fold in range(2)
         for value in ([np.nan] if name == "$x$" and clf == "knn" else [0.5 + 0.1 * fold])]
    )  # fmt: skip
    assert_figure_files(plot_f1_bars(summarise(frame), tmp_path / "bars"))
    with pytest.raises(ValueError):
        plot_f1_bars(summarise(frame.iloc[:0]), tmp_path / "empty.png")


def test_heatmap_written_or_none(results, tmp_path):
    png = plot_metric_heatmap(results, tmp_path / "heat.png")
    assert png is not None
    assert_figure_files(png)
    pooled_only = results[results["scope"] == "pooled"]
    assert plot_metric_heatmap(pooled_only, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_write_report_contents(results, tmp_path):
    per_dataset = results.query("scope == 'dataset'")
    results = pd.concat([results, per_dataset.assign(metric="auroc")], ignore_index=True)
    note = "pooled split fell back to cell-level folds: 1 sample per label & <b>"
    index = write_report(results, tmp_path / "report", title="Demo run", notes=[note])
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    assert "<title>Demo run</title>" in page
    assert "0.500 ± 0.058" in page
    assert "0.800 ± 0.000" in page
    assert "pooled split fell back to cell-level folds" in page
    assert "&amp; &lt;b&gt;" in page and "<b>" not in page
    assert ONE_CLASS in page
    assert __version__ in page and "UTC" in page
    assert 'src="auroc_bars.png"' in page
    assert "http://" not in page and "https://" not in page
    for name in ("auroc_bars", "auroc_by_dataset"):
        assert_figure_files(tmp_path / "report" / f"{name}.png")
    markdown = (tmp_path / "report" / "results.md").read_text(encoding="utf-8")
    assert "| pca | logreg | sample | 3 | 0.500 ± 0.058 |" in markdown
    assert "pooled split fell back" in markdown


def test_write_report_escapes_malicious_names(results, tmp_path):
    evil = "<script>alert('x')</script>"
    frame = results.replace({"embedding": {"pca": evil}, "reason": {ONE_CLASS: "<img src=x>"}})
    page = write_report(frame, tmp_path, notes=["<script>bad()</script>"]).read_text()
    assert "<script" not in page.lower()
    assert "<img src=x>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    markdown = (tmp_path / "results.md").read_text()
    assert "<script>" not in markdown


def test_write_report_without_results(tmp_path):
    empty = pd.DataFrame(columns=list(row("a", "b", 0, "auroc", 0.5)))
    page = write_report(empty, tmp_path).read_text()
    assert "No pooled results" in page
    assert not list(tmp_path.glob("*.png"))


def test_importing_report_does_not_import_matplotlib():
    code = (
        "import sys, scdrugmap.report, scdrugmap.report.tables, scdrugmap.report.figures,"
        " scdrugmap.report.html; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_curves_and_frozen_vs_lora(results, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    predictions = pd.DataFrame(
        {
            "run_id": "run1",
            "label": labels,
            "prob_sensitive": np.clip(labels * 0.6 + rng.random(200) * 0.5, 0, 1),
        }
    )
    tuned = [row("pca", "lora-mlp", fold, "f1_sensitive", 0.9, run_id="run2") for fold in range(3)]
    frame = pd.concat([results, pd.DataFrame(tuned)], ignore_index=True)
    page = write_report(frame, tmp_path, predictions=predictions).read_text(encoding="utf-8")
    assert 'src="roc_pr_curves.png"' in page
    assert_figure_files(tmp_path / "roc_pr_curves.png")
    assert "Frozen embeddings vs LoRA fine-tuning" in page
    assert "<td>logreg 0.500</td><td>0.900</td>" in page
    one_class = predictions.assign(label=1)
    other = write_report(results, tmp_path / "one", predictions=one_class).read_text()
    assert "roc_pr_curves.png" in other  # drawn, with the one-class line left out
    assert "Frozen embeddings vs LoRA" not in other
