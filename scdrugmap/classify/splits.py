"""Train/test splits that keep samples (or data sets) apart.

Cells of one sample share a label, a batch and a donor, so a classifier that
sees some of them in training can "predict" the rest from batch effects alone.
Every split therefore groups by sample (or by data set for cross-dataset and
few-shot); only when the data make that impossible does it fall back to
cell-level folds, and then the plan says so (`cell_level`, `note`) so that the
reader of a result knows it is optimistic (DESIGN.md, "Honest evaluation").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from scdrugmap.classify.labels import CLASS_NAMES
from scdrugmap.errors import InputError

SPLIT_KINDS = ("pooled", "cross-dataset", "few-shot")


@dataclass(frozen=True)
class Fold:
    index: int
    name: str
    train: np.ndarray
    test: np.ndarray


@dataclass
class SplitPlan:
    kind: str
    folds: list[Fold]
    cell_level: bool
    note: str | None
    params: dict = field(default_factory=dict)


def _positions(mask_or_positions: np.ndarray) -> np.ndarray:
    array = np.asarray(mask_or_positions)
    if array.dtype == bool:
        array = np.flatnonzero(array)
    return np.sort(array.astype(np.int64))


def _check_fold(fold: Fold, samples: np.ndarray | None) -> None:
    """The guarantees every fold gives, checked at run time and not only in tests.

    `samples` is None for folds that are cell-level by design (the fallback).
    """
    if np.intersect1d(fold.train, fold.test).size:
        raise AssertionError(f"split bug: fold {fold.name} has a cell on both sides")
    if samples is not None:
        shared = np.intersect1d(samples[fold.train], samples[fold.test])
        if shared.size:
            raise AssertionError(
                f"split bug: fold {fold.name} has sample {str(shared[0])!r} on both sides"
            )


def _inputs(
    labels: np.ndarray, samples: np.ndarray, datasets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel()
    samples = np.asarray(samples).ravel().astype(str)
    datasets = np.asarray(datasets).ravel().astype(str)
    if not labels.size == samples.size == datasets.size:
        raise InputError(
            f"labels, samples and datasets differ in length "
            f"({labels.size}, {samples.size}, {datasets.size}); pass one of each per cell"
        )
    if labels.size == 0:
        raise InputError("the selection holds no cells; widen it (check it with `scdrugmap sql`)")
    if not np.isin(labels, (0, 1)).all():
        raise InputError("labels must be 0 (resistant) or 1 (sensitive)")
    labels = labels.astype(np.int8)
    present = np.unique(labels)
    if present.size < 2:
        raise InputError(
            f"the selection holds only {CLASS_NAMES[int(present[0])]} cells; "
            "a classifier needs both labels: widen the selection"
        )
    return labels, samples, datasets


def _samples_per_class(labels: np.ndarray, samples: np.ndarray) -> dict[int, int]:
    return {c: np.unique(samples[labels == c]).size for c in (0, 1)}


def _cell_level_folds(
    labels: np.ndarray, n_folds: int, seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    smallest = int(np.bincount(labels, minlength=2).min())
    k = min(n_folds, smallest)
    if k < 2:
        raise InputError(
            f"only {smallest} cell carries the rarer label; at least 2 per label are needed "
            "for any cross-validation: widen the selection"
        )
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(labels.size), labels)), k


def _pooled(labels: np.ndarray, samples: np.ndarray, n_folds: int, seed: int) -> SplitPlan:
    per_class = _samples_per_class(labels, samples)
    rarest = min(per_class, key=lambda c: (per_class[c], c))
    k = min(n_folds, per_class[rarest])
    params = {"n_folds": n_folds, "seed": seed}
    if k < 2:
        pairs, k = _cell_level_folds(labels, n_folds, seed)
        note = (
            f"only {per_class[rarest]} sample carries label {CLASS_NAMES[rarest]}; "
            "sample-grouped folds impossible; cells of one sample are on both sides of "
            "every split, so scores are optimistic"
        )
        if k < n_folds:
            note += f"; {k} cell-level folds instead of {n_folds} (too few cells of one label)"
        folds = [
            Fold(i, f"fold-{i}", _positions(train), _positions(test))
            for i, (train, test) in enumerate(pairs)
        ]
        for fold in folds:
            _check_fold(fold, None)
        return SplitPlan(
            "pooled", folds, True, note, {**params, "n_folds_used": k, "level": "cell"}
        )

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [
        Fold(i, f"fold-{i}", _positions(train), _positions(test))
        for i, (train, test) in enumerate(splitter.split(np.zeros(labels.size), labels, samples))
    ]
    for fold in folds:
        _check_fold(fold, samples)
        _require_both_classes(labels[fold.train], f"the training cells of {fold.name}")
    note = None
    if k < n_folds:
        note = (
            f"{k} folds instead of {n_folds}: only {per_class[rarest]} samples carry label "
            f"{CLASS_NAMES[rarest]}, and each fold must hold out whole samples"
        )
    return SplitPlan("pooled", folds, False, note, {**params, "n_folds_used": k, "level": "sample"})


def _require_both_classes(labels: np.ndarray, what: str, fix: str = "") -> None:
    present = np.unique(labels)
    if present.size < 2:
        only = CLASS_NAMES[int(present[0])] if present.size else "no"
        raise InputError(
            f"{what} hold only {only} cells; a classifier needs both labels"
            + (f": {fix}" if fix else "")
        )


def _dataset_ids(datasets: np.ndarray, kind: str) -> list[str]:
    ids = [str(d) for d in np.unique(datasets)]
    if len(ids) < 2:
        raise InputError(
            f"{kind} evaluation needs cells from at least 2 data sets, the selection holds "
            f"only {ids[0]!r}: widen the selection or use the pooled split"
        )
    return ids


def _cross_dataset(
    labels: np.ndarray, samples: np.ndarray, datasets: np.ndarray, seed: int
) -> SplitPlan:
    folds = []
    for i, dataset_id in enumerate(_dataset_ids(datasets, "cross-dataset")):
        held_out = datasets == dataset_id
        fold = Fold(i, dataset_id, _positions(~held_out), _positions(held_out))
        _require_both_classes(
            labels[fold.train],
            f"with data set {dataset_id!r} held out, the training cells",
            "add data sets carrying the missing label to the selection",
        )
        _check_fold(fold, samples)
        folds.append(fold)
    return SplitPlan("cross-dataset", folds, False, None, {"seed": seed})


def _dataset_rng(seed: int, dataset_id: str) -> np.random.Generator:
    """Shots of one data set do not depend on which other data sets are selected."""
    return np.random.default_rng([seed, zlib.crc32(dataset_id.encode())])


def _few_shot_fold(
    index: int,
    dataset_id: str,
    labels: np.ndarray,
    samples: np.ndarray,
    datasets: np.ndarray,
    shots: int,
    seed: int,
) -> tuple[Fold, str | None]:
    """One target data set's fold, and why it fell back to cell level (None if it did not)."""
    rng = _dataset_rng(seed, dataset_id)
    target = datasets == dataset_id
    for c in (0, 1):
        available = int(np.sum(target & (labels == c)))
        if available < shots:
            raise InputError(
                f"data set {dataset_id!r} holds {available} {CLASS_NAMES[c]} cells, fewer "
                f"than the {shots} shots per label: lower --shots or leave it out"
            )
    per_class = _samples_per_class(labels[target], samples[target])
    fallback = None
    if min(per_class.values()) >= 2:
        shot_cells, shot_samples = [], []
        for c in (0, 1):
            candidates = [
                s
                for s in np.unique(samples[target & (labels == c)])
                if np.sum(target & (labels == c) & (samples == s)) >= shots
            ]
            if not candidates:
                fallback = (
                    f"no sample of data set {dataset_id!r} holds {shots} {CLASS_NAMES[c]} cells"
                )
                break
            chosen = candidates[int(rng.integers(len(candidates)))]
            shot_samples.append(chosen)
            pool = np.flatnonzero(target & (labels == c) & (samples == chosen))
            shot_cells.append(rng.choice(pool, size=shots, replace=False))
        if fallback is None:
            test = target & ~np.isin(samples, shot_samples)
            if np.unique(labels[test]).size == 2:
                train = np.concatenate([np.flatnonzero(~target), *shot_cells])
                return Fold(index, dataset_id, _positions(train), _positions(test)), None
            fallback = f"the shot samples of data set {dataset_id!r} carry every cell of one label"
    else:
        rarest = min(per_class, key=lambda c: (per_class[c], c))
        fallback = (
            f"only {per_class[rarest]} sample of data set {dataset_id!r} carries label "
            f"{CLASS_NAMES[rarest]}"
        )
    rng = _dataset_rng(seed, dataset_id)
    shot_cells = [
        rng.choice(np.flatnonzero(target & (labels == c)), size=shots, replace=False)
        for c in (0, 1)
    ]
    shot_mask = np.zeros(labels.size, dtype=bool)
    shot_mask[np.concatenate(shot_cells)] = True
    train = ~target | shot_mask
    return Fold(index, dataset_id, _positions(train), _positions(target & ~shot_mask)), fallback


