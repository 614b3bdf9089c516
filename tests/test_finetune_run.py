"""Fine-tuning runs end to end on a generated store with a learnable signal: CellPLM (a
small random checkpoint in the published layout, the real gene list) through peft."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scdrugmap import Store
from scdrugmap.errors import InputError
from scdrugmap.finetune.cells import CellSource
from scdrugmap.finetune.lora import LoraSettings, attach_lora
from scdrugmap.finetune.run import FinetuneRequest, carve_validation
from scdrugmap.finetune.train import TrainSettings, train_fold
from scdrugmap.predict.train import load_predictor
from scdrugmap.progress import progress_to
from tests.cellplm_checkpoint import VERSION, write_cellplm_checkpoint
from tests.store_builders import synthetic_store
from tests.test_cli import cli

SETTINGS = TrainSettings(epochs=4, lr=1e-3, batch_size=16, patience=3)
OPTIONS = {"block_size": 16}


@pytest.fixture(scope="module")
def gene_list(real_data: Path) -> list[str]:
    config = json.loads((real_data / "vocab" / "cellplm" / f"{VERSION}.config.json").read_text())
    return config["gene_list"][:300]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, real_data: Path) -> Path:
    return write_cellplm_checkpoint(tmp_path_factory.mktemp("cellplm") / "ckpt", real_data)


@pytest.fixture(scope="module")
def store(tmp_path_factory, gene_list: list[str]) -> Store:
    """Two data sets of four samples; resistant cells raise 20 genes 30-fold."""
    root = tmp_path_factory.mktemp("finetune")
    return synthetic_store(root, n_datasets=2, cells_per_sample=30, genes=gene_list, fold_change=30)


def _request(checkpoint: Path, **changes) -> FinetuneRequest:
    fields = {
        "model": "cellplm",
        "split": "pooled",
        "checkpoint": checkpoint,
        "n_folds": 2,
        "train": SETTINGS,
        "device": "cpu",
        "options": OPTIONS,
    }
    return FinetuneRequest(**(fields | changes))


@pytest.fixture(scope="module")
def run(store: Store, checkpoint: Path):
    return store.finetune(_request(checkpoint))


def _fold_dirs(store: Store, run) -> list[Path]:
    """The run's own fold folders, both of them (a loop over none would check nothing)."""
    params = store.query("SELECT params FROM runs WHERE run_id = ?", [run.run_id])["params"][0]
    folders = sorted((store.path / json.loads(params)["work_dir"]).glob("fold*"))
    assert len(folders) == 2
    return folders


def test_loss_falls_and_held_out_cells_beat_chance(store: Store, run) -> None:
    pooled = run.results[run.results["scope"] == "pooled"].set_index(["fold", "metric"])["value"]
    assert pooled.xs("auroc", level="metric").mean() > 0.75
    assert pooled.xs("f1_sensitive", level="metric").mean() > 0.7
    for folder in _fold_dirs(store, run):
        history = json.loads((folder / "scdrugmap.json").read_text())["history"]
        assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_results_sit_beside_frozen_runs_with_adapters_kept(store: Store, run, checkpoint) -> None:
    runs = store.query("SELECT kind, embedding, classifier, params FROM runs")
    row = runs[runs["kind"] == "finetune"].iloc[0]
    assert (row["embedding"], row["classifier"]) == ("cellplm", "lora-mlp")
    params = json.loads(row["params"])
    assert params["lora"] == {
        "r": 8,
        "alpha": 8,
        "dropout": 0.05,
        "targets": ["query_projection", "key_projection", "value_projection"],
    }
    assert len(params["lora_modules"]) == 6 and params["lora_modules_left_out"] == []
    assert set(store.results()["classifier"]) == {"lora-mlp"}
    for folder in _fold_dirs(store, run):
        adapter = folder / "adapter"
        assert (adapter / "adapter_model.safetensors").is_file()
        assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
        record = json.loads((folder / "scdrugmap.json").read_text())
        assert record["weights_sha256"] == params["weights_sha256"]
        assert (folder / "head.safetensors").is_file()


def test_no_adapter_was_trained_on_a_cell_it_scored(store: Store, run) -> None:
    scored = store.query(
        f"SELECT fold, dataset_id, cell_index FROM predictions WHERE run_id = '{run.run_id}'"
    )
    for folder in _fold_dirs(store, run):
        fold = int(folder.name.removeprefix("fold"))
        trained = np.load(folder / "trained_cells.npz")
        trained_keys = set(zip(trained["dataset_id"].tolist(), trained["cell_index"].tolist()))
        mine = scored[scored["fold"] == fold]
        scored_keys = set(zip(mine["dataset_id"], mine["cell_index"]))
        assert trained_keys and scored_keys and not trained_keys & scored_keys


