"""Embedding on a local Ray cluster (two CPU workers): the same array as one process, even
when a worker is killed part way."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest

from scdrugmap import Store
from scdrugmap.store.embedding_array import EmbeddingArray
from tests.store_builders import synthetic_store

ray = pytest.importorskip("ray", reason="Ray comes with the [test] and [ray] extras")


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    built = synthetic_store(tmp_path_factory.mktemp("ray"), n_datasets=2, cells_per_sample=50)
    built.embed("pca", key="local", chunk_size=4, n_components=8)
    return built


def _same_as_local(store: Store, key: str) -> None:
    for dataset_id in ("ds0", "ds1"):
        local = store.embedding_array("local", dataset_id)
        remote = store.embedding_array(key, dataset_id)
        assert remote.done_chunks().all()
        np.testing.assert_array_equal(remote.read_all(), local.read_all())
        np.testing.assert_array_equal(remote.read_coverage(), local.read_coverage())


def test_ray_workers_write_the_array_one_process_writes(cluster, store: Store) -> None:
    summary = store.embed(
        "pca", key="ray", chunk_size=4, executor="ray", workers=2, fit_on="ds0,ds1", n_components=8
    )
    assert summary.cells_embedded == 400 and summary.chunks_written == 100
    assert summary.device == "ray (2 workers, cpu)"
    _same_as_local(store, "ray")
    again = store.embed(
        "pca", key="ray", chunk_size=4, executor="ray", fit_on="ds0,ds1", n_components=8
    )
    assert again.cells_embedded == 0 and again.chunks_resumed == 100


def _worker_pids() -> list[int]:
    """Ray titles an actor's process after its class."""
    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any("EmbedWorker" in part for part in process.info["cmdline"] or []):
            pids.append(process.info["pid"])
    return pids


def test_a_killed_worker_loses_no_chunk(cluster, store: Store) -> None:
    path = store.embedding_path("killed", "ds0")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            store.embed(
                "pca",
                key="killed",
                chunk_size=2,
                executor="ray",
                workers=2,
                fit_on="ds0,ds1",
                n_components=8,
            )
        except BaseException as error:  # re-raised in the test thread
            errors.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    done_at_kill = None
    deadline = time.monotonic() + 120
    while worker.is_alive() and time.monotonic() < deadline:
        if path.exists():
            done = int(EmbeddingArray(path).done_chunks().sum())
            pids = _worker_pids()
            if done >= 2 and pids:
                os.kill(pids[0], signal.SIGKILL)
                done_at_kill = done
                break
        time.sleep(0.01)
    worker.join(timeout=300)
    assert not errors, errors
    assert done_at_kill is not None and done_at_kill < 100, "the run was not interrupted"
    local = store.embedding_array("local", "ds0").read_all()
    np.testing.assert_array_equal(EmbeddingArray(path).read_all(), local)
    assert EmbeddingArray(path).done_chunks().all()
    assert store.embedding_array("killed", "ds1").done_chunks().all()
