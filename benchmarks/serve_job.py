"""Seconds from upload to calls through `scdrugmap serve`, and the server's peak memory.

A real server process on 127.0.0.1 with a pca + logreg predictor; each size is
one .h5ad of generated cells (300 genes) posted to /api/jobs and polled until
done. Printed per size: upload seconds, job seconds (ingest, embed, classify,
map and figures), cells/s of the whole job, and the server's peak RSS so far.

    python -m benchmarks.serve_job [--sizes 2000,20000,100000]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from tests.data_files import write_h5ad
from tests.serve_server import PREDICTOR, running_server, store_with_predictor, wait_for_job
from tests.synthetic import GENES, counts_matrix


class PeakMemory:
    """Samples the resident memory of this process's children every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.peak = max(self.peak, child.memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2000,20000,100000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = store_with_predictor(root)
        with running_server(store.path) as base, httpx.Client(base_url=base, timeout=600) as client:
            memory = PeakMemory()
            print(f"{'cells':>8} {'upload s':>9} {'job s':>7} {'cells/s':>9} {'peak RSS':>9}")
            for n in sizes:
                counts = np.vstack([counts_matrix(n // 2, r, 90 + r) for r in (False, True)])
                barcodes = [f"c{i}" for i in range(len(counts))]
                upload = write_h5ad(root / f"cells-{n}.h5ad", counts, GENES, barcodes)
                started = time.perf_counter()
                response = client.post(
                    "/api/jobs",
                    params={"predictor": PREDICTOR, "filename": upload.name},
                    content=upload.read_bytes(),
                )
                uploaded = time.perf_counter()
                job = wait_for_job(client, response.raise_for_status().json()["id"], 3600)
                finished = time.perf_counter()
                assert job["state"] == "done", job
                print(
                    f"{len(counts):>8,} {uploaded - started:>9.2f} {finished - uploaded:>7.2f} "
                    f"{len(counts) / (finished - uploaded):>9,.0f} {memory.peak / 2**20:>6.0f} MiB"
                )
            memory.stop()


if __name__ == "__main__":
    main()
