"""A real `scdrugmap serve` process on a free 127.0.0.1 port, for the service tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from scdrugmap.data.prepare import IngestOptions, prepare_dataset
from scdrugmap.errors import InputError
from scdrugmap.store.store import Store
from tests.store_builders import store_with_pca_run
from tests.synthetic import counts_matrix, write_genes_by_cells

PREDICTOR = "pca-logreg"
_START_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def store_with_predictor(root: Path) -> Store:
    """Two labelled data sets embedded with PCA, cross-validated, and a logreg predictor."""
    store, _ = store_with_pca_run(root)
    store.train_predictor("pca", "logreg", PREDICTOR)
    return store


def negative_counts_table(folder: Path, name: str) -> tuple[Path, str]:
    """A table with a negative count, and the message `ingest` gives for it, naming the
    file as the user gave it (without its folder)."""
    path = folder / name
    path.write_text("GENE\tc1\tc2\nGENE0000\t1\t-3\n")
    try:
        prepare_dataset([path], IngestOptions("anything"))
    except InputError as error:
        return path, str(error).replace(f"{folder}/", "")
    raise AssertionError(f"{path} was accepted by ingest")


def patient_table(path: Path, resistant: bool, n_cells: int = 40, seed: int = 70) -> Path:
    """Unlabelled cells like the store's sensitive (or resistant) ones, as a TSV."""
    return write_genes_by_cells(path, counts_matrix(n_cells, resistant, seed), prefix="p-")


@contextmanager
def running_server(store: Path, *options: str, env: dict | None = None) -> Iterator[str]:
    """Start `scdrugmap serve`, wait until it answers, yield its base URL, stop it.

    Its output goes to `serve-<port>.log` beside the store (a pipe nobody reads
    could fill and stall the server)."""
    port = free_port()
    command = [sys.executable, "-m", "scdrugmap.cli", "--store", str(store), "serve"]
    log = store.parent / f"serve-{port}.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port), *options],
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_listening(process, port, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited {process.returncode}: {log.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"serve did not listen on port {port} within {_START_SECONDS} s")


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    """Poll a job until it is done or failed; every state seen must be a known one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").raise_for_status().json()
        assert job["state"] in {"queued", "running", "done", "failed"}, job
        if job["state"] in {"done", "failed"}:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")
