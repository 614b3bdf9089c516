"""Fine-tuning runs: per fold, LoRA adapters and a head trained on that fold's training cells
only, scored on its held-out cells, and written to the same tables as frozen-embedding runs.

Each fold starts from a fresh copy of the base model. Its adapter (peft's
safetensors and config), head, the cells it was trained on and the base
checkpoint's sha256 are kept under `finetune/<settings hash>/fold<k>/`; the
same command rerun after a crash finds them there, skips finished folds
and resumes an unfinished one at its last epoch.

`embed_as` re-embeds the selection's data sets with each fold's adapter as
the embedding `<embed_as>.fold<k>`, whose settings name the base model, the
adapter (its sha256) and the file of cells it was trained on; evaluation
of that embedding leaves those cells out, so none is ever scored.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from scdrugmap.classify.classifiers import LORA_CLASSIFIER
from scdrugmap.classify.evaluate import (
    RunIdentity,
    RunRecord,
    finish_run,
    score_fold,
    select_and_split,
)
from scdrugmap.classify.selection import choose_counts
from scdrugmap.classify.splits import make_split
from scdrugmap.embed.build import load_foundation_model
from scdrugmap.embed.into_store import embed_into_store
from scdrugmap.embed.protocol import TrainableEmbedder
from scdrugmap.embed.registry import get_model
from scdrugmap.errors import InputError
from scdrugmap.finetune.cells import CellSource
from scdrugmap.finetune.lora import (
    LoraSettings,
    attach_lora,
    merge_adapter,
    modules_on_path,
    resolve_targets,
)
from scdrugmap.finetune.train import TrainSettings, predict, train_fold
from scdrugmap.provenance import canonical_json, file_sha256, settings_hash, utc_now
from scdrugmap.store.storage import check_key

VALIDATION_FOLDS = 5
ADAPTER_DIR = "adapter"
FOLD_DONE = "predictions.npz"
PROBE_CELLS = 8


@dataclass(frozen=True)
class FinetuneRequest:
    model: str
    split: str
    checkpoint: str | os.PathLike | None = None
    where: str | None = None
    n_folds: int = 5
    shots: int = 5
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    device: str = "auto"
    options: dict = field(default_factory=dict)
    embed_as: str | None = None


def _check_settings(train: TrainSettings) -> None:
    if min(train.epochs, train.batch_size, train.accumulate, train.patience) < 1:
        raise InputError("--epochs, --batch-size, --accumulate and --patience must be at least 1")
    if train.lr <= 0:
        raise InputError(f"--lr must be positive, not {train.lr}")


def load_trainable(request: FinetuneRequest) -> TrainableEmbedder:
    """The base model, refused before any work unless it is a network LoRA can adapt."""
    spec = get_model(request.model)
    if spec.fitted_in_store:
        raise InputError(f"{request.model} is a baseline with no network to fine-tune")
    embedder = load_foundation_model(spec, request.checkpoint, request.device, request.options)
    if not isinstance(embedder, TrainableEmbedder):
        raise InputError(f"{request.model} cannot be fine-tuned: it exposes no trainable network")
    return embedder


def carve_validation(
    train: np.ndarray, labels: np.ndarray, samples: np.ndarray, datasets: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Early-stopping cells taken from the training fold, grouped by sample where possible."""
    if len(train) == 0:
        raise InputError("a fold has no training cells; select more cells or samples")
    if len(np.unique(labels[train])) < 2:
        raise InputError(
            "a fold's training cells hold one class only; fine-tuning needs sensitive and "
            "resistant cells (check the selection with `scdrugmap sql`)"
        )
    plan = make_split(
        "pooled",
        labels[train],
        samples[train],
        datasets[train],
        n_folds=VALIDATION_FOLDS,
        seed=seed,
    )
    inner = plan.folds[0]
    return train[inner.train], train[inner.test]


def _adapted_modules(
    embedder: TrainableEmbedder, lora: LoraSettings, source: CellSource, train: np.ndarray
) -> tuple[list[str], list[str]]:
    """The target modules the embedding depends on, asked of the model on a few training
    cells (Geneformer's last layer, say, is past the layer its embedding is read from)."""
    if len(train) == 0:
        raise InputError("a fold has no training cells; select more cells or samples")
    first = train[source.datasets[train] == source.datasets[train[0]]][:PROBE_CELLS]
    counts, genes, ordered = source.counts(first)
    batch = embedder.tokenize(counts, genes)
    return modules_on_path(
        embedder.model, lora.targets, lambda: embedder.encode(batch, np.arange(len(ordered)))
    )


def _save_fold(
    folder: Path, embedder, head, record: dict, source: CellSource, trained: np.ndarray
) -> None:
    from safetensors.torch import save_file

    embedder.model.save_pretrained(folder / ADAPTER_DIR)
    save_file(head.state_dict(), str(folder / "head.safetensors"))
    (folder / "scdrugmap.json").write_text(json.dumps(record, indent=2, default=str))
    np.savez_compressed(
        folder / "trained_cells.npz",
        dataset_id=source.datasets[trained],
        cell_index=source.rows[trained],
    )


