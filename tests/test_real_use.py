"""What a user meets on real cells (PC9 and SCAD from tests/data): baseline predictors
that call real uploads, selections that default to the data sets holding an embedding,
cells an embedding saw nothing of left out, and exports scanpy can use."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from scdrugmap import Store
from scdrugmap.cli import main
from scdrugmap.data.prepare import IngestOptions
from scdrugmap.errors import InputError
from scdrugmap.predict.predict import NO_CALL, write_predictions

PC9_OPTIONS = IngestOptions(
    dataset_id="pc9",
    samples=["control", "erlotinib"],
    labels=["sensitive", "resistant"],
    drug="erlotinib",
    cancer_type="lung adenocarcinoma",
    tissue="cell line",
    therapy="targeted",
)


def pc9_files(real_data: Path) -> list[Path]:
    folder = real_data / "pc9_erlotinib"
    return [folder / "Day11_control.txt.gz", folder / "Day11_Erlotinib.txt.gz"]


@pytest.fixture(scope="module")
def store(real_data: Path, tmp_path_factory) -> Store:
    """PC9 embedded by pca and hvg, beside a SCAD table that holds neither embedding."""
    store = Store(tmp_path_factory.mktemp("real-use") / "store")
    store.ingest(pc9_files(real_data), PC9_OPTIONS)
    store.ingest(
        [real_data / "scad" / "PLX4720.tsv.gz"],
        IngestOptions(
            dataset_id="plx4720",
            label_column="response",
            sensitive_values=["1"],
            resistant_values=["0"],
            values="normalized",
            drug="PLX4720",
        ),
    )
    store.embed("pca", "pc9")
    store.embed("hvg", "pc9")
    return store


def failed(store: Store, key: str, dataset_id: str = "pc9") -> pd.DataFrame:
    return store.sql(
        "SELECT dataset_id, cell_index FROM failures "
        f"WHERE key = '{key}' AND dataset_id = '{dataset_id}'"
    )


def run(store: Store, *args: str) -> str:
    outcome = CliRunner().invoke(main, ["--store", str(store.path), *args])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


def test_pc9_has_cells_pca_saw_nothing_of(store: Store) -> None:
    assert len(failed(store, "pca")) > 0, "the premise of the failure tests below"


@pytest.mark.parametrize("key", ["pca", "hvg"])
def test_a_baseline_predictor_calls_its_own_real_cells(
    store: Store, real_data: Path, key: str
) -> None:
    store.train_predictor(key, "logreg", f"{key}-logreg", replace=True)
    result = store.predict(f"{key}-logreg", pc9_files(real_data), samples=["control", "erlotinib"])
    assert result.gene_coverage == 1.0 and "panel" in result.coverage_basis
    samples = result.samples.set_index("sample")
    assert samples.loc["erlotinib", "call"] == "resistant"
    # hvg's logreg is overconfident out of fold (Brier 0.26, worse than a constant 0.25):
    # calibrated, half the control cells fall below 0.5, so that sample is uncertain.
    assert samples.loc["control", "call"] == ("sensitive" if key == "pca" else "uncertain")
    means = samples["mean_prob_sensitive"]
    assert means["control"] > 0.5 > means["erlotinib"]


def test_a_file_missing_most_of_the_panel_is_refused_and_leaves_the_store(
    store: Store, real_data: Path, tmp_path: Path
) -> None:
    store.train_predictor("pca", "logreg", "pca-logreg", replace=True)
    panel = set(np.load(store.fit_path("pca") / "fit.npz")["genes"].astype(str))
    frame = pd.read_csv(pc9_files(real_data)[0], sep="\t", index_col=0).iloc[:, :200]
    in_file = sorted(panel & set(frame.index))
    kept = [g for g in frame.index if g not in panel] + in_file[: len(panel) // 4]
    path = tmp_path / "few_panel_genes.txt.gz"
    with gzip.open(path, "wt") as handle:
        frame.loc[kept].to_csv(handle, sep="\t")
    before = store.datasets()["dataset_id"].tolist()
    with pytest.raises(InputError, match=r"only 2\d% of the 2000 genes of the pca panel"):
        store.predict("pca-logreg", [path])
    assert store.datasets()["dataset_id"].tolist() == before


def test_commands_without_where_use_the_data_sets_holding_the_embedding(store: Store) -> None:
    said = "using the data sets that hold embedding 'pca': pc9"
    assert said in run(store, "train", "--embedding", "pca", "--classifier", "logreg",
                       "--name", "cli-pca", "--replace")  # fmt: skip
    output = run(store, "evaluate", "--embedding", "pca", "--classifier", "logreg",
                 "--split", "pooled", "--folds", "3")  # fmt: skip
    assert said in output
    output = run(store, "benchmark", "--embeddings", "pca,hvg", "--classifiers", "logreg",
                 "--splits", "pooled", "--folds", "2")  # fmt: skip
    assert said in output and "using the data sets that hold embedding 'hvg': pc9" in output


def test_an_unknown_embedding_lists_the_keys_that_exist(store: Store) -> None:
    outcome = CliRunner().invoke(
        main,
        ["--store", str(store.path), "evaluate", "--embedding", "pca-scad",
         "--classifier", "logreg", "--split", "pooled"],
    )  # fmt: skip
    assert outcome.exit_code == 1
    said = "no embedding 'pca-scad' of labelled cells in the store; embeddings: hvg, pca"
    assert said in outcome.output


def test_evaluation_leaves_out_cells_the_embedding_saw_nothing_of(store: Store) -> None:
    record = store.evaluate("pca", "logreg", "pooled", n_folds=3)
    n_failed = len(failed(store, "pca"))
    assert record.n_cells == 3_650 - n_failed
    assert f"{n_failed} cells the embedding saw nothing of" in record.note
    scored = store.sql(
        f"SELECT dataset_id, cell_index FROM predictions WHERE run_id = '{record.run_id}'"
    )
    both = scored.merge(failed(store, "pca"), on=["dataset_id", "cell_index"])
    assert len(scored) == record.n_cells and both.empty


def test_training_leaves_them_out_too(store: Store) -> None:
    record = store.train_predictor("pca", "logreg", "pca-logreg", replace=True)
    assert record["n_cells"] == 3_650 - len(failed(store, "pca"))


def test_prediction_gives_them_no_call_with_the_reason(store: Store, real_data: Path) -> None:
    store.train_predictor("pca", "logreg", "pca-logreg", replace=True)
    result = store.predict("pca-logreg", pc9_files(real_data)[1:], dataset_id="erl-again")
    no_call = result.cells[result.cells["call"] == NO_CALL]
    new_failures = failed(store, "pca", "erl-again")
    assert sorted(no_call["cell_index"]) == sorted(new_failures["cell_index"])
    assert no_call["prob_sensitive"].isna().all()
    assert set(no_call["no_call_reason"]) <= {
        "no expressed gene",
        "no expressed gene in the model's vocabulary",
    }
    summary = result.samples.iloc[0]
    assert summary["n_called"] == summary["n_cells"] - len(no_call)


def test_export_is_an_anndata_scanpy_users_can_reset_and_read(store: Store, tmp_path: Path) -> None:
    path = store.export("pca", "pc9", tmp_path / "pc9.h5ad")
    obs = ad.read_h5ad(path).obs
    flat = obs.reset_index()
    assert (flat["barcode"] == flat["index"]).all()
    assert set(obs["drug"]) == {"erlotinib"} and set(obs["therapy"]) == {"targeted"}
    assert set(obs["cancer_type"]) == {"lung adenocarcinoma"}
    assert set(obs["tissue"]) == {"cell line"}
    assert obs.groupby("sample", observed=True)["label"].first().to_dict() == {
        "control": "sensitive",
        "erlotinib": "resistant",
    }


def test_prediction_h5ad_resets_too(store: Store, real_data: Path, tmp_path: Path) -> None:
    store.train_predictor("pca", "logreg", "pca-logreg", replace=True)
    result = store.predict("pca-logreg", pc9_files(real_data)[:1], dataset_id="ctl-again")
    (path,) = write_predictions(store, result, tmp_path / "calls.h5ad")
    adata = ad.read_h5ad(path)
    assert "barcode" in adata.obs.reset_index().columns
    # The panel holds genes found only in the erlotinib file.
    assert 0.9 < adata.uns["gene_coverage"] == result.gene_coverage < 1
