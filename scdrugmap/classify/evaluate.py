"""Evaluation runs: SQL selection -> stored embeddings -> split -> fit -> metrics.

Everything a run needs to be reproduced goes into the store with it: the split
(every fold's cells, in `splits/<split_id>.npz`), the classifier and its seed,
the selection, and every held-out prediction, next to per-fold metrics.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from scdrugmap.classify.calibration import fit_calibration
from scdrugmap.classify.classifiers import make_classifier
from scdrugmap.classify.metrics import (
    CALIBRATED_SUFFIX,
    MetricValue,
    calibration_metrics,
    compute_metrics,
)
from scdrugmap.classify.selection import (
    LeftOut,
    choose_for_embedding,
    failed_cells,
    leave_out,
)
from scdrugmap.classify.splits import Fold, SplitPlan, make_split
from scdrugmap.classify.threads import choose_policy, map_folds
from scdrugmap.errors import InputError
from scdrugmap.progress import progress_bar
from scdrugmap.provenance import canonical_json, package_versions, utc_now
from scdrugmap.store.catalog import connect

CONTROLS = ("shuffled",)
# Features of every selected cell for one fold, and the data sets they were fitted on:
# how a baseline refitted within each fold reaches the evaluation.
FoldFeatures = Callable[[Fold, pd.DataFrame], tuple[np.ndarray, list[str]]]


@dataclass
class RunRecord:
    run_id: str
    embedding: str
    classifier: str
    split: str
    n_cells: int
    grouping: str
    control: str | None
    note: str | None
    seconds: float
    results: pd.DataFrame
    # Which data sets were chosen, when the caller gave no --where.
    selection_message: str | None = None

    @property
    def cell_level(self) -> bool:
        return self.grouping == "cell"


def _split_id(plan: SplitPlan, cells: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(canonical_json({"kind": plan.kind, "params": plan.params}).encode())
    digest.update(cells["dataset_id"].to_numpy(dtype=str).astype("U64").tobytes())
    digest.update(cells["cell_index"].to_numpy(dtype=np.int64).tobytes())
    return f"{plan.kind}-{digest.hexdigest()[:16]}"


def split_record(
    split_id: str, plan: SplitPlan, n_cells: int, where: str | None, note: str | None = None
) -> dict:
    """The `splits` row of a plan: which cells were held out how, under which selection."""
    return {
        "split_id": split_id,
        "kind": plan.kind,
        "n_folds": len(plan.folds),
        "n_cells": n_cells,
        "cell_level": plan.cell_level,
        "grouping": plan.grouping,
        "note": plan.note if note is None else note,
        "params": canonical_json(plan.params),
        "selection": where,
        "created_at": utc_now(),
    }


def _save_split(store_path: Path, split_id: str, plan: SplitPlan, cells: pd.DataFrame) -> None:
    """Keep every fold's exact cells so the run can be repeated or audited."""
    path = store_path / "splits" / f"{split_id}.npz"
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "dataset_id": cells["dataset_id"].to_numpy(dtype=str),
        "cell_index": cells["cell_index"].to_numpy(dtype=np.int64),
        "fold_names": np.array([f.name for f in plan.folds], dtype=str),
    }
    for fold in plan.folds:
        arrays[f"fold{fold.index}_train"] = fold.train
        arrays[f"fold{fold.index}_test"] = fold.test
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, **arrays)
    os.replace(partial, path)


def _metric_rows(
    run_id: str,
    fold,
    scope: str,
    dataset_id: str | None,
    y: np.ndarray,
    prob: np.ndarray,
    calibrated: np.ndarray | None = None,
    not_calibrated: str | None = None,
) -> list[dict]:
    """Every metric of one test set, with ece and brier of the raw probabilities and, for
    a run that calibrates, of the `calibrated` ones (NaN with `not_calibrated` as the
    reason when its calibrator could not be fitted)."""
    metrics = {**compute_metrics(y, prob), **calibration_metrics(y, prob)}
    if calibrated is not None:
        metrics |= calibration_metrics(y, calibrated, CALIBRATED_SUFFIX)
    elif not_calibrated is not None:
        metrics |= {
            f"{name}{CALIBRATED_SUFFIX}": MetricValue.undefined(not_calibrated)
            for name in calibration_metrics(y, prob)
        }
    return [
        {
            "run_id": run_id,
            "fold": fold.index,
            "fold_name": fold.name,
            "scope": scope,
            "dataset_id": dataset_id,
            "metric": name,
            "value": value.value,
            "reason": value.reason,
            "n_train": len(fold.train),
            "n_test": len(y),
        }
        for name, value in metrics.items()
    ]


