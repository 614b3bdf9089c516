"""Results a reviewer cannot fault, on real cells: copies of a data set do not leak across
a split, every run says what it held out, F1 stands beside its chance level, a
shuffled-label control sits beside its run, and baselines can be fitted within folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from scdrugmap import Store
from scdrugmap.classify.splits import make_split
from scdrugmap.cli import main
from tests.store_builders import ingest_pc9, scad_options


def _inverted_copy(table: Path, out: Path) -> Path:
    """The table relabelled the way redistributed collections do it: every response
    flipped, genes in another order."""
    frame = pd.read_csv(table, sep="\t", index_col=0)
    frame["response"] = 1 - frame["response"]
    genes = [c for c in frame.columns if c != "response"]
    frame[["response", *genes[::-1]]].to_csv(out, sep="\t")
    return out


@pytest.fixture(scope="module")
def scad(real_data: Path, tmp_path_factory) -> Store:
    """PLX4720, Afatinib and a label-inverted copy of PLX4720 under another name."""
    root = tmp_path_factory.mktemp("scad-copies")
    store = Store(root / "store")
    folder = real_data / "scad"
    store.ingest([folder / "PLX4720.tsv.gz"], scad_options("plx4720", "PLX4720"))
    store.ingest([folder / "Afatinib.tsv.gz"], scad_options("afatinib", "Afatinib"))
    copy = _inverted_copy(folder / "PLX4720.tsv.gz", root / "plx_relabelled.tsv")
    store.ingest([copy], scad_options("plx-relabelled", "PLX4720 (relabelled)"))
    store.embed("pca", n_components=20)
    return store


@pytest.fixture(scope="module")
def pc9(real_data: Path, tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("pc9-honest") / "store")
    ingest_pc9(store, real_data / "pc9_erlotinib", drug="erlotinib")
    store.embed("pca", chunk_size=5000)
    return store


def _cli(store: Store, *args: str) -> str:
    result = CliRunner().invoke(main, ["--store", str(store.path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _fold_auroc(record, fold_name: str) -> float:
    rows = record.results.query("scope == 'pooled' and metric == 'auroc'")
    return float(rows.loc[rows["fold_name"] == fold_name, "value"].item())


def test_an_inverted_copy_scores_no_0_or_1_when_held_out(scad: Store) -> None:
    record = scad.evaluate("pca", "logreg", "cross-dataset")
    for held_out in ("plx4720", "plx-relabelled"):
        assert 0.05 < _fold_auroc(record, held_out) < 0.95
    n_train = record.results.query("scope == 'pooled'").groupby("fold_name")["n_train"].first()
    assert n_train["plx4720"] == n_train["plx-relabelled"] == 120  # Afatinib's cells only
    assert "left out of training" in record.note and "opposite label" in record.note


def test_without_the_content_hash_the_copy_would_have_leaked(scad: Store) -> None:
    # The same cells and folds split by data set id alone, as before cells were hashed:
    # the relabelled copy trains the fold that tests PLX4720, whose AUROC collapses to 0.
    cells = scad.cells(columns=("dataset_id", "cell_index", "sample", "label"))
    labels = (cells["label"] == "sensitive").to_numpy(dtype=np.int8)
    datasets = cells["dataset_id"].to_numpy(dtype=str)
    plan = make_split("cross-dataset", labels, datasets, datasets)
    fold = next(f for f in plan.folds if f.name == "plx4720")
    features = scad.load_embedding("pca", cells)
    model = LogisticRegression(max_iter=2000).fit(features[fold.train], labels[fold.train])
    prob = model.predict_proba(features[fold.test])[:, 1]
    assert roc_auc_score(labels[fold.test], prob) < 0.05


def test_ingest_flags_the_copy_and_datasets_lists_it(scad: Store) -> None:
    hashes = scad.sql(
        "SELECT dataset_id, count(DISTINCT content_hash) AS n FROM cells GROUP BY ALL"
    ).set_index("dataset_id")["n"]
    assert hashes.to_dict() == {"plx4720": 108, "afatinib": 120, "plx-relabelled": 108}
    listing = json.loads(_cli(scad, "datasets", "--json"))
    shared = {row["dataset_id"]: row["shared_cells"] for row in listing}
    assert "plx4720" in str(shared["plx-relabelled"]) and "108" in str(shared["plx-relabelled"])


def test_every_run_records_its_grouping(scad: Store, pc9: Store) -> None:
    assert scad.evaluate("pca", "logreg", "cross-dataset").grouping == "dataset"
    # one sample per data set (and PLX4720 joined to its copy): pooled holds out data sets
    pooled = scad.evaluate("pca", "logreg", "pooled")
    assert pooled.grouping == "dataset" and not pooled.cell_level
    cell_level = pc9.evaluate("pca", "logreg", "pooled", n_folds=3)
    assert cell_level.grouping == "cell" and cell_level.cell_level
    runs = pc9.query("SELECT grouping, cell_level FROM runs WHERE run_id = ?", [cell_level.run_id])
    assert runs.iloc[0].tolist() == ["cell", True]


def test_results_mark_a_cell_level_run_as_optimistic(pc9: Store) -> None:
    pc9.evaluate("pca", "logreg", "pooled", n_folds=3)
    assert "(optimistic)" in _cli(pc9, "results")  # rich may wrap it after "cell"
    summary = json.loads(_cli(pc9, "results", "--json"))
    row = next(r for r in summary if r["classifier"] == "logreg" and not r["control"])
    assert row["grouping"] == "cell" and row["optimistic"] is True
    assert {"mcc_mean", "f1_chance_mean", "f1_sensitive_mean"} <= set(row)
    # every cell called sensitive: F1 = 2 n_s / (2 n_s + n_r), 1,500 of 3,650 sensitive
    assert row["f1_chance_mean"] == pytest.approx(2 * 1500 / (2 * 1500 + 2150), abs=0.01)


def test_the_shuffled_control_is_at_chance_where_the_real_run_is_not(pc9: Store) -> None:
    real = pc9.evaluate("pca", "logreg", "pooled", n_folds=3, seed=1)
    control = pc9.evaluate("pca", "logreg", "pooled", n_folds=3, seed=1, control="shuffled")
    assert control.control == "shuffled" and real.control is None

    def mean(record, metric: str) -> float:
        rows = record.results.query("scope == 'pooled' and metric == @metric")
        return float(rows["value"].mean())

    # measured on these cells: AUROC 0.82 and MCC 0.49 real, 0.54 and 0.02 shuffled
    assert mean(real, "auroc") > 0.75 and mean(real, "mcc") > 0.35
    assert abs(mean(control, "auroc") - 0.5) < 0.1 and abs(mean(control, "mcc")) < 0.1
    splits = pc9.query("SELECT DISTINCT split_id FROM runs WHERE run_id IN (?, ?)", [
        real.run_id, control.run_id])  # fmt: skip
    assert len(splits) == 1, "the control runs on the very folds of the real run"
    kept = pc9.results().query("classifier == 'logreg'")
    assert set(kept["control"].fillna("real")) == {"real", "shuffled"}


def test_the_report_sets_each_result_beside_its_control(pc9: Store, tmp_path: Path) -> None:
    pc9.evaluate("pca", "knn", "pooled", n_folds=3)
    pc9.evaluate("pca", "knn", "pooled", n_folds=3, control="shuffled")
    page = (pc9.report(tmp_path / "report")).read_text()
    assert "AUROC, shuffled labels" in page and "Ranked within a split by AUROC" in page
    markdown = (tmp_path / "report" / "results.md").read_text()
    knn = next(line for line in markdown.splitlines() if "| knn |" in line)
    cells = [c.strip() for c in knn.strip("|").split("|")]
    assert "cell (optimistic)" in cells
    assert float(cells[-3].split()[0]) == pytest.approx(0.5, abs=0.1)  # AUROC, shuffled


def test_benchmark_runs_each_combination_with_its_control(scad: Store) -> None:
    output = _cli(
        scad, "benchmark", "--embeddings", "pca", "--classifiers", "knn",
        "--splits", "cross-dataset", "--control", "shuffled", "--json",
    )  # fmt: skip
    rows = [r for r in json.loads(output) if r["classifier"] == "knn"]
    assert sorted(r["control"] for r in rows) == ["", "shuffled"]


def test_fits_within_folds_never_see_the_held_out_data_set(scad: Store, tmp_path: Path) -> None:
    scad.evaluate("pca", "logreg", "cross-dataset")
    _cli(
        scad, "benchmark", "--embeddings", "pca", "--classifiers", "logreg",
        "--splits", "cross-dataset", "--fit-within-folds",
    )  # fmt: skip
    run = scad.sql(
        "SELECT params, fit_datasets FROM runs WHERE embedding = 'pca (fit within folds)'"
    ).iloc[0]
    fits = json.loads(run["params"])["fold_fits"]
    # PLX4720 held out, its copy left training too (identical cells): Afatinib alone is fitted
    assert fits == {
        "afatinib": ["plx-relabelled", "plx4720"],
        "plx-relabelled": ["afatinib"],
        "plx4720": ["afatinib"],
    }
    assert run["fit_datasets"] is pd.NA or run["fit_datasets"] is None  # per fold, in params
    plain = scad.sql("SELECT fit_datasets FROM runs WHERE embedding = 'pca' LIMIT 1").iloc[0]
    assert sorted(plain["fit_datasets"]) == ["afatinib", "plx-relabelled", "plx4720"]
    page = scad.report(tmp_path / "report").read_text()
    assert "pca × logreg × cross-dataset: held-out data sets" in page
    assert "pca (fit within folds) × logreg × cross-dataset: held-out" not in page


def test_fits_within_folds_refuse_folds_that_hold_no_data_set_out(pc9: Store) -> None:
    result = CliRunner().invoke(main, [
        "--store", str(pc9.path), "benchmark", "--embeddings", "pca", "--classifiers",
        "logreg", "--splits", "pooled", "--fit-within-folds"])  # fmt: skip
    assert result.exit_code == 1
    assert "has no data set to learn from" in result.output
