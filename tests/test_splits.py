"""Splits keep samples apart, say when they cannot, and are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from scdrugmap.classify.splits import SPLIT_KINDS, Fold, SplitPlan, make_split
from scdrugmap.errors import InputError


def _cells(spec: list[tuple[str, str, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels, samples, datasets from (dataset, sample, label, n_cells) rows."""
    labels = np.concatenate([np.full(n, label, dtype=np.int8) for _, _, label, n in spec])
    samples = np.concatenate([np.full(n, f"{d}/{s}") for d, s, _, n in spec])
    datasets = np.concatenate([np.full(n, d) for d, _, _, n in spec])
    return labels, samples, datasets


def _four_samples(dataset: str, n: int = 30) -> list[tuple[str, str, int, int]]:
    return [
        (dataset, "s1", 1, n),
        (dataset, "s2", 1, n + 3),
        (dataset, "r1", 0, n + 5),
        (dataset, "r2", 0, n),
    ]


def _assert_well_formed(plan: SplitPlan, n_cells: int) -> None:
    for i, fold in enumerate(plan.folds):
        assert fold.index == i
        for side in (fold.train, fold.test):
            assert side.dtype == np.int64
            assert np.all(np.diff(side) > 0)
            assert side.min() >= 0 and side.max() < n_cells
        assert not np.intersect1d(fold.train, fold.test).size


def _assert_samples_apart(folds: list[Fold], samples: np.ndarray) -> None:
    for fold in folds:
        assert not set(samples[fold.train]) & set(samples[fold.test]), fold.name