def _few_shot(
    labels: np.ndarray, samples: np.ndarray, datasets: np.ndarray, shots: int, seed: int
) -> SplitPlan:
    if shots < 1:
        raise InputError(f"--shots must be at least 1, got {shots}")
    folds, fallbacks = [], []
    for i, dataset_id in enumerate(_dataset_ids(datasets, "few-shot")):
        fold, fallback = _few_shot_fold(i, dataset_id, labels, samples, datasets, shots, seed)
        _check_fold(fold, samples if fallback is None else None)
        if fallback is not None:
            fallbacks.append(fallback)
        folds.append(fold)
    note = None
    if fallbacks:
        note = (
            "; ".join(fallbacks)
            + "; so the shots of those data sets are drawn from cells whose samples are also "
            "in the test set, and their scores are optimistic"
        )
    return SplitPlan("few-shot", folds, bool(fallbacks), note, {"shots": shots, "seed": seed})


def make_split(
    kind: str,
    labels: np.ndarray,
    samples: np.ndarray,
    datasets: np.ndarray,
    *,
    n_folds: int = 5,
    shots: int = 5,
    seed: int = 0,
) -> SplitPlan:
    """A deterministic split plan: the same inputs and seed give the same folds."""
    if kind not in SPLIT_KINDS:
        raise InputError(f"unknown split {kind!r}; choose one of: {', '.join(SPLIT_KINDS)}")
    labels, samples, datasets = _inputs(labels, samples, datasets)
    if kind == "pooled":
        if n_folds < 2:
            raise InputError(f"--n-folds must be at least 2, got {n_folds}")
        return _pooled(labels, samples, n_folds, seed)
    if kind == "cross-dataset":
        return _cross_dataset(labels, samples, datasets, seed)
    return _few_shot(labels, samples, datasets, shots, seed)