def write_run(
    catalog: Path,
    run: dict,
    split_row: dict,
    results: pd.DataFrame,
    predictions: pd.DataFrame,
    extra: dict[str, pd.DataFrame] | None = None,
) -> None:
    """A run with its split, metrics, predictions (and `extra` tables) in one transaction."""
    tables = {
        "runs": pd.DataFrame([run]),
        "results": results,
        "predictions": predictions,
        **(extra or {}),
    }
    with connect(catalog, write=True) as con:
        con.register("new_split", pd.DataFrame([split_row]))
        for table, frame in tables.items():
            con.register(f"new_{table}", frame)
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "INSERT INTO splits BY NAME SELECT * FROM new_split "
            "WHERE split_id NOT IN (SELECT split_id FROM splits)"
        )
        for table in tables:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM new_{table}")
        con.execute("COMMIT")


class Selection(NamedTuple):
    """The selected labelled cells (store order), their labels and data sets, and the split."""

    cells: pd.DataFrame
    labels: np.ndarray
    datasets: np.ndarray
    plan: SplitPlan


def _copy_hashes(cells: pd.DataFrame) -> np.ndarray:
    """Content hashes for the splits to keep copies together; "" (never a copy) for cells
    ingested before hashes were kept and for empty cells, which are all alike without
    being copies of one another."""
    hashes = cells["content_hash"].where(cells["n_genes"].fillna(1) > 0)
    return hashes.fillna("").to_numpy(dtype=str)


def select_and_split(
    store,
    where: str | None,
    split: str,
    *,
    n_folds: int,
    shots: int,
    seed: int,
    left_out: Sequence[LeftOut] = (),
) -> Selection:
    """The cells a SQL condition selects, less the `left_out` groups, split so that
    samples (or data sets) stay apart; the plan's note counts what was left out."""
    cells = store.cells(
        where,
        columns=("dataset_id", "cell_index", "sample", "label", "n_genes", "content_hash"),
    )
    cells, left_notes = leave_out(cells, list(left_out))
    if cells.empty:
        raise InputError(
            "the selection holds no labelled cells"
            + (f" (--where {where!r})" if where else "")
            + (f" once {'; '.join(left_notes)}" if left_notes else "")
            + "; check it with `scdrugmap sql`"
        )
    labels = (cells["label"] == "sensitive").to_numpy(dtype=np.int8)
    datasets = cells["dataset_id"].to_numpy(dtype=str)
    samples = (cells["dataset_id"] + "/" + cells["sample"]).to_numpy(dtype=str)
    plan = make_split(
        split,
        labels,
        samples,
        datasets,
        n_folds=n_folds,
        shots=shots,
        seed=seed,
        content_hashes=_copy_hashes(cells),
    )
    if left_notes:
        plan.note = "; ".join(([plan.note] if plan.note else []) + left_notes)
    return Selection(cells, labels, datasets, plan)


def embedding_left_out(store, embedding: str) -> list[LeftOut]:
    """Cells a run on `embedding` must not use: those it saw nothing of, and those a
    fine-tuned embedding's adapter was trained on."""
    groups = [failed_cells(store, embedding)]
    trained = store.adapter_trained_cells(embedding)
    if trained is not None:
        groups.append(LeftOut(trained, "the embedding's adapter was trained on"))
    return groups


