"""Killed and concurrent writes leave no half-states: real processes on real PC9 cells."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scdrugmap import Store
from tests.store_builders import ingest_pc9

CONTROL = "Day11_control.txt.gz"


def _scdrugmap(store: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scdrugmap.cli", "--store", str(store), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(process: subprocess.Popen, seconds: float = 300) -> tuple[int, str]:
    out, err = process.communicate(timeout=seconds)
    return process.returncode, out + err


def pc9_write(store: Store):
    """A writing connection to the catalog, to set it as a kill would have left it."""
    from scdrugmap.store.catalog import connect

    return connect(store.catalog_path, write=True)


@pytest.fixture
def pc9(real_data: Path, tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    ingest_pc9(store, real_data / "pc9_erlotinib")
    return store


def test_an_ingest_killed_mid_write_is_cleaned_by_the_next(real_data: Path, tmp_path) -> None:
    store = tmp_path / "store"
    source = real_data / "pc9_erlotinib" / CONTROL
    ingest = ("ingest", str(source), "--dataset", "control", "--label", "sensitive")
    process = _scdrugmap(store, *ingest)
    datasets = store / "datasets"
    deadline = time.monotonic() + 120
    while not list(datasets.glob(".incoming-*")) and time.monotonic() < deadline:
        assert process.poll() is None, "the ingest ended before it began writing"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    left = list(datasets.glob(".incoming-*"))
    assert left, "the kill came after the staging folder was renamed"

    code, said = _finished(_scdrugmap(store, *ingest, "--replace"))
    assert code == 0, said
    assert not list(datasets.glob(".incoming-*"))
    assert f"removed datasets/{left[0].name}, left by an ingest that was stopped" in said
    assert "Traceback" not in said


def test_a_killed_embed_with_every_chunk_written_is_not_complete(pc9: Store) -> None:
    pc9.embed("pca", chunk_size=2000)
    failed = int(pc9.sql("SELECT count(*) AS n FROM failures")["n"].item())
    assert failed > 0  # real PC9 holds cells with no gene of the panel
    # What a kill after the last chunk and before its record leaves: the arrays full,
    # the catalog row as planned (incomplete), no failures.
    with pc9_write(pc9) as con:
        con.execute("UPDATE embeddings SET complete = false, completed_at = NULL, "
                    "mean_coverage = NULL, chunks_done = 0")  # fmt: skip
        con.execute("DELETE FROM failures")
    listed = pc9.embeddings()
    assert (listed["chunks_done"] == listed["n_chunks"]).all()
    assert not listed["complete"].any(), "a completion never recorded must not look complete"

    code, said = _finished(_scdrugmap(pc9.path, "embed", "--model", "pca"))
    assert code == 0, said
    listed = pc9.embeddings()
    assert listed["complete"].all() and listed["mean_coverage"].notna().all()
    assert int(pc9.sql("SELECT count(*) AS n FROM failures")["n"].item()) == failed


def test_two_embeds_of_one_key_at_once_share_one_fit(pc9: Store) -> None:
    runs = [_scdrugmap(pc9.path, "embed", "--model", "pca", "--json") for _ in range(2)]
    outcomes = [_finished(run) for run in runs]
    for code, said in outcomes:
        assert code == 0, said
        assert "Traceback" not in said
    fits = pc9.path / "fits"
    assert sorted(p.name for p in fits.iterdir()) == ["pca"], "no staging folder is left"
    listed = pc9.embeddings()
    assert len(listed) == 1 and listed["complete"].all()
    cells = pc9.cells(labelled=False, columns=("dataset_id", "cell_index"))
    together = pc9.load_embedding("pca", cells)
    alone = Store(pc9.path.parent / "alone")
    ingest_pc9(alone, Path(__file__).parent / "data" / "pc9_erlotinib")
    alone.embed("pca")
    np.testing.assert_array_equal(together, alone.load_embedding("pca", cells))
