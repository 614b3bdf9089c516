"""One level of parallelism per run: folds in parallel with one library thread each, or one
fold at a time with the library's threads (issue 19), with the same results either way."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from scdrugmap import Store
from scdrugmap.classify.classifiers import make_classifier
from scdrugmap.classify.evaluate import embedding_left_out, select_and_split
from scdrugmap.classify.threads import ThreadPolicy, choose_policy, map_folds, usable_cores
from scdrugmap.errors import InputError
from tests.store_builders import ingest_pc9


@pytest.fixture(scope="module")
def pc9(real_data: Path, tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("threads") / "store")
    ingest_pc9(store, real_data / "pc9_erlotinib")
    store.embed("pca", n_components=10)
    return store


def test_the_policy_never_stacks_fold_workers_on_library_threads() -> None:
    assert choose_policy(5, cores=2) == ThreadPolicy(2, 1, 2)
    assert choose_policy(5, cores=16) == ThreadPolicy(5, 1, 16)
    assert choose_policy(3, cores=16) == ThreadPolicy(3, 1, 16)
    assert choose_policy(1, cores=8) == ThreadPolicy(1, 8, 8)
    assert choose_policy(5, cores=1) == ThreadPolicy(1, 1, 1)
    assert choose_policy(5, cores=4, parallel=False) == ThreadPolicy(1, 4, 4)
    for folds in range(1, 8):
        for cores in range(1, 20):
            policy = choose_policy(folds, cores=cores)
            assert min(policy.fold_workers, policy.library_threads) == 1
            assert policy.fold_workers * policy.library_threads <= cores
    assert choose_policy(5).cores == usable_cores()


def _threads(api: str) -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == api}


def test_parallel_folds_run_on_one_blas_and_openmp_thread_each_and_keep_order() -> None:
    seen: list[tuple[str, set[int], set[int]]] = []
    lock = threading.Lock()

    def work(item: int) -> int:
        with lock:
            seen.append((threading.current_thread().name, _threads("blas"), _threads("openmp")))
        return item * item

    before = (_threads("blas"), _threads("openmp"))
    done = []
    assert map_folds(ThreadPolicy(2, 1, 2), work, range(7), done.append) == [
        i * i for i in range(7)
    ]
    assert done == [1] * 7
    assert all(name.startswith("scdrugmap-fold") for name, _, _ in seen)
    assert all(blas == {1} and openmp <= {1} for _, blas, openmp in seen)
    assert (_threads("blas"), _threads("openmp")) == before


def test_one_fold_at_a_time_gets_the_library_threads() -> None:
    seen = []
    map_folds(ThreadPolicy(1, 2, 2), lambda _: seen.append(_threads("blas")), range(2))
    assert seen == [{2}, {2}]


def test_a_failing_fold_is_raised_and_the_folds_not_started_are_cancelled() -> None:
    started = []

    def work(item: int) -> int:
        started.append(item)
        if item == 0:
            raise InputError("fold 0 holds one class")
        threading.Event().wait(0.05)
        return item

    with pytest.raises(InputError, match="fold 0"):
        map_folds(ThreadPolicy(2, 1, 2), work, range(50))
    assert len(started) < 50


@pytest.mark.parametrize("classifier", ["lightgbm", "knn"])
def test_parallel_folds_give_the_predictions_of_sequential_fits_with_library_threads(
    pc9: Store, classifier: str
) -> None:
    """LightGBM (deterministic, column-wise) and kNN give the same bits whatever their
    thread count, so the run is the one made before folds ran in parallel."""
    record = pc9.evaluate("pca", classifier, "pooled", n_folds=3, seed=1)
    run = pc9.query("SELECT params FROM runs WHERE run_id = ?", [record.run_id])
    assert json.loads(run["params"][0])["threads"] == choose_policy(3).record()
    stored = pc9.query(
        "SELECT fold, cell_index, prob_sensitive FROM predictions WHERE run_id = ? "
        "ORDER BY fold, cell_index",
        [record.run_id],
    )
    selection = select_and_split(
        pc9, None, "pooled", n_folds=3, shots=5, seed=1, left_out=embedding_left_out(pc9, "pca")
    )
    features = pc9.load_embedding("pca", selection.cells)
    cell_index = selection.cells["cell_index"].to_numpy()
    for fold in selection.plan.folds:
        model = make_classifier(classifier, seed=1, n_jobs=2)
        model.fit(features[fold.train], selection.labels[fold.train])
        prob = model.predict_proba(features[fold.test])[:, 1].astype(np.float32)
        order = np.argsort(cell_index[fold.test])
        ours = stored[stored["fold"] == fold.index]
        np.testing.assert_array_equal(ours["cell_index"], cell_index[fold.test][order])
        np.testing.assert_array_equal(ours["prob_sensitive"].to_numpy(), prob[order])
