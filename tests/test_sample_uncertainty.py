"""A sample's share of sensitive cells comes with its 95 % Wilson interval, and a sample
whose interval holds 0.5 is called uncertain: the demo's 50/50 upload is no longer called
resistant, and the interval reaches the CLI, the CSV and the h5ad."""

from __future__ import annotations

import json
import math
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from scdrugmap import Store
from scdrugmap.classify.metrics import wilson_interval
from scdrugmap.cli import main
from scdrugmap.data.demo import write_demo_files
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.predict.predict import per_sample, write_predictions
from scdrugmap.workflows.demo import BASELINES, PREDICTOR


def test_wilson_interval_against_hand_computed_values() -> None:
    # 8 of 10 at z = 1.959964: centre (0.8 + z²/20) / (1 + z²/10) = 0.71675, half width
    # z / (1 + z²/10) · sqrt(0.8 · 0.2 / 10 + z² / 400) = 0.22653.
    low, high = wilson_interval(np.array([8, 0, 900]), np.array([10, 10, 1800]))
    assert low[0] == pytest.approx(0.49016, abs=1e-5) and high[0] == pytest.approx(
        0.94332, abs=1e-5
    )
    # None of 10: the interval starts at 0 yet still admits a share of z² / (10 + z²).
    assert low[1] == 0.0 and high[1] == pytest.approx(3.841459 / 13.841459, abs=1e-6)
    assert low[2] < 0.5 < high[2] and high[2] - low[2] == pytest.approx(0.04614, abs=1e-4)
    nothing = wilson_interval(np.array([0]), np.array([0]))
    assert math.isnan(nothing[0][0]) and math.isnan(nothing[1][0])


def test_a_sample_is_uncertain_while_its_interval_holds_one_half() -> None:
    calls = {"all": ["sensitive"] * 10, "half": ["sensitive", "resistant"] * 5,
             "few": ["resistant"] * 10, "nine": ["sensitive"] * 7 + ["resistant"] * 3,
             "none": ["no call"] * 4}  # fmt: skip
    cells = pd.DataFrame(
        [{"sample": s, "call": c, "prob_sensitive": 0.5} for s, cs in calls.items() for c in cs]
    )
    summary = per_sample(cells).set_index("sample")
    assert summary["call"].to_dict() == {
        "all": "sensitive",
        "few": "resistant",
        "half": "uncertain",
        "nine": "uncertain",  # 7 of 10: 0.397..0.892 still holds 0.5
        "none": "no call",
    }
    assert summary.loc["half", "fraction_low"] < 0.5 < summary.loc["half", "fraction_high"]
    assert summary.loc["none", ["fraction_low", "fraction_high"]].isna().all()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Store, Path]:
    """The demo's store as `scdrugmap demo` builds it, up to its predictor (pca + logreg),
    and the upload example it names: 1,800 cells, 900 untreated and 900 treated."""
    root = tmp_path_factory.mktemp("demo-uncertain")
    store = Store(root / "store")
    files = write_demo_files(root / "data", seed=0)
    for path, dataset in files:
        store.ingest(
            [path],
            IngestOptions(
                dataset_id=dataset.dataset_id,
                label_column="response",
                sensitive_values=["sensitive"],
                resistant_values=["resistant"],
                sample_column="sample",
            ),
        )
    assert BASELINES[0] == PREDICTOR["embedding"] == "pca"
    store.embed("pca", "all", chunk_size=2_000)
    store.train_predictor(**PREDICTOR, seed=0)
    return store, files[0][0]


def _cli(store: Store, *args: str) -> str:
    result = CliRunner().invoke(main, ["--store", str(store.path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_demos_mixed_sample_is_uncertain(demo, tmp_path) -> None:
    store, upload = demo
    said = json.loads(
        _cli(
            store,
            "predict",
            "--predictor",
            PREDICTOR["name"],
            str(upload),
            "--sample",
            "mixed",
            "--out",
            str(tmp_path / "calls.csv"),
            "--json",
        )
    )
    (mixed,) = said["samples"]
    assert mixed["sample"] == "mixed" and mixed["n_cells"] == 1800
    assert mixed["call"] == "uncertain"
    assert mixed["fraction_low"] < 0.5 < mixed["fraction_high"]
    written = pd.read_csv(tmp_path / "calls.samples.csv")
    assert written.loc[0, "call"] == "uncertain"
    assert written.loc[0, "fraction_low"] == pytest.approx(mixed["fraction_low"])
    cells = pd.read_csv(tmp_path / "calls.csv")
    assert {"prob_sensitive", "prob_sensitive_raw"} <= set(cells.columns)

    human = _cli(store, "predict", "--predictor", PREDICTOR["name"], str(upload))
    assert "uncertain" in human and "fraction_low" in human and "holds 0.5" in human


def test_the_demos_pure_samples_keep_their_calls(demo, tmp_path) -> None:
    store, upload = demo
    result = store.predict(PREDICTOR["name"], [upload], sample_column="sample")
    calls = result.samples.set_index("sample")
    assert calls["call"].to_dict() == {
        "PC9_D0_rep1": "sensitive",
        "PC9_D0_rep2": "sensitive",
        "PC9_erlotinib_D11_rep1": "resistant",
        "PC9_erlotinib_D11_rep2": "resistant",
    }
    assert (calls["fraction_low"] <= calls["fraction_sensitive"]).all()
    assert (calls["fraction_sensitive"] <= calls["fraction_high"]).all()
    (path,) = write_predictions(store, result, tmp_path / "calls.h5ad")
    kept = anndata.read_h5ad(path).uns["per_sample"]
    assert list(kept["call"]) == list(calls["call"])
    np.testing.assert_allclose(kept["fraction_high"], calls["fraction_high"])
