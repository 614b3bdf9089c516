"""Hostile input: decompression bombs sent to a real `scdrugmap serve` on 127.0.0.1, and
to `scdrugmap ingest`, with the process's memory watched.

Each bomb is small on disk and huge unpacked (issue 17): a gzip of a header 30 million
columns wide (117 KB), a gzip with one 1 GiB field (1 MB), a gzip of 400 MB of dense
values (1.3 MB), and HDF5 files declaring gigabytes of arrays they never wrote (an .h5ad
whose X or uns holds them, a 10x .h5 with two billion entries). Before the read limits
(`ReadLimits`, data/source.py) each drove the server past 2-4 GB and on, or failed with
a traceback; now each is refused early with one line naming the file, the limit and
how to raise it, the server stays small and answers, and the store is unchanged. A
job runs in a process of its own under a memory cap (`--job-memory-mb`), so a file
the limits let through that still needs too much memory fails its job alone.

The memory watched is the server's tree: the server and its job processes (forked
from one process, sharing pages, so their proportional sizes are summed).

Every loop here is bounded: a request is watched for at most ATTACK_SECONDS, and a
server growing by more than RSS_CEILING is killed (the test then fails), so running
these tests against code without the limits cannot exhaust the machine.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata
import h5py
import httpx
import numpy as np
import pandas as pd
import psutil
import pytest

from scdrugmap.data.readers import read_matrix_file
from scdrugmap.data.source import ReadLimits, limited_reading
from scdrugmap.errors import InputError
from scdrugmap.serve.settings import ServeSettings
from tests.serve_server import PC9, PC9_FILES, PREDICTOR, running_server, store_with_predictor
from tests.synthetic import tree_digest

# The bomb server's limits: small, so that each bomb meets the limit it is aimed at.
UPLOAD_MB = 32
LINE_MB = 8
ATTACK_SECONDS = 30.0
RSS_CEILING = 512 * 1024**2
_SAMPLE_SECONDS = 0.02
_MEMBER_BYTES = 1 << 23


# ---- bombs -----------------------------------------------------------------------------


def gzip_repeated(path: Path, parts: list[tuple[bytes, int]]) -> Path:
    """A gzip file of each `unit * repeat` in turn, in milliseconds: a long run is one
    gzip member of 8 MiB compressed once and written as often as needed (a gzip file may
    hold any number of members, read as one stream)."""
    with path.open("wb") as out:
        for unit, repeat in parts:
            per = max(1, _MEMBER_BYTES // len(unit))
            whole, rest = divmod(repeat, per)
            if whole:
                member = gzip.compress(unit * per, 9)
                for _ in range(whole):
                    out.write(member)
            if rest:
                out.write(gzip.compress(unit * rest, 9))
    return path


def wide_header(path: Path, n_columns: int = 30_000_000) -> Path:
    """A header 30 million columns wide and one line of zeros: 117 KB, 120 MB unpacked."""
    return gzip_repeated(
        path, [(b"GENE", 1), (b"\tc", n_columns), (b"\nG1", 1), (b"\t0", n_columns), (b"\n", 1)]
    )


def long_field(path: Path, n_bytes: int = 1 << 30) -> Path:
    """A table whose second value is one number 1 GiB long: 1 MB."""
    return gzip_repeated(path, [(b"GENE\tc1\tc2\nG1\t1\t", 1), (b"7", n_bytes), (b"\n", 1)])


def dense_table(path: Path, n_lines: int = 1_000_000, n_cells: int = 200) -> Path:
    """A well-formed table of 200 million values of 1: 1.3 MB, 400 MB unpacked."""
    header = b"GENE" + b"".join(b"\tc%d" % i for i in range(n_cells)) + b"\n"
    return gzip_repeated(path, [(header, 1), (b"G1" + b"\t1" * n_cells + b"\n", n_lines)])


def _names(prefix: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(index=[f"{prefix}{i}" for i in range(n)])


def _unwritten(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: str) -> None:
    """A chunked dataset none of whose chunks is written: it takes no space in the file and
    reads as zeros."""
    data = group.create_dataset(name, shape=shape, dtype=dtype, chunks=True, compression="gzip")
    data.attrs["encoding-type"] = "array"
    data.attrs["encoding-version"] = "0.2.0"


def dense_x_h5ad(path: Path, n_obs: int = 50_000, n_vars: int = 50_000) -> Path:
    """An .h5ad whose dense X is 50,000 x 50,000 float32 (9.3 GiB), in 2.6 MB."""
    anndata.AnnData(obs=_names("c", n_obs), var=_names("G", n_vars)).write_h5ad(
        path, compression="gzip"
    )
    with h5py.File(path, "a") as h5:
        if "X" in h5:
            del h5["X"]
        _unwritten(h5, "X", (n_obs, n_vars), "float32")
    return path


def uns_h5ad(path: Path, side: int = 65_536) -> Path:
    """A valid 3-cell .h5ad whose uns holds a 16 GiB array, in 23 KB (anndata reads uns)."""
    x = np.ones((3, 2), dtype=np.float32)
    anndata.AnnData(X=x, obs=_names("c", 3), var=_names("G", 2)).write_h5ad(path)
    with h5py.File(path, "a") as h5:
        _unwritten(h5["uns"], "notes", (side, side), "float32")
    return path


def tenx_h5(path: Path, n_values: int = 2_000_000_000, n_cells: int = 10) -> Path:
    """A Cell Ranger .h5 declaring two billion entries (22 GiB) for 10 cells, in 0.9 MB."""
    n_genes = 30_000
    with h5py.File(path, "w") as h5:
        matrix = h5.create_group("matrix")
        _unwritten(matrix, "data", (n_values,), "int32")
        _unwritten(matrix, "indices", (n_values,), "int64")
        matrix["indptr"] = np.zeros(n_cells + 1, dtype=np.int64)
        matrix["shape"] = np.array([n_genes, n_cells], dtype=np.int32)
        matrix["barcodes"] = np.array([f"b{i}" for i in range(n_cells)], dtype="S")
        features = matrix.create_group("features")
        features["id"] = np.array([f"ENSG{i:011d}" for i in range(n_genes)], dtype="S")
        features["name"] = np.array([f"G{i}" for i in range(n_genes)], dtype="S")
        features["feature_type"] = np.array(["Gene Expression"] * n_genes, dtype="S")
    return path


# name -> (builder, what the refusal says, the option that raises the limit)
COLUMNS_PAST = "the header has more than the limit of 2,000,000 columns"
LINE_PAST = f"line 2 is longer than the limit of {LINE_MB:.1f} MiB"
BOMBS: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "wide-header.tsv.gz": (wide_header, COLUMNS_PAST, "--max-columns"),
    "long-field.tsv.gz": (long_field, LINE_PAST, "--max-line-mb"),
    "dense-table.tsv.gz": (dense_table, "non-zero values (more than", "--max-upload-mb"),
    "dense-x.h5ad": (dense_x_h5ad, "its arrays need 9,543.6 MiB once read", "--max-upload-mb"),
    "uns.h5ad": (uns_h5ad, "its arrays need 16,384.0 MiB once read", "--max-upload-mb"),
    "huge.h5": (tenx_h5, "its arrays need 22,894.7 MiB once read", "--max-upload-mb"),
}  # fmt: skip
TABLE_BOMBS = [name for name in BOMBS if ".tsv" in name]


# ---- a watched server --------------------------------------------------------------------


def _memory(process: psutil.Process) -> int:
    """A process's proportional set size (its pages, shared ones split among their
    sharers), else its resident size."""
    try:
        return process.memory_full_info().pss
    except AttributeError:
        return process.memory_info().rss


def tree_rss(process: psutil.Process) -> int:
    """Memory of a process and its children (the server's job processes share the pages
    they were forked with, so proportional sizes are summed, counting each page once)."""
    total = _memory(process)
    for child in process.children(recursive=True):
        try:
            total += _memory(child)
        except psutil.Error:
            continue
    return total


def _server_process(port: int) -> psutil.Process:
    for child in psutil.Process().children(recursive=True):
        command = child.cmdline()
        if "serve" in command and str(port) in command:
            return child
    raise AssertionError(f"no server process on port {port}")


class Watched:
    """A server, its process and a client."""

    def __init__(
        self, client: httpx.Client, process: psutil.Process, store: Path, ceiling: int
    ) -> None:
        self.client, self.process, self.store, self.ceiling = client, process, store, ceiling
        self.tally: dict[str, dict] = {}

    def attack(self, name: str, path: Path, endpoint: str) -> dict:
        """Send `path` to `endpoint` ('jobs' or 'uploads'), follow it until refused or
        failed, sampling the server's memory; kill the server if it grows by more than
        its ceiling or is still busy after ATTACK_SECONDS. Returns the refusal (or the
        failed job) with `peak_growth` in bytes."""
        params = {"filename": name} | ({"predictor": PREDICTOR} if endpoint == "jobs" else {})
        body = path.read_bytes()
        answer: dict = {}

        def send() -> None:
            try:
                answer["response"] = self.client.post(
                    f"/api/{endpoint}", params=params, content=body
                )
            except httpx.HTTPError as error:
                answer["error"] = error

        start = peak = tree_rss(self.process)
        server_start = server_peak = self.process.memory_info().rss
        began = time.monotonic()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        outcome = None
        while outcome is None and time.monotonic() - began < ATTACK_SECONDS:
            peak = max(peak, tree_rss(self.process))
            server_peak = max(server_peak, self.process.memory_info().rss)
            if peak - start > self.ceiling:
                self.process.kill()
                pytest.fail(
                    f"{name} via /api/{endpoint}: the server grew by {peak - start:,} bytes"
                )
            outcome = self._outcome(answer, endpoint)
            time.sleep(_SAMPLE_SECONDS)
        if outcome is None:
            self.process.kill()
            pytest.fail(f"{name} via /api/{endpoint}: still busy after {ATTACK_SECONDS} s")
        seconds = time.monotonic() - began
        self.tally[f"{name} /api/{endpoint}"] = {
            "server_rss_mb": (round(server_start / 2**20), round(server_peak / 2**20)),
            "with_jobs_pss_mb": (round(start / 2**20), round(peak / 2**20)),
            "seconds": round(seconds, 2),
        }
        return {**outcome, "peak_growth": peak - start, "server_growth": server_peak - server_start}

    def _outcome(self, answer: dict, endpoint: str) -> dict | None:
        if "error" in answer:
            raise AssertionError(f"the request failed: {answer['error']!r}")
        response = answer.get("response")
        if response is None:
            return None
        if endpoint == "jobs" and response.status_code == 202:
            job = self.client.get(f"/api/jobs/{response.json()['id']}").json()
            return job if job["state"] in ("done", "failed") else None
        return {"status": response.status_code, "error": response.json().get("detail")}


@pytest.fixture(scope="module")
def bomb_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bombs")
    for name, (build, _, _) in BOMBS.items():
        build(folder / name)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return store_with_predictor(tmp_path_factory.mktemp("hostile")).path


@contextmanager
def watched_server(store: Path, *options: str, ceiling: int = RSS_CEILING) -> Iterator[Watched]:
    with (
        running_server(store, *options) as base,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        watched = Watched(client, _server_process(int(base.rsplit(":", 1)[1])), store, ceiling)
        yield watched
    for attack, numbers in watched.tally.items():
        print(f"\n{attack}: {numbers}", end="")


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[Watched]:
    with watched_server(
        store, "--max-upload-mb", str(UPLOAD_MB), "--max-line-mb", str(LINE_MB)
    ) as watched:
        yield watched


def _assert_one_line_refusal(message: str | None, name: str, problem: str, option: str) -> None:
    assert message is not None
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(f"{name}: "), message  # the file as the user named it
    assert problem in message, message
    assert message.endswith(f"or start the server with a larger {option}"), message


# ---- the service ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_job_fails_alone_with_one_line(server: Watched, bomb_files: Path, name) -> None:
    _, problem, option = BOMBS[name]
    before = tree_digest(server.store)
    job = server.attack(name, bomb_files / name, "jobs")
    assert job["state"] == "failed", job
    assert job["stage"].startswith("reading"), job  # refused before anything was kept
    _assert_one_line_refusal(job["error"], name, problem, option)
    assert job["peak_growth"] < RSS_CEILING
    assert tree_digest(server.store) == before
    assert server.client.get("/api/datasets").status_code == 200  # still serving


@pytest.mark.parametrize("name", ["wide-header.tsv.gz", "long-field.tsv.gz"])
def test_a_bomb_upload_is_refused_when_its_columns_are_read(
    server: Watched, bomb_files: Path, name
) -> None:
    """`POST /api/uploads` reads a table's header and first lines: the same limits hold."""
    _, problem, option = BOMBS[name]
    before = tree_digest(server.store)
    refusal = server.attack(name, bomb_files / name, "uploads")
    assert refusal["status"] == 400, refusal
    _assert_one_line_refusal(refusal["error"], name, problem, option)
    assert tree_digest(server.store) == before


