"""Identical cells stay on one side of every split, and a run says what it grouped by."""

from __future__ import annotations

import numpy as np
import pytest

from scdrugmap.classify.copies import find_copies, merge_samples
from scdrugmap.classify.splits import make_split


def _cells(spec: list[tuple[str, str, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.concatenate([np.full(n, label, dtype=np.int8) for _, _, label, n in spec])
    samples = np.concatenate([np.full(n, f"{d}/{s}") for d, s, _, n in spec])
    datasets = np.concatenate([np.full(n, d) for d, _, _, n in spec])
    return labels, samples, datasets


def _unique_hashes(n: int) -> np.ndarray:
    return np.array([f"h{i}" for i in range(n)])


def _assert_copies_together(plan, hashes: np.ndarray) -> None:
    for fold in plan.folds:
        shared = set(hashes[fold.train]) & set(hashes[fold.test])
        assert not shared, (fold.name, sorted(shared)[:3])


def test_find_copies_counts_copies_and_conflicts_and_ignores_unknown_hashes() -> None:
    hashes = np.array(["a", "a", "b", "b", "c", "", ""])
    labels = np.array([1, 1, 1, 0, 0, 1, 1], dtype=np.int8)
    copies = find_copies(hashes, labels)
    assert copies.n_copied == 4 and copies.n_conflicting == 2
    assert copies.group[0] == copies.group[1] and copies.group[5] != copies.group[6]
    assert "opposite label" in copies.note()
    assert find_copies(None, labels).note() is None


def test_merge_samples_joins_only_samples_that_share_a_cell() -> None:
    samples = np.array(["s1", "s1", "s2", "s3", "s3", "s4"])
    hashes = np.array(["x", "y", "x", "z", "w", "v"])
    merged = merge_samples(samples, find_copies(hashes, np.zeros(6, dtype=np.int8)))
    assert merged.tolist() == ["s1", "s1", "s1", "s3", "s3", "s4"]
    without = find_copies(_unique_hashes(6), np.zeros(6, dtype=np.int8))
    assert merge_samples(samples, without) is samples


def test_pooled_folds_keep_a_copied_cell_with_its_copy_across_samples() -> None:
    spec = [("d", f"s{i}", i % 2, 20) for i in range(8)]
    labels, samples, datasets = _cells(spec)
    hashes = _unique_hashes(labels.size)
    hashes[25] = hashes[3]  # a cell of s1 is a copy of a cell of s0
    hashes[150] = hashes[45]  # s7 and s2
    plan = make_split("pooled", labels, samples, datasets, n_folds=4, content_hashes=hashes)
    assert plan.grouping == "sample"
    _assert_copies_together(plan, hashes)
    for fold in plan.folds:  # the joined samples are held out together or not at all
        for pair in (["d/s0", "d/s1"], ["d/s2", "d/s7"]):
            assert np.isin(pair, samples[fold.test]).sum() in (0, 2)
    assert "4 cells have an identical cell" in plan.note


def test_without_copies_the_folds_are_those_of_samples_alone() -> None:
    spec = [("d", f"s{i}", i % 2, 15) for i in range(6)]
    labels, samples, datasets = _cells(spec)
    plain = make_split("pooled", labels, samples, datasets, n_folds=3, seed=4)
    hashed = make_split(
        "pooled", labels, samples, datasets, n_folds=3, seed=4, content_hashes=_unique_hashes(90)
    )
    for a, b in zip(plain.folds, hashed.folds, strict=True):
        np.testing.assert_array_equal(a.test, b.test)
    assert hashed.note is None


def test_cell_level_folds_keep_copies_together() -> None:
    labels, samples, datasets = _cells([("pc9", "control", 1, 60), ("pc9", "treated", 0, 60)])
    hashes = _unique_hashes(120)
    hashes[60:70] = hashes[0:10]  # ten treated cells are copies of control cells
    plan = make_split("pooled", labels, samples, datasets, n_folds=5, content_hashes=hashes)
    assert plan.grouping == "cell" and plan.cell_level
    _assert_copies_together(plan, hashes)
    assert sorted(np.concatenate([f.test for f in plan.folds]).tolist()) == list(range(120))
    assert "20 cells have an identical cell" in plan.note
    assert "20 of them have an identical cell with the opposite label" in plan.note


@pytest.mark.parametrize("kind", ["cross-dataset", "few-shot"])
def test_data_set_folds_train_on_no_copy_of_a_held_out_cell(kind: str) -> None:
    spec = [
        (d, s, label, 20)
        for d in ("a", "b", "c")
        for s, label in (("s1", 1), ("s2", 1), ("r1", 0), ("r2", 0))
    ]
    labels, samples, datasets = _cells(spec)
    hashes = _unique_hashes(labels.size)
    hashes[80:160] = hashes[0:80]  # data set b is a copy of data set a
    plan = make_split(kind, labels, samples, datasets, shots=3, content_hashes=hashes)
    assert plan.grouping == ("dataset" if kind == "cross-dataset" else "sample")
    _assert_copies_together(plan, hashes)
    fold_a = next(f for f in plan.folds if f.name == "a")
    assert not np.isin(fold_a.train, fold_a.test + 80).any()  # b's copies of a's test cells
    assert "left out of training" in plan.note


def test_pooled_over_one_sample_per_data_set_is_grouped_by_data_set() -> None:
    spec = [(d, "all", label, 30) for d in ("a", "b", "c", "d") for label in (0, 1)]
    labels, samples, datasets = _cells(spec)
    plan = make_split("pooled", labels, samples, datasets, n_folds=2)
    assert plan.grouping == "dataset"
    for fold in plan.folds:
        assert not set(datasets[fold.train]) & set(datasets[fold.test])
