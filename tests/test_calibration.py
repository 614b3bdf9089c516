"""Calibrated probabilities on real PC9 cells: chosen by cross-validation on training cells
only, scored per held-out fold before and after, kept with a predictor as plain numbers,
and the same after a reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scdrugmap import Store
from scdrugmap.classify.calibration import (
    METHODS,
    Calibrator,
    fit_calibration,
    fit_isotonic,
    fit_platt,
)
from scdrugmap.classify.classifiers import make_classifier
from scdrugmap.classify.evaluate import _copy_hashes
from scdrugmap.classify.metrics import (
    brier_score,
    ece_from_bins,
    expected_calibration_error,
    reliability_bins,
)
from scdrugmap.cli import main
from scdrugmap.predict.train import load_calibration, load_predictor, predictor_path
from tests.serve_server import write_pc9_h5ad
from tests.store_builders import ingest_pc9

CALIBRATION_ROWS = ("ece", "brier", "ece_calibrated", "brier_calibrated")


@pytest.fixture(scope="module")
def pc9(real_data: Path, tmp_path_factory) -> Store:
    """The PC9 quarter (1,500 untreated, 2,150 erlotinib-surviving cells) embedded by PCA."""
    store = Store(tmp_path_factory.mktemp("pc9-calibration") / "store")
    ingest_pc9(store, real_data / "pc9_erlotinib", drug="erlotinib")
    store.embed("pca", chunk_size=5000)
    return store


@pytest.fixture(scope="module")
def run(pc9: Store):
    return pc9.evaluate("pca", "logreg", "pooled")


@pytest.fixture(scope="module")
def trained(pc9: Store) -> dict:
    return pc9.train_predictor("pca", "logreg", "pc9-logreg")


def _training_inputs(store: Store, predictor: str = "pc9-logreg"):
    """The features, labels, samples, data sets and content hashes of a predictor's cells
    (the selected ones less those the embedding saw nothing of)."""
    kept = np.load(predictor_path(store, predictor) / "cells.npz", allow_pickle=False)
    cells = store.cells(
        None, columns=("dataset_id", "cell_index", "label", "sample", "n_genes", "content_hash")
    )
    cells = cells[cells["cell_index"].isin(kept["cell_index"])].reset_index(drop=True)
    features = store.load_embedding("pca", cells)
    labels = (cells["label"] == "sensitive").to_numpy(dtype=np.int8)
    samples = (cells["dataset_id"] + "/" + cells["sample"]).to_numpy(dtype=str)
    return features, labels, samples, cells["dataset_id"].to_numpy(dtype=str), _copy_hashes(cells)


def test_evaluate_scores_each_fold_before_and_after_its_calibrator(pc9: Store, run) -> None:
    pooled = run.results[run.results["scope"] == "pooled"]
    by_metric = pooled.pivot(index="fold", columns="metric", values="value")
    assert set(CALIBRATION_ROWS) <= set(by_metric.columns)
    assert by_metric[list(CALIBRATION_ROWS)].notna().all().all()
    # On held-out folds, calibration fitted on each fold's training cells does not worsen ECE.
    assert by_metric["ece_calibrated"].mean() <= by_metric["ece"].mean()
    per_dataset = run.results[run.results["scope"] == "dataset"]
    assert set(CALIBRATION_ROWS) <= set(per_dataset["metric"])

    # The stored held-out probabilities give the stored per-fold numbers (to float32: a
    # stored isotonic step of 0.7 reads 0.69999999 and may sit in the bin below).
    held = pc9.query(
        "SELECT fold, label, prob_sensitive, prob_calibrated FROM predictions WHERE run_id = ?",
        [run.run_id],
    )
    assert held["prob_calibrated"].between(0, 1).all()
    for fold, cells in held.groupby("fold"):
        y = cells["label"].to_numpy(int)
        for metric, column in (("ece", "prob_sensitive"), ("ece_calibrated", "prob_calibrated")):
            expected = expected_calibration_error(y, cells[column].to_numpy(np.float64))
            assert by_metric.loc[fold, metric] == pytest.approx(expected, abs=2e-3)

    # Which calibrator each fold chose, and how its inner folds held cells out: PC9 has one
    # sample per label, so only stratified folds of cells are possible, and it says so.
    params = json.loads(
        pc9.query("SELECT params FROM runs WHERE run_id = ?", [run.run_id]).iloc[0, 0]
    )
    chosen = params["calibration"]
    assert sorted(chosen) == sorted(run.results["fold_name"].unique())
    for fold in chosen.values():
        assert fold["method"] in METHODS and fold["grouping"] == "cell"
        assert "sample-grouped folds impossible" in fold["note"]


def test_a_predictor_keeps_its_calibrator_as_plain_numbers(pc9: Store, trained: dict) -> None:
    calibration = trained["calibration"]
    assert calibration["method"] in METHODS and calibration["grouping"] == "cell"
    assert calibration["file"] == "calibration.json"
    assert calibration["ece_calibrated"] <= calibration["ece_raw"]
    for when in ("raw", "calibrated"):
        bins = calibration["reliability"][when]
        assert sum(bins["n_cells"]) == trained["n_cells"]
        assert sum(bins["n_sensitive"]) == trained["n_sensitive"]
        assert ece_from_bins(bins) == pytest.approx(calibration[f"ece_{when}"])
    folder = predictor_path(pc9, "pc9-logreg")
    saved = json.loads((folder / "calibration.json").read_text())
    assert saved["method"] == calibration["method"]
    assert set(saved) == (
        {"method", "a", "b"} if saved["method"] == "platt" else {"method", "x", "y"}
    )
    listed = pc9.query(
        "SELECT calibration->>'method' AS method, calibration->>'grouping' AS grouping "
        "FROM predictors WHERE name = 'pc9-logreg'"
    )
    assert listed.iloc[0].tolist() == [calibration["method"], "cell"]


def test_a_reloaded_calibrator_gives_identical_probabilities(pc9: Store, trained: dict) -> None:
    features, labels, samples, datasets, hashes = _training_inputs(pc9)
    refitted = fit_calibration(
        lambda: make_classifier("logreg", seed=0), features, labels, samples, datasets, hashes
    )
    loaded = load_calibration(pc9, "pc9-logreg")
    assert loaded.to_json() == refitted.calibrator.to_json()
    _, model = load_predictor(pc9, "pc9-logreg")
    raw = model.predict_proba(features)[:, 1]
    np.testing.assert_array_equal(loaded(raw), refitted.calibrator(raw))
    calibrated = loaded(raw)
    assert ((calibrated >= 0) & (calibrated <= 1)).all()
    order = np.argsort(raw, kind="stable")
    assert (np.diff(calibrated[order]) >= 0).all()  # monotone in the raw probability


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_monotone_in_range_and_round_trips_exactly(pc9, trained, method):
    features, labels, samples, datasets, hashes = _training_inputs(pc9)
    found = fit_calibration(
        lambda: make_classifier("logreg"), features, labels, samples, datasets, hashes
    )
    fitted = (fit_platt if method == "platt" else fit_isotonic)(found.raw, found.labels)
    grid = np.concatenate([[0.0, 1.0], np.linspace(0, 1, 2001), found.raw])
    out = fitted(np.sort(grid))
    assert ((out >= 0) & (out <= 1)).all() and (np.diff(out) >= 0).all()
    again = Calibrator.from_json(json.loads(json.dumps(fitted.to_json())))
    np.testing.assert_array_equal(again(grid), fitted(grid))
    if method == "isotonic":
        # The least-squares monotone fit: on the cells it was fitted on, its Brier score
        # cannot exceed that of the raw probabilities (the identity is monotone too).
        assert brier_score(found.labels, fitted(found.raw)) <= brier_score(found.labels, found.raw)
    else:
        assert fitted.a > 0  # these probabilities rank cells better than chance


def test_platt_never_reverses_the_ranking(pc9: Store, trained: dict) -> None:
    features, labels, samples, datasets, hashes = _training_inputs(pc9)
    found = fit_calibration(
        lambda: make_classifier("logreg"), features, labels, samples, datasets, hashes
    )
    inverted = fit_platt(1 - found.raw, found.labels)  # a classifier worse than chance
    assert inverted.a == 0.0
    assert inverted(np.array([0.1, 0.9])) == pytest.approx([labels.mean()] * 2, abs=0.01)


def test_predict_calls_from_the_calibrated_probability(pc9: Store, trained, tmp_path) -> None:
    upload = write_pc9_h5ad(tmp_path / "some.h5ad", {"control": slice(0, 40)})
    result = pc9.predict("pc9-logreg", [upload])
    cells = result.cells
    calibrator = load_calibration(pc9, "pc9-logreg")
    expected = calibrator(cells["prob_sensitive_raw"].to_numpy(np.float64))
    np.testing.assert_allclose(cells["prob_sensitive"], expected, atol=1e-6)
    called = cells["call"] != "no call"
    sensitive = cells.loc[called, "prob_sensitive"] >= 0.5
    assert (cells.loc[called, "call"] == np.where(sensitive, "sensitive", "resistant")).all()


def _cli(store: Store, *args: str) -> str:
    result = CliRunner().invoke(main, ["--store", str(store.path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_results_sql_and_report_show_calibration(pc9: Store, run, tmp_path) -> None:
    record = json.loads(_cli(pc9, "train", "--embedding", "pca", "--classifier", "logreg",
                             "--name", "by-cli", "--json"))  # fmt: skip
    assert record["calibration"]["method"] in METHODS
    said = _cli(pc9, "train", "--embedding", "pca", "--classifier", "logreg", "--name",
                "by-cli", "--replace")  # fmt: skip
    assert f"calibrated by {record['calibration']['method']}" in said and "ECE" in said
    table = _cli(pc9, "results")
    assert "calibration of held-out probabilities" in table
    assert "ece_calibrated" in table and "brier_calibrated" in table
    summary = json.loads(_cli(pc9, "results", "--json"))
    row = next(r for r in summary if r["classifier"] == "logreg")
    assert row["ece_calibrated_mean"] <= row["ece_mean"]
    rows = json.loads(_cli(pc9, "sql", "--json",
                           "SELECT count(*) AS n FROM predictions WHERE prob_calibrated IS NULL "
                           f"AND run_id = '{run.run_id}'"))  # fmt: skip
    assert rows == [{"n": 0}]
    assert "prob_calibrated" in _cli(pc9, "sql", "--help")

    index = pc9.report(tmp_path / "report")
    page = index.read_text()
    assert "reliability.png" in page and "ECE, calibrated" in page
    assert (index.parent / "reliability.png").stat().st_size > 0
    assert (index.parent / "reliability.svg").is_file()


def test_reliability_bins_count_every_cell_once() -> None:
    y = np.array([1, 0, 1, 1, 0])
    prob = np.array([0.0, 0.1, 0.55, 1.0, 0.95])
    bins = reliability_bins(y, prob)
    assert bins["n_cells"] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins["n_sensitive"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    # |0 - 1|, |0.1 - 0|, |0.55 - 1|, |0.975 - 0.5| weighted by 1, 1, 1, 2 cells of 5
    assert ece_from_bins(bins) == pytest.approx((1 + 0.1 + 0.45 + 2 * 0.475) / 5)
