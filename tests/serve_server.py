"""A real `scdrugmap serve` process on a free 127.0.0.1 port, for the service tests."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from scipy import sparse

from scdrugmap import Store
from scdrugmap.data.prepare import IngestOptions, prepare_dataset
from scdrugmap.data.readers import SourceTable, read_matrix_file
from scdrugmap.errors import InputError
from tests.data_files import write_h5ad
from tests.store_builders import store_with_pca_run
from tests.synthetic import counts_matrix, write_genes_by_cells

PREDICTOR = "pca-logreg"
_START_SECONDS = 60.0
PC9 = Path(__file__).parent / "data" / "pc9_erlotinib"
PC9_FILES = {"control": "Day11_control.txt.gz", "erlotinib": "Day11_Erlotinib.txt.gz"}
PC9_PREDICTOR = "pc9-pca-logreg"
# The first cells of each PC9 sample fit the predictor; uploads take cells after them.
PC9_FITTED = slice(0, 150)
PC9_UNSEEN = slice(150, 200)


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


@functools.cache
def pc9_samples() -> dict[str, SourceTable]:
    """Real PC9 cells, read once per test process: untreated (sensitive to erlotinib) and
    the survivors of 11 days of it (resistant)."""
    return {sample: read_matrix_file(PC9 / name) for sample, name in PC9_FILES.items()}


def write_pc9_h5ad(path: Path, cells: dict[str, slice], column: str | None = None) -> Path:
    """Real PC9 cells as an .h5ad on the genes both samples' files hold: `cells` picks each
    sample's cells; with `column`, an obs column of that name gives each cell's sample."""
    tables = {sample: pc9_samples()[sample] for sample in cells}
    shared = set.intersection(*(set(t.genes) for t in tables.values()))
    genes = [g for g in next(iter(tables.values())).genes if g in shared]
    blocks, barcodes, samples = [], [], []
    for sample, table in tables.items():
        position = {g: i for i, g in enumerate(table.genes)}
        picked = table.counts[cells[sample]][:, [position[g] for g in genes]]
        blocks.append(picked)
        # Some barcodes repeat across the two files; the sample keeps them apart.
        barcodes += [f"{sample}_{b}" for b in table.barcodes[cells[sample]]]
        samples += [sample] * picked.shape[0]
    obs = {column: samples} if column else None
    return write_h5ad(path, sparse.vstack(blocks).tocsr(), genes, barcodes, obs)


def store_with_pc9_predictor(root: Path) -> Store:
    """A store of 300 real PC9 cells (150 per sample), embedded with PCA, with a logreg
    predictor fitted on them."""
    store = Store(root / "store")
    files = [write_pc9_h5ad(root / f"{s}.h5ad", {s: PC9_FITTED}) for s in PC9_FILES]
    store.ingest(
        files,
        IngestOptions(
            "pc9",
            samples=list(PC9_FILES),
            labels=["sensitive", "resistant"],
            drug="erlotinib",
            tissue="cell line",
        ),
    )
    # 500 variable genes rather than 2,000: the fit's eigendecomposition is 64 times cheaper.
    store.embed("pca", n_components=10, n_top_genes=500)
    store.train_predictor("pca", "logreg", PC9_PREDICTOR)
    return store


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
