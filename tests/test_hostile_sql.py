"""SQL that tries to take the store down: answers of gigabytes, runaway queries against
writers, many slow queries at once, and the functions that show where the store lives.
Real `scdrugmap` processes and a real server on 127.0.0.1; every loop is bounded."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from scdrugmap import Store
from scdrugmap.errors import InputError
from scdrugmap.store.sql import snapshot
from tests.serve_server import running_server
from tests.store_builders import scad_options

GIGABYTES = "SELECT repeat('x', 1000000) AS s FROM range(1500)"  # 1.5 GB of text
RUNAWAY = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"
DEEP = "SELECT " + "1+" * 1500 + "1"


@pytest.fixture(scope="module")
def store(real_data: Path, tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("hostile-sql") / "store")
    store.ingest([real_data / "scad" / "PLX4720.tsv.gz"], scad_options("plx4720", "PLX4720"))
    return store


def _cli(store: Store, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "scdrugmap.cli", "--store", str(store.path), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _peak_rss(process: subprocess.Popen | psutil.Process, until: threading.Event | None = None):
    """Sample a process's resident memory every 20 ms until it exits (or `until` is set)."""
    watched = psutil.Process(process.pid)
    peak = 0
    for _ in range(30_000):  # 10 minutes at most
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if (until is not None and until.is_set()) or (
            isinstance(process, subprocess.Popen) and process.poll() is not None
        ):
            break
        time.sleep(0.02)
    return peak


def test_a_gigabyte_answer_is_refused_before_it_is_fetched(store: Store) -> None:
    process = _cli(store, "sql", GIGABYTES)
    peak = _peak_rss(process)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, out + err
    assert "MiB is over the 64 MiB a query may return" in err and "Traceback" not in err
    assert peak < 600 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"


def test_a_runaway_query_does_not_hold_a_writer(store: Store, real_data: Path) -> None:
    query = _cli(store, "sql", RUNAWAY, "--timeout", "40")
    time.sleep(3)  # the query is running on its snapshot by now
    assert query.poll() is None
    started = time.monotonic()
    ingest = _cli(store, "ingest", str(real_data / "scad" / "Afatinib.tsv.gz"), "--dataset",
                  "afatinib", "--label-column", "response", "--sensitive", "1",
                  "--resistant", "0", "--values", "normalized")  # fmt: skip
    out, err = ingest.communicate(timeout=120)
    waited = time.monotonic() - started
    assert ingest.returncode == 0, out + err
    assert query.poll() is None, "the writer finished while the query still ran"
    assert waited < 30, f"the ingest took {waited:.0f} s"
    query.kill()
    query.communicate()


def test_a_query_past_its_timeout_says_so(store: Store) -> None:
    process = _cli(store, "sql", RUNAWAY, "--timeout", "2")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "stopped after the time limit of 2 s" in err


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM duckdb_settings()",
        "SELECT path FROM duckdb_databases()",
        "SELECT current_setting('temp_directory')",
        "SELECT * FROM pragma_database_list",
    ],
)
def test_functions_that_show_paths_are_refused(store: Store, query: str) -> None:
    with pytest.raises(InputError, match="refused: it shows the machine's settings and paths"):
        store.sql(query)


def test_too_deep_an_expression_is_not_told_to_set_anything(store: Store) -> None:
    with pytest.raises(InputError, match="nests too deeply") as raised:
        store.sql(DEEP)
    assert "SET" not in str(raised.value)


def test_queries_spill_outside_the_store(store: Store) -> None:
    store.sql("SELECT count(*) FROM cells")
    copy = snapshot(store.catalog_path)
    assert store.path not in copy.parents
    assert not [p for p in store.path.rglob("*") if p.name.endswith(".tmp")]


def _listening_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    (pid,) = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.laddr.port == port and c.status == "LISTEN"
    }
    return pid


def test_the_service_answers_under_sql_abuse(store: Store) -> None:
    with running_server(store.path, "--sql-seconds", "3") as base:
        server = psutil.Process(_listening_pid(base))
        with httpx.Client(base_url=base, timeout=60) as client:
            before = server.memory_info().rss
            done = threading.Event()
            peak = [0]
            watcher = threading.Thread(target=lambda: peak.__setitem__(0, _peak_rss(server, done)))
            watcher.start()
            answer = client.post("/api/sql", json={"query": GIGABYTES})
            done.set()
            watcher.join()
            assert answer.status_code == 400 and "MiB a query may return" in answer.text
            assert peak[0] - before < 400 * 2**20, f"grew {(peak[0] - before) / 2**20:.0f} MiB"

            answers: list[httpx.Response] = []

            def runaway() -> None:
                with httpx.Client(base_url=base, timeout=60) as own:
                    answers.append(own.post("/api/sql", json={"query": RUNAWAY}))

            started = time.monotonic()
            slow = [threading.Thread(target=runaway) for _ in range(3)]
            for thread in slow:
                thread.start()
            time.sleep(0.5)
            listed = time.monotonic()
            assert client.get("/api/datasets").status_code == 200
            listing = time.monotonic() - listed
            for thread in slow:
                thread.join(timeout=60)
            together = time.monotonic() - started
        assert [a.status_code for a in answers] == [400, 400, 400]
        assert all("time limit of 3 s" in a.text for a in answers)
        assert listing < 2.5, f"GET /api/datasets waited {listing:.1f} s"
        assert together < 8, f"three 3-second queries took {together:.1f} s: one after another"