def test_validation_cells_come_from_the_training_fold_by_sample() -> None:
    samples = np.repeat(["a", "b", "c", "d", "e", "f"], 10)
    labels = np.repeat([0, 1, 0, 1, 0, 1], 10)
    datasets = np.full(60, "d1")
    train = np.arange(60)[samples != "f"]
    kept, validation = carve_validation(train, labels, samples, datasets, seed=0)
    assert len(kept) and len(validation)
    assert set(kept) | set(validation) == set(train) and not set(kept) & set(validation)
    assert not set(samples[kept]) & set(samples[validation])


def test_an_empty_or_one_class_training_fold_is_refused() -> None:
    samples, labels, datasets = np.repeat(["a", "b"], 5), np.repeat([0, 1], 5), np.full(10, "d")
    with pytest.raises(InputError, match="no training cells"):
        carve_validation(np.array([], dtype=np.int64), labels, samples, datasets, seed=0)
    with pytest.raises(InputError, match="one class only"):
        carve_validation(np.arange(5), labels, samples, datasets, seed=0)


def test_a_rerun_reuses_finished_folds(store: Store, checkpoint: Path, run) -> None:
    adapters = [f / "adapter" / "adapter_model.safetensors" for f in _fold_dirs(store, run)]
    stamps = [p.stat().st_mtime_ns for p in adapters]
    again = store.finetune(_request(checkpoint))
    assert [p.stat().st_mtime_ns for p in adapters] == stamps
    pd_first = run.results.sort_values(["fold", "scope", "dataset_id", "metric"])["value"]
    pd_again = again.results.sort_values(["fold", "scope", "dataset_id", "metric"])["value"]
    np.testing.assert_allclose(pd_again.to_numpy(), pd_first.to_numpy())


def test_training_resumed_after_an_epoch_ends_as_an_unbroken_run(
    store: Store, checkpoint: Path, tmp_path: Path
) -> None:
    from scdrugmap.finetune.lora import modules_on_path
    from scdrugmap.finetune.run import load_trainable

    cells = store.cells(None, columns=("dataset_id", "cell_index", "sample", "label"))
    source = CellSource(store, cells)
    labels = (cells["label"] == "sensitive").to_numpy(dtype=np.int8)
    train, validation = np.arange(0, 240, 2), np.arange(1, 240, 8)

    def trained(settings: TrainSettings, folder: Path) -> dict[str, torch.Tensor]:
        embedder = load_trainable(_request(checkpoint))
        counts, genes, _ = source.counts(train[:8])
        batch = embedder.tokenize(counts, genes)
        modules, _ = modules_on_path(
            embedder.model, embedder.lora_targets, lambda: embedder.encode(batch, np.arange(8))
        )
        embedder.model = attach_lora(embedder.model, LoraSettings(), modules)
        head, _ = train_fold(embedder, source, train, validation, labels, settings, folder)
        return {
            **head.state_dict(),
            **{k: v for k, v in embedder.model.state_dict().items() if "lora" in k},
        }

    settings = TrainSettings(epochs=2, lr=1e-3, batch_size=16, patience=5)
    unbroken = trained(settings, tmp_path / "unbroken")
    trained(TrainSettings(epochs=1, lr=1e-3, batch_size=16, patience=5), tmp_path / "resumed")
    heard = []
    with progress_to(lambda *event: heard.append(event)):
        resumed = trained(settings, tmp_path / "resumed")
    # Only the second epoch was left to train: the first came back from the saved state.
    assert {total for name, _, total, _ in heard if name.startswith("fine-tuning")} == {len(train)}
    for key, value in unbroken.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6)


def test_bad_requests_are_refused_before_anything_is_written(
    store: Store, checkpoint: Path, run, tmp_path: Path
) -> None:
    before = store.query("SELECT count(*) AS n FROM runs")["n"][0]
    work_dirs = set((store.path / "finetune").iterdir())
    with pytest.raises(InputError, match="unknown LoRA target"):
        store.finetune(_request(checkpoint, lora=LoraSettings(targets=("q_proj",))))
    with pytest.raises(InputError, match="baseline"):
        store.finetune(_request(checkpoint, model="pca"))
    with pytest.raises(InputError, match="only sensitive cells"):
        store.finetune(_request(checkpoint, where="label = 'sensitive'"))
    with pytest.raises(InputError, match="no labelled cells"):
        store.finetune(_request(checkpoint, where="sample = 'nobody'"))
    with pytest.raises(InputError, match="--epochs"):
        store.finetune(_request(checkpoint, train=TrainSettings(epochs=0)))
    assert store.query("SELECT count(*) AS n FROM runs")["n"][0] == before
    assert set((store.path / "finetune").iterdir()) == work_dirs