def test_a_job_past_its_memory_cap_fails_alone(store: Path, bomb_files: Path) -> None:
    """With the read limits raised far enough to let the 30-million-column header through,
    splitting it needs gigabytes: the job's process meets its memory cap (RLIMIT_DATA) and
    fails with one line, and the server, which never held the file, stays as it was."""
    options = ("--max-columns", "100000000", "--max-line-mb", "512", "--job-memory-mb", "1024")
    name = "wide-header.tsv.gz"
    with watched_server(store, *options, ceiling=2 * 1024**3) as capped:
        before = tree_digest(store)
        job = capped.attack(name, bomb_files / name, "jobs")
        assert job["state"] == "failed", job
        assert job["error"] == (
            f"{name}: reading and predicting it needed more than the 1,024.0 MiB a job may "
            "use; subset the cells, or start the server with a larger --job-memory-mb"
        )
        assert job["server_growth"] < 64 * 1024**2
        assert tree_digest(store) == before
        assert capped.client.get("/api/datasets").status_code == 200


def test_real_cells_still_pass_the_servers_default_limits(tmp_path) -> None:
    """Real PC9 tables (6,000+ cell columns) and a genes-by-cells table 300,000 cells wide
    read within `serve`'s default limits."""
    with limited_reading(ServeSettings().read_limits()):
        for name in PC9_FILES.values():
            table = read_matrix_file(PC9 / name)
            assert len(table.barcodes) > 1000 and len(table.genes) > 10_000
        n_cells = 300_000
        wide = tmp_path / "wide.tsv.gz"
        header = "GENE\t" + "\t".join(f"AAACCTGAGAAACC-{i}" for i in range(n_cells))
        lines = [f"G{g}\t" + "\t".join(["0"] * (n_cells - 1) + [str(g + 1)]) for g in range(3)]
        wide.write_bytes(gzip.compress(("\n".join([header, *lines]) + "\n").encode(), 1))
        table = read_matrix_file(wide)
    assert table.counts.shape == (n_cells, 3) and table.counts[-1].toarray().tolist() == [[1, 2, 3]]