def test_pooled_folds_never_share_a_sample_over_random_configurations() -> None:
    rng = np.random.default_rng(0)
    for trial in range(60):
        n_samples = int(rng.integers(4, 14))
        sample_labels = rng.permutation(np.arange(n_samples) % 2)
        spec = [
            ("d", f"s{i}", int(label), int(rng.integers(1, 50)))
            for i, label in enumerate(sample_labels)
        ]
        labels, samples, datasets = _cells(spec)
        n_folds = int(rng.integers(2, 7))
        plan = make_split("pooled", labels, samples, datasets, n_folds=n_folds, seed=trial)
        assert not plan.cell_level
        assert len(plan.folds) == min(n_folds, n_samples // 2)
        _assert_well_formed(plan, labels.size)
        _assert_samples_apart(plan.folds, samples)
        tested = np.concatenate([f.test for f in plan.folds])
        np.testing.assert_array_equal(np.sort(tested), np.arange(labels.size))
        for fold in plan.folds:
            assert set(labels[fold.train]) == {0, 1}


def test_pooled_is_stratified() -> None:
    spec = [("d", f"s{i}", i % 2, 20) for i in range(20)]
    labels, samples, datasets = _cells(spec)
    plan = make_split("pooled", labels, samples, datasets, n_folds=5, seed=1)
    assert plan.note is None and plan.params["n_folds_used"] == 5
    for fold in plan.folds:
        assert labels[fold.test].mean() == pytest.approx(0.5)


def test_pooled_reduces_folds_and_says_so() -> None:
    spec = [("d", f"s{i}", 1, 20) for i in range(3)] + [("d", f"r{i}", 0, 20) for i in range(6)]
    labels, samples, datasets = _cells(spec)
    plan = make_split("pooled", labels, samples, datasets, n_folds=5)
    assert len(plan.folds) == 3 and not plan.cell_level
    assert "3 folds instead of 5" in plan.note and "sensitive" in plan.note
    _assert_samples_apart(plan.folds, samples)


def test_pooled_falls_back_to_cells_for_pc9_like_data() -> None:
    labels, samples, datasets = _cells([("pc9", "control", 1, 50), ("pc9", "treated", 0, 70)])
    plan = make_split("pooled", labels, samples, datasets, n_folds=5)
    assert plan.cell_level and len(plan.folds) == 5
    assert "only 1 sample carries label" in plan.note
    assert "sample-grouped folds impossible" in plan.note
    assert "both sides of every split" in plan.note
    assert plan.params["level"] == "cell"
    _assert_well_formed(plan, labels.size)
    for fold in plan.folds:
        assert labels[fold.test].sum() == 10


def test_pooled_fallback_needs_two_cells_per_label() -> None:
    labels, samples, datasets = _cells([("d", "a", 1, 1), ("d", "b", 0, 10)])
    with pytest.raises(InputError, match="only 1 cell"):
        make_split("pooled", labels, samples, datasets)


def test_cross_dataset_holds_out_each_data_set() -> None:
    labels, samples, datasets = _cells(
        _four_samples("ds0") + _four_samples("ds1") + _four_samples("ds2")
    )
    plan = make_split("cross-dataset", labels, samples, datasets)
    assert [f.name for f in plan.folds] == ["ds0", "ds1", "ds2"]
    assert not plan.cell_level and plan.note is None
    _assert_well_formed(plan, labels.size)
    for fold in plan.folds:
        assert set(datasets[fold.test]) == {fold.name}
        assert fold.name not in set(datasets[fold.train])
        assert fold.train.size + fold.test.size == labels.size


def test_cross_dataset_needs_two_data_sets() -> None:
    labels, samples, datasets = _cells(_four_samples("ds0"))
    with pytest.raises(InputError, match="at least 2 data sets"):
        make_split("cross-dataset", labels, samples, datasets)


def test_cross_dataset_names_a_held_out_set_that_leaves_one_class() -> None:
    labels, samples, datasets = _cells([*_four_samples("ds0"), ("ds1", "s1", 1, 20)])
    with pytest.raises(InputError, match=r"'ds0' held out.*only sensitive"):
        make_split("cross-dataset", labels, samples, datasets)


def test_few_shot_draws_shots_from_one_sample_per_label_and_keeps_samples_apart() -> None:
    labels, samples, datasets = _cells(_four_samples("ds0") + _four_samples("ds1", 25))
    plan = make_split("few-shot", labels, samples, datasets, shots=3, seed=4)
    assert not plan.cell_level and plan.note is None
    assert plan.params == {"shots": 3, "seed": 4}
    _assert_well_formed(plan, labels.size)
    _assert_samples_apart(plan.folds, samples)
    for fold in plan.folds:
        target = datasets == fold.name
        assert np.array_equal(
            np.flatnonzero(~target), np.setdiff1d(fold.train, np.flatnonzero(target))
        )
        shots = np.intersect1d(fold.train, np.flatnonzero(target))
        assert np.bincount(labels[shots], minlength=2).tolist() == [3, 3]
        assert np.unique(samples[shots]).size == 2
        assert set(datasets[fold.test]) == {fold.name}
        assert set(labels[fold.test]) == {0, 1}
        assert fold.test.size == target.sum() - np.isin(samples, samples[shots]).sum()


def test_few_shot_falls_back_to_cells_when_a_label_has_one_sample() -> None:
    spec = [*_four_samples("ds0"), ("pc9", "control", 1, 40), ("pc9", "treated", 0, 40)]
    labels, samples, datasets = _cells(spec)
    plan = make_split("few-shot", labels, samples, datasets, shots=5)
    assert plan.cell_level
    assert "'pc9'" in plan.note and "'ds0'" not in plan.note
    _assert_well_formed(plan, labels.size)
    pc9 = next(f for f in plan.folds if f.name == "pc9")
    shots = np.intersect1d(pc9.train, np.flatnonzero(datasets == "pc9"))
    assert np.bincount(labels[shots], minlength=2).tolist() == [5, 5]
    assert pc9.test.size == 80 - 10
    _assert_samples_apart([f for f in plan.folds if f.name == "ds0"], samples)


def test_few_shot_shots_do_not_depend_on_other_data_sets() -> None:
    base = _four_samples("ds0") + _four_samples("ds1")
    small = make_split("few-shot", *_cells(base), shots=4, seed=2)
    labels, samples, datasets = _cells(base + _four_samples("ds2"))
    large = make_split("few-shot", labels, samples, datasets, shots=4, seed=2)
    for fold_small, fold_large in zip(small.folds, large.folds[:2]):
        np.testing.assert_array_equal(fold_small.test, fold_large.test)


def test_few_shot_bad_requests() -> None:
    labels, samples, datasets = _cells(_four_samples("ds0") + _four_samples("ds1", 4))
    with pytest.raises(InputError, match="'ds1' holds 11 sensitive cells, fewer than the 12"):
        make_split("few-shot", labels, samples, datasets, shots=12)
    with pytest.raises(InputError, match="at least 1"):
        make_split("few-shot", labels, samples, datasets, shots=0)
    with pytest.raises(InputError, match="at least 2 data sets"):
        make_split("few-shot", *_cells(_four_samples("ds0")))


@pytest.mark.parametrize("kind", SPLIT_KINDS)
def test_same_inputs_and_seed_give_the_same_plan(kind: str) -> None:
    labels, samples, datasets = _cells(
        _four_samples("ds0") + _four_samples("ds1") + [("ds2", "a", 1, 30), ("ds2", "b", 0, 30)]
    )
    first = make_split(kind, labels, samples, datasets, n_folds=2, shots=3, seed=9)
    second = make_split(kind, labels, samples, datasets, n_folds=2, shots=3, seed=9)
    assert (first.kind, first.cell_level, first.note, first.params) == (
        second.kind,
        second.cell_level,
        second.note,
        second.params,
    )
    for a, b in zip(first.folds, second.folds, strict=True):
        assert (a.index, a.name) == (b.index, b.name)
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test, b.test)


def test_seed_changes_pooled_folds() -> None:
    labels, samples, datasets = _cells([("d", f"s{i}", i % 2, 10) for i in range(12)])
    tests = [
        [f.test.tolist() for f in make_split("pooled", labels, samples, datasets, seed=s).folds]
        for s in (0, 1)
    ]
    assert tests[0] != tests[1]


def test_bad_inputs() -> None:
    labels, samples, datasets = _cells(_four_samples("ds0"))
    with pytest.raises(InputError, match="pooled, cross-dataset, few-shot"):
        make_split("leave-one-out", labels, samples, datasets)
    with pytest.raises(InputError, match="differ in length"):
        make_split("pooled", labels[:-1], samples, datasets)
    with pytest.raises(InputError, match="0 \\(resistant\\) or 1"):
        make_split("pooled", labels + 1, samples, datasets)
    with pytest.raises(InputError, match="only sensitive cells"):
        make_split("pooled", np.ones_like(labels), samples, datasets)
    with pytest.raises(InputError, match="no cells"):
        make_split("pooled", labels[:0], samples[:0], datasets[:0])
    with pytest.raises(InputError, match="at least 2"):
        make_split("pooled", labels, samples, datasets, n_folds=1)