def test_embed_as_stores_adapted_embeddings_that_never_score_trained_cells(
    store: Store, checkpoint: Path, run
) -> None:
    again = store.finetune(_request(checkpoint, embed_as="cellplm-ft"))
    assert json.loads(
        store.query(f"SELECT params FROM runs WHERE run_id = '{again.run_id}'")["params"][0]
    )["embedded_as"] == ["cellplm-ft.fold0", "cellplm-ft.fold1"]
    store.embed("cellplm", checkpoint=checkpoint, device="cpu", **OPTIONS)
    frame = store.embeddings().set_index(["key", "dataset_id"])
    adapter = json.loads(frame.loc[("cellplm-ft.fold0", "ds0"), "settings"])["adapter"]
    assert adapter["base_model"] == "cellplm" and adapter["fold"] == 0
    assert len(adapter["adapter_sha256"]) == 64
    base = store.embedding_array("cellplm", "ds0").read_all()
    tuned = store.embedding_array("cellplm-ft.fold0", "ds0").read_all()
    assert np.abs(tuned - base).max() > 1e-4
    trained = np.load(store.path / adapter["trained_cells"])
    trained_keys = set(zip(trained["dataset_id"].tolist(), trained["cell_index"].tolist()))
    record = store.evaluate("cellplm-ft.fold0", "logreg", "pooled", n_folds=2)
    assert f"{len(trained_keys)} cells the embedding's adapter was trained on" in record.note
    scored = store.query(
        f"SELECT dataset_id, cell_index FROM predictions WHERE run_id = '{record.run_id}'"
    )
    assert len(scored) and not set(zip(scored["dataset_id"], scored["cell_index"])) & trained_keys
    base_record = store.evaluate("cellplm", "logreg", "pooled", n_folds=2)
    assert base_record.n_cells == 240 and record.n_cells == 240 - len(trained_keys)


def test_a_predictor_on_a_fine_tuned_embedding_calls_new_cells(
    store: Store, checkpoint: Path, run
) -> None:
    """`predict` folds the fold's adapter into the base again: cells uploaded anew embed
    as the same cells did in the store."""
    store.finetune(_request(checkpoint, embed_as="cellplm-ft"))  # reused when already run
    store.train_predictor("cellplm-ft.fold0", "logreg", "tuned")
    recipe = load_predictor(store, "tuned")[0]["embedding"]["load_recipe"]
    assert recipe["adapter"].endswith("fold0/adapter") and recipe["options"] == OPTIONS
    same_cells = store.path.parent / "files" / "ds0_s1.tsv"
    result = store.predict("tuned", [same_cells], dataset_id="again", samples=["s1"])
    assert len(result.cells) == 30 and result.cells["prob_sensitive"].between(0, 1).all()
    np.testing.assert_allclose(
        store.embedding_array("cellplm-ft.fold0", "again").read_all(),
        store.embedding_array("cellplm-ft.fold0", "ds0").read_all()[:30],
        atol=1e-5,
    )


def test_finetune_from_the_command_line(store: Store, checkpoint: Path) -> None:
    common = ["--model", "cellplm", "--checkpoint", str(checkpoint), "--device", "cpu"]
    common += ["--param", "block_size=16"]
    result = cli(
        "finetune",
        *common,
        "--split",
        "cross-dataset",
        "--epochs",
        "1",
        "--accumulate",
        "2",
        "--lr",
        "1e-3",
        "--embed-as",
        "cli-ft",
        "--json",
        store=store.path,
    )
    record = json.loads(result.stdout)
    assert record["run_id"].startswith("ft-")
    assert {r["fold_name"] for r in record["results"]} == {"ds0", "ds1"}
    listed = json.loads(cli("embeddings", "--json", store=store.path).stdout)
    keys = {row["key"] for row in listed}
    assert {"cli-ft.fold0", "cli-ft.fold1"} <= keys
    failed = cli(
        "finetune",
        *common,
        "--split",
        "pooled",
        "--lora-targets",
        "q_proj",
        store=store.path,
        check=False,
    )
    assert failed.returncode == 1 and "unknown LoRA target module(s) q_proj" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