def _embed_with_adapters(
    store, request: FinetuneRequest, embedder, work: Path, plan, dataset_ids
) -> None:
    """Each fold's adapter, folded into a copy of the base, embeds the data sets; the
    embedding's load recipe names the adapter, so `predict` can fold it in again."""
    base, settings, recipe = embedder.model, embedder.settings, embedder.load_recipe
    for fold in plan.folds:
        folder = work / f"fold{fold.index}"
        embedder.model = merge_adapter(copy.deepcopy(base), folder / ADAPTER_DIR)
        embedder.load_recipe = {
            **recipe,
            "adapter": str((folder / ADAPTER_DIR).relative_to(store.path)),
        }
        embedder.settings = {
            **settings,
            "adapter": {
                "base_model": request.model,
                "adapter_sha256": file_sha256(folder / ADAPTER_DIR / "adapter_model.safetensors"),
                "fold": fold.index,
                "trained_cells": str((folder / "trained_cells.npz").relative_to(store.path)),
                "n_trained_cells": len(fold.train),
            },
        }
        try:
            embed_into_store(store, embedder, f"{request.embed_as}.fold{fold.index}", dataset_ids)
        finally:
            embedder.settings, embedder.load_recipe = settings, recipe
    embedder.model = base


def finetune(store, request: FinetuneRequest, show_progress: bool = False) -> RunRecord:
    started = time.perf_counter()
    _check_settings(request.train)
    if request.embed_as is not None:
        check_key(f"{request.embed_as}.fold0", "--embed-as key")
    embedder = load_trainable(request)
    base = embedder.model
    lora = replace(
        request.lora,
        targets=resolve_targets(base, request.lora.targets, embedder.lora_targets),
    )
    seed = request.train.seed
    chosen = choose_counts(store, request.where)
    where = chosen.where
    cells, labels, datasets, plan = select_and_split(
        store, where, request.split, n_folds=request.n_folds, shots=request.shots, seed=seed
    )
    source = CellSource(store, cells)
    modules, left_out = _adapted_modules(embedder, lora, source, plan.folds[0].train)
    provenance = embedder.provenance()
    params = {
        "lora": lora.as_dict(),
        "lora_modules": modules,
        "lora_modules_left_out": left_out,
        "train": request.train.as_dict(),
        "n_folds": request.n_folds,
        "shots": request.shots,
        "weights_sha256": provenance.get("weights_sha256"),
        "model_settings": provenance.get("settings", {}),
        **plan.params,
    }
    cell_key = canonical_json([cells["dataset_id"].tolist(), cells["cell_index"].tolist(), where])
    run_hash = settings_hash(request.model, {**params, "cells": cell_key, "split": request.split})
    work = store.path / "finetune" / run_hash
    params["work_dir"] = str(work.relative_to(store.path))
    run_id = f"ft-{utc_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    fold_keys = ("weights_sha256", "model_settings", "lora", "lora_modules", "train")
    shared = {"base_model": request.model, "selection": where}
    shared |= {k: params[k] for k in fold_keys}
    results, predictions = [], []
    for fold in plan.folds:
        folder = work / f"fold{fold.index}"
        done = folder / FOLD_DONE
        if done.exists():
            prob = np.load(done)["prob_sensitive"]
        else:
            train, validation = carve_validation(fold.train, labels, source.samples, datasets, seed)
            embedder.model = attach_lora(copy.deepcopy(base), lora, modules, seed)
            head, state = train_fold(
                embedder, source, train, validation, labels, request.train, folder, show_progress
            )
            prob = predict(embedder, head, source, fold.test)
            record = {
                **shared,
                "fold": fold.index,
                "fold_name": fold.name,
                "best_epoch": state.best_epoch,
                "history": state.history,
                "n_trained_cells": len(fold.train),
            }
            _save_fold(folder, embedder, head, record, source, fold.train)
            partial = folder / "predictions.partial.npz"
            np.savez(partial, prob_sensitive=prob)
            os.replace(partial, done)
        fold_results, fold_predictions = score_fold(
            run_id, fold, labels[fold.test], prob, datasets[fold.test], source.rows[fold.test]
        )
        results += fold_results
        predictions.append(fold_predictions)
    embedder.model = base
    if request.embed_as is not None:
        _embed_with_adapters(store, request, embedder, work, plan, sorted(set(datasets.tolist())))
        params["embedded_as"] = [f"{request.embed_as}.fold{f.index}" for f in plan.folds]
    identity = RunIdentity(
        run_id,
        "finetune",
        request.model,
        LORA_CLASSIFIER,
        request.split,
        where,
        seed,
        params,
    )
    record = finish_run(
        store, identity, plan, cells, time.perf_counter() - started, results, predictions
    )
    return replace(record, selection_message=chosen.message)
