"""The read / embed / write pipeline: overlapping stages, chunks in order, memory bounded,
errors stop the run without losing what was written."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from scdrugmap.embed.chunk_pipeline import PREFETCH, run_chunks


class RecordingSource:
    """Rows' values are their own indices; records which thread did what, and how many
    chunks were prepared but not yet embedded at any time."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.threads: dict[str, set[str]] = {"prepare": set(), "finish": set(), "write": set()}
        self.waiting = 0
        self.most_waiting = 0
        self.lock = threading.Lock()
        self.written: list[int] = []

    def prepare(self, start: int, stop: int) -> tuple[int, int]:
        self.threads["prepare"].add(threading.current_thread().name)
        with self.lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
        return start, stop

    def finish(self, prepared: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        self.threads["finish"].add(threading.current_thread().name)
        time.sleep(0.005)  # the device's turn: the reader gets to run ahead
        with self.lock:
            self.waiting -= 1
        start, stop = prepared
        if self.fail_at is not None and start == self.fail_at:
            raise RuntimeError("embedding failed")
        rows = np.arange(start, stop, dtype=np.float32)
        return rows[:, None], rows / 100

    def write(self, chunk: int, values: np.ndarray, coverage: np.ndarray) -> None:
        self.threads["write"].add(threading.current_thread().name)
        np.testing.assert_allclose(values[:, 0], coverage * 100, rtol=1e-6)
        self.written.append(chunk)


def _chunks(n_chunks: int, size: int = 10) -> list[tuple[int, int, int]]:
    return [(c, c * size, (c + 1) * size) for c in range(n_chunks)]


def test_stages_run_in_their_own_threads_and_chunks_stay_in_order() -> None:
    source = RecordingSource()
    done: list[int] = []
    run_chunks(_chunks(12), source, source.write, done.append)
    assert source.written == list(range(12))
    assert done == [10] * 12
    assert {n.split("_")[0] for n in source.threads["prepare"]} == {"scdrugmap-read"}
    assert {n.split("_")[0] for n in source.threads["write"]} == {"scdrugmap-write"}
    assert source.threads["finish"] == {threading.main_thread().name}
    assert source.most_waiting <= PREFETCH + 1


def test_an_error_stops_the_run_and_keeps_the_chunks_before_it() -> None:
    source = RecordingSource(fail_at=50)
    done: list[int] = []
    with pytest.raises(RuntimeError, match="embedding failed"):
        run_chunks(_chunks(12), source, source.write, done.append)
    assert source.written == [0, 1, 2, 3, 4]
    assert 5 not in source.written and len(done) <= 5


def test_no_chunks_is_nothing_to_do() -> None:
    source = RecordingSource()
    run_chunks([], source, source.write, lambda n: None)
    assert source.written == []
