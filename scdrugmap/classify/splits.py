"""Train/test splits that keep samples (or data sets) apart.

Cells of one sample share a label, a batch and a donor, so a classifier that
sees some of them in training can "predict" the rest from batch effects alone.
Every split therefore groups by sample (or by data set for cross-dataset and
few-shot); only when the data make that impossible does it fall back to
cell-level folds, and then the plan says so (`grouping`, `note`) so that the
reader of a result knows it is optimistic (DESIGN.md, "Honest evaluation").
Identical cells (one cell's copies, found by content hash) are kept on one side
of every split whatever the grouping (`classify/copies.py`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from scdrugmap.classify.copies import Copies, find_copies, merge_samples
from scdrugmap.classify.labels import CLASS_NAMES
from scdrugmap.errors import InputError

SPLIT_KINDS = ("pooled", "cross-dataset", "few-shot")
# What a split held out whole: samples, data sets, or (the optimistic fallback) cells;
# "none" for runs that train nothing (zero-shot).
GROUPINGS = ("sample", "dataset", "cell", "none")


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
    grouping: str
    note: str | None
    params: dict = field(default_factory=dict)

    @property
    def cell_level(self) -> bool:
        """Cells of one sample on both sides of a fold: scores are optimistic."""
        return self.grouping == "cell"


def _positions(mask_or_positions: np.ndarray) -> np.ndarray:
    array = np.asarray(mask_or_positions)
    if array.dtype == bool:
        array = np.flatnonzero(array)
    return np.sort(array.astype(np.int64))


def _check_fold(fold: Fold, samples: np.ndarray | None, copies: Copies) -> None:
    """The guarantees every fold gives, checked at run time and not only in tests.

    `samples` is None for folds that are cell-level by design (the fallback).
    """
    if np.intersect1d(fold.train, fold.test).size:
        raise AssertionError(f"split bug: fold {fold.name} has a cell on both sides")
    if np.intersect1d(copies.group[fold.train], copies.group[fold.test]).size:
        raise AssertionError(f"split bug: fold {fold.name} has a cell and its copy apart")
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
    labels: np.ndarray, n_folds: int, seed: int, copies: Copies
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """Stratified folds of cells; identical cells fold as one (their first cell's label)."""
    first = np.unique(copies.group, return_index=True)[1]
    units = labels[first]
    smallest = int(np.bincount(units, minlength=2).min())
    k = min(n_folds, smallest)
    if k < 2:
        raise InputError(
            f"only {smallest} cell carries the rarer label; at least 2 per label are needed "
            "for any cross-validation: widen the selection"
        )
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    pairs = list(folds.split(np.zeros(units.size), units))
    if units.size == labels.size:
        return pairs, k
    return [
        (np.flatnonzero(np.isin(copies.group, train)), np.flatnonzero(np.isin(copies.group, test)))
        for train, test in pairs
    ], k


def _pooled(
    labels: np.ndarray,
    samples: np.ndarray,
    datasets: np.ndarray,
    n_folds: int,
    seed: int,
    copies: Copies,
) -> SplitPlan:
    groups = merge_samples(samples, copies) if copies.n_copied else samples
    per_class = _samples_per_class(labels, groups)
    rarest = min(per_class, key=lambda c: (per_class[c], c))
    k = min(n_folds, per_class[rarest])
    params = {"n_folds": n_folds, "seed": seed}
    if k < 2:
        pairs, k = _cell_level_folds(labels, n_folds, seed, copies)
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
            _check_fold(fold, None, copies)
        return SplitPlan(
            "pooled", folds, "cell", note, {**params, "n_folds_used": k, "level": "cell"}
        )

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [
        Fold(i, f"fold-{i}", _positions(train), _positions(test))
        for i, (train, test) in enumerate(splitter.split(np.zeros(labels.size), labels, groups))
    ]
    for fold in folds:
        _check_fold(fold, samples, copies)
        _require_both_classes(labels[fold.train], f"the training cells of {fold.name}")
    note = None
    if k < n_folds:
        note = (
            f"{k} folds instead of {n_folds}: only {per_class[rarest]} samples carry label "
            f"{CLASS_NAMES[rarest]}, and each fold must hold out whole samples"
        )
    if groups is not samples and np.unique(groups).size < np.unique(samples).size:
        merged = np.unique(samples).size - np.unique(groups).size
        note = _joined(note, f"identical cells join samples: {merged} fewer sample groups to fold")
    return SplitPlan(
        "pooled",
        folds,
        _sample_or_dataset(groups, datasets),
        note,
        {**params, "n_folds_used": k, "level": "sample"},
    )


def _sample_or_dataset(groups: np.ndarray, datasets: np.ndarray) -> str:
    """'dataset' when every group is made of whole data sets (one sample per data set, or
    data sets joined by copies): holding out a group is then holding out data sets, which
    is what the run measured and must say."""
    pairs = np.unique(np.stack([groups, datasets]), axis=1)
    whole = pairs.shape[1] == np.unique(pairs[1]).size
    return "dataset" if whole else "sample"


def _joined(*notes: str | None) -> str | None:
    kept = [n for n in notes if n]
    return "; ".join(kept) if kept else None


def _without_copies_of_test(fold: Fold, copies: Copies) -> tuple[Fold, int]:
    """The fold less the training cells identical to a test cell, and how many went."""
    copied = np.isin(copies.group[fold.train], copies.group[fold.test])
    if not copied.any():
        return fold, 0
    return Fold(fold.index, fold.name, fold.train[~copied], fold.test), int(copied.sum())


def _dropped_note(dropped: dict[str, int]) -> str | None:
    if not dropped:
        return None
    counts = ", ".join(f"{n} for {name!r}" for name, n in dropped.items())
    return (
        f"training cells identical to held-out cells were left out of training ({counts}), "
        "so no fold scores a copy of a cell it learned"
    )


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
    labels: np.ndarray, samples: np.ndarray, datasets: np.ndarray, seed: int, copies: Copies
) -> SplitPlan:
    folds, dropped = [], {}
    for i, dataset_id in enumerate(_dataset_ids(datasets, "cross-dataset")):
        held_out = datasets == dataset_id
        fold, n_dropped = _without_copies_of_test(
            Fold(i, dataset_id, _positions(~held_out), _positions(held_out)), copies
        )
        if n_dropped:
            dropped[dataset_id] = n_dropped
        _require_both_classes(
            labels[fold.train],
            f"with data set {dataset_id!r} held out, the training cells",
            "add data sets carrying the missing label to the selection",
        )
        _check_fold(fold, samples, copies)
        folds.append(fold)
    return SplitPlan("cross-dataset", folds, "dataset", _dropped_note(dropped), {"seed": seed})


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
    labels: np.ndarray,
    samples: np.ndarray,
    datasets: np.ndarray,
    shots: int,
    seed: int,
    copies: Copies,
) -> SplitPlan:
    if shots < 1:
        raise InputError(f"--shots must be at least 1, got {shots}")
    folds, fallbacks, dropped = [], [], {}
    for i, dataset_id in enumerate(_dataset_ids(datasets, "few-shot")):
        fold, fallback = _few_shot_fold(i, dataset_id, labels, samples, datasets, shots, seed)
        fold, n_dropped = _without_copies_of_test(fold, copies)
        if n_dropped:
            dropped[dataset_id] = n_dropped
        _check_fold(fold, samples if fallback is None else None, copies)
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
    return SplitPlan(
        "few-shot",
        folds,
        "cell" if fallbacks else "sample",
        _joined(note, _dropped_note(dropped)),
        {"shots": shots, "seed": seed},
    )


def make_split(
    kind: str,
    labels: np.ndarray,
    samples: np.ndarray,
    datasets: np.ndarray,
    *,
    n_folds: int = 5,
    shots: int = 5,
    seed: int = 0,
    content_hashes: np.ndarray | None = None,
) -> SplitPlan:
    """A deterministic split plan: the same inputs and seed give the same folds.

    `content_hashes` (one per cell, "" where unknown) keeps identical cells together.
    """
    if kind not in SPLIT_KINDS:
        raise InputError(f"unknown split {kind!r}; choose one of: {', '.join(SPLIT_KINDS)}")
    labels, samples, datasets = _inputs(labels, samples, datasets)
    copies = find_copies(content_hashes, labels)
    if kind == "pooled":
        if n_folds < 2:
            raise InputError(f"--n-folds must be at least 2, got {n_folds}")
        plan = _pooled(labels, samples, datasets, n_folds, seed, copies)
    elif kind == "cross-dataset":
        plan = _cross_dataset(labels, samples, datasets, seed, copies)
    else:
        plan = _few_shot(labels, samples, datasets, shots, seed, copies)
    plan.note = _joined(plan.note, copies.note())
    return plan