def shuffled_labels(labels: np.ndarray, datasets: np.ndarray, seed: int) -> np.ndarray:
    """The labels permuted among the cells of each data set.

    Each data set keeps its share of sensitive cells (a cross-dataset fold would
    otherwise learn prevalence, not biology) and every fold stays as it was, so the
    control differs from the real run in one thing only: whether labels mean anything.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    shuffled = labels.copy()
    for dataset_id in np.unique(datasets):
        positions = np.flatnonzero(datasets == dataset_id)
        shuffled[positions] = labels[rng.permutation(positions)]
    return shuffled


def check_control(control: str | None) -> None:
    if control is not None and control not in CONTROLS:
        raise InputError(f"unknown --control {control!r}; choose {', '.join(CONTROLS)}")


def evaluate(
    store,
    embedding: str,
    classifier: str,
    split: str,
    *,
    where: str | None = None,
    n_folds: int = 5,
    shots: int = 5,
    seed: int = 0,
    control: str | None = None,
    fold_features: FoldFeatures | None = None,
    run_name: str | None = None,
    show_progress: bool = False,
) -> RunRecord:
    """Cross-validate `classifier` on `embedding`; `control="shuffled"` scores the same
    folds with labels permuted within each data set, stored as that run's control.

    `fold_features` replaces the stored embedding fold by fold (a baseline refitted on
    each fold's training data sets), and the run is kept under `run_name`."""
    started = time.perf_counter()
    check_control(control)
    make_classifier(classifier, seed=seed)
    chosen = choose_for_embedding(store, embedding, where)
    where = chosen.where
    cells, labels, datasets, plan = select_and_split(
        store,
        where,
        split,
        n_folds=n_folds,
        shots=shots,
        seed=seed,
        left_out=embedding_left_out(store, embedding),
    )
    features = store.load_embedding(embedding, cells) if fold_features is None else None
    fold_fits: dict[str, list[str]] = {}
    if control == "shuffled":
        labels = shuffled_labels(labels, datasets, seed)
    run_id = f"run-{utc_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    results, predictions = [], []
    title = f"{embedding} × {classifier} × {split}" + (f" ({control})" if control else "")
    # A refit per fold writes to the store, so those folds run one at a time.
    policy = choose_policy(len(plan.folds), parallel=fold_features is None)
    cell_index = cells["cell_index"].to_numpy()
    # The fold's calibrator is chosen by folds within its training cells, kept apart by
    # sample (and identical cell) as the outer folds are; what each fold chose is recorded.
    samples = (cells["dataset_id"] + "/" + cells["sample"]).to_numpy(dtype=str)
    hashes = _copy_hashes(cells)
    calibrations: dict[str, dict] = {}

    def run_fold(fold: Fold) -> tuple[list[dict], pd.DataFrame, list[str] | None]:
        fold_x, fits = features, None
        if fold_features is not None:
            fold_x, fits = fold_features(fold, cells)
        model = make_classifier(classifier, seed=seed, n_jobs=policy.library_threads)
        model.fit(fold_x[fold.train], labels[fold.train])
        sensitive_column = list(model.classes_).index(1)
        prob = model.predict_proba(fold_x[fold.test])[:, sensitive_column]
        train = fold.train
        calibration = fit_calibration(
            lambda: make_classifier(classifier, seed=seed, n_jobs=policy.library_threads),
            fold_x[train],
            labels[train],
            samples[train],
            datasets[train],
            hashes[train],
            seed=seed,
        )
        calibrations[fold.name] = {
            k: v for k, v in calibration.summary().items() if k != "reliability"
        }
        fold_results, fold_predictions = score_fold(
            run_id,
            fold,
            labels[fold.test],
            prob,
            datasets[fold.test],
            cell_index[fold.test],
            calibrated=calibration.apply(prob),
            not_calibrated=calibration.note if calibration.calibrator is None else None,
        )
        return fold_results, fold_predictions, fits

    with progress_bar(show_progress, len(plan.folds), title, unit="folds") as advance:
        outcomes = map_folds(policy, run_fold, plan.folds, advance)
    for fold, (fold_results, fold_predictions, fits) in zip(plan.folds, outcomes, strict=True):
        results += fold_results
        predictions.append(fold_predictions)
        if fits is not None:
            fold_fits[fold.name] = fits
    params = {"n_folds": n_folds, "shots": shots, **plan.params, "threads": policy.record()}
    params["calibration"] = {fold.name: calibrations[fold.name] for fold in plan.folds}
    if fold_features is not None:
        params |= {"embedding_key": embedding, "fold_fits": fold_fits}
    identity = RunIdentity(
        run_id,
        "evaluate",
        run_name or embedding,
        classifier,
        split,
        where,
        seed,
        params,
        control=control,
        # With fits per fold, `params.fold_fits` says what each fold's fit saw.
        fit_datasets=None if fold_features else store.embedding_fit_datasets(embedding),
    )
    record = finish_run(
        store,
        identity,
        plan,
        cells,
        time.perf_counter() - started,
        results,
        predictions,
    )
    return replace(record, selection_message=chosen.message)


def score_fold(
    run_id: str,
    fold,
    y: np.ndarray,
    prob: np.ndarray,
    datasets: np.ndarray,
    cell_index: np.ndarray,
    *,
    calibrated: np.ndarray | None = None,
    not_calibrated: str | None = None,
) -> tuple[list[dict], pd.DataFrame]:
    """A fold's metrics (pooled, and per data set) and its held-out predictions; with
    `calibrated` (the held-out cells' probabilities after the fold's calibrator) also
    their ece_calibrated and brier_calibrated, and `prob_calibrated` per cell."""
    results = _metric_rows(run_id, fold, "pooled", None, y, prob, calibrated, not_calibrated)
    for dataset_id in np.unique(datasets):
        mask = datasets == dataset_id
        mine = None if calibrated is None else calibrated[mask]
        results += _metric_rows(
            run_id, fold, "dataset", str(dataset_id), y[mask], prob[mask], mine, not_calibrated
        )
    predictions = pd.DataFrame(
        {
            "run_id": run_id,
            "fold": fold.index,
            "dataset_id": datasets,
            "cell_index": cell_index,
            "label": y,
            "prob_sensitive": prob.astype(np.float32),
            "predicted": (prob >= 0.5).astype(np.int8),
            "prob_calibrated": (
                np.full(len(y), np.nan) if calibrated is None else calibrated
            ).astype(np.float32),
        }
    )
    return results, predictions


@dataclass(frozen=True)
class RunIdentity:
    """What a run was: its id, kind (evaluate, finetune), inputs and settings; whether it
    is a control, and the data sets a fitted baseline embedding learned from."""

    run_id: str
    kind: str
    embedding: str
    classifier: str
    split: str
    where: str | None
    seed: int
    params: dict
    control: str | None = None
    fit_datasets: list[str] | None = None


def finish_run(
    store,
    identity: RunIdentity,
    plan: SplitPlan,
    cells: pd.DataFrame,
    seconds: float,
    results: list[dict],
    predictions: list[pd.DataFrame],
    *,
    split_note: str | None = None,
    extra: dict[str, pd.DataFrame] | None = None,
) -> RunRecord:
    """Save the split and write the run, its metrics and predictions in one transaction;
    `extra` tables (zero-shot failures, say) are written in the same transaction."""
    split_id = _split_id(plan, cells)
    _save_split(store.path, split_id, plan, cells)
    run = {
        "run_id": identity.run_id,
        "kind": identity.kind,
        "embedding": identity.embedding,
        "classifier": identity.classifier,
        "split": identity.split,
        "split_id": split_id,
        "selection": identity.where,
        "seed": identity.seed,
        "params": canonical_json(identity.params),
        "n_cells": len(cells),
        "n_folds": len(plan.folds),
        "cell_level": plan.cell_level,
        "grouping": plan.grouping,
        "control": identity.control,
        "fit_datasets": identity.fit_datasets,
        "note": plan.note,
        "seconds": seconds,
        "versions": canonical_json(package_versions()),
        "created_at": utc_now(),
    }
    results_frame = pd.DataFrame(results)
    write_run(
        store.catalog_path,
        run,
        split_record(split_id, plan, len(cells), identity.where, note=split_note),
        results_frame,
        pd.concat(predictions, ignore_index=True),
        extra=extra,
    )
    return RunRecord(
        identity.run_id,
        identity.embedding,
        identity.classifier,
        identity.split,
        len(cells),
        plan.grouping,
        identity.control,
        plan.note,
        seconds,
        results_frame,
    )