# ---- the command line ----------------------------------------------------------------------


def _watched_ingest(store: Path, path: Path) -> tuple[subprocess.CompletedProcess, int]:
    """`scdrugmap ingest path`, its peak memory sampled; killed past RSS_CEILING or
    ATTACK_SECONDS."""
    command = [sys.executable, "-m", "scdrugmap.cli", "--store", str(store), "ingest", str(path)]
    process = subprocess.Popen(
        [*command, "--dataset", "bomb"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    watched, peak, began = psutil.Process(process.pid), 0, time.monotonic()
    while process.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.Error:
            break
        if peak > RSS_CEILING + 256 * 1024**2 or time.monotonic() - began > ATTACK_SECONDS:
            process.kill()
            process.communicate()
            pytest.fail(
                f"ingest {path.name}: {peak:,} bytes after {time.monotonic() - began:.0f} s"
            )
        time.sleep(_SAMPLE_SECONDS)
    out, err = process.communicate()
    return subprocess.CompletedProcess(
        command, process.returncode, out.decode(), err.decode()
    ), peak


@pytest.mark.parametrize(
    ("name", "problem", "hint"),
    [
        ("wide-header.tsv.gz", COLUMNS_PAST, "$SCDRUGMAP_MAX_COLUMNS"),
        ("long-field.tsv.gz", "line 2 is longer than the limit of 64.0 MiB", "MAX_LINE_MB"),
        ("uns.h5ad", "but it stores only 0.0 MiB", "write the file again with its data in full"),
        ("huge.h5", "but it stores only 1.0 MiB", "write the file again with its data in full"),
    ],
)  # fmt: skip
def test_ingest_refuses_a_bomb_with_one_line(tmp_path, bomb_files, name, problem, hint) -> None:
    store = tmp_path / "store"
    result, _ = _watched_ingest(store, bomb_files / name)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bomb_files / name}: ") and problem in line and hint in line
    assert not store.exists()


def test_a_matrix_mtx_declaring_too_many_entries_is_refused(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    size_line = "%%MatrixMarket matrix coordinate integer general\n30000 10 1000000000000\n"
    (folder / "matrix.mtx.gz").write_bytes(gzip.compress(size_line.encode() + b"1 1 1\n"))
    (folder / "features.tsv.gz").write_bytes(gzip.compress(b"ENSG1\tG1\tGene Expression\n"))
    (folder / "barcodes.tsv.gz").write_bytes(gzip.compress(b"b1\n"))
    with pytest.raises(InputError, match=r"declares 1,000,000,000,000 entries .*more than"):
        read_matrix_file(folder)


# ---- the limits themselves -------------------------------------------------------------------


def test_a_name_past_the_csv_field_limit_is_one_line(tmp_path) -> None:
    """csv refuses fields over 128 KiB: that was a traceback ('internal error' in a job)."""
    path = tmp_path / "named.tsv"
    path.write_text("GENE\t" + "c" * 200_000 + "\nG1\t1\n")
    with pytest.raises(InputError, match=r"^.*named\.tsv: malformed table: field larger"):
        read_matrix_file(path)


def test_long_names_among_many_lines_are_read_as_written(tmp_path) -> None:
    """A 5,000-character row name among 1,000 rows: cut out one by one, not by a matrix
    1,000 x 5,000 wide per block."""
    names = [f"G{i}" for i in range(1000)]
    names[500] = "L" * 5000
    path = tmp_path / "long-names.tsv"
    path.write_text("GENE\tc1\tc2\n" + "".join(f"{n}\t{i % 3}\t1\n" for i, n in enumerate(names)))
    table = read_matrix_file(path, orientation="genes-by-cells")
    assert table.genes == names and table.counts.shape == (2, 1000)
    assert table.counts.sum() == 1000 + sum(i % 3 for i in range(1000))


def test_limits_come_from_the_environment(tmp_path, monkeypatch) -> None:
    path = tmp_path / "twenty.tsv"
    path.write_text("GENE\t" + "\t".join(f"c{i}" for i in range(20)) + "\nG1" + "\t1" * 20 + "\n")
    monkeypatch.setenv("SCDRUGMAP_MAX_COLUMNS", "10")
    with pytest.raises(
        InputError, match=r"more than the limit of 10 columns.*SCDRUGMAP_MAX_COLUMNS"
    ):
        read_matrix_file(path)
    monkeypatch.setenv("SCDRUGMAP_MAX_COLUMNS", "lots")
    with pytest.raises(InputError, match=r"\$SCDRUGMAP_MAX_COLUMNS='lots': give a positive number"):
        read_matrix_file(path)
    monkeypatch.delenv("SCDRUGMAP_MAX_COLUMNS")
    unpacked = r"it unpacks to more than the limit of 0.0 MiB"
    with (
        limited_reading(ReadLimits(max_unpacked_bytes=100)),
        pytest.raises(InputError, match=unpacked),
    ):
        read_matrix_file(path)
    assert read_matrix_file(path).counts.shape == (20, 1)
