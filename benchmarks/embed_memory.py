"""Peak RSS of `scdrugmap embed --model pca` as the data set grows (20k-cell chunks).

Each size runs in a fresh process; the figure is that process's peak resident
memory. Bounded streaming shows as a flat line.

    python -m benchmarks.embed_memory [--sizes 50000,200000,1000000] [--genes 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.synthetic_store import counts_store


def peak_rss_mib(args: list[str]) -> tuple[float, float]:
    """Peak resident memory of a fresh `scdrugmap` process, sampled every 10 ms.

    Sampled rather than read from getrusage: on Linux a child's ru_maxrss
    starts from its parent's high-water mark, and the parent here holds the
    generated data set.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "scdrugmap.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.01)
    if process.returncode != 0:
        raise RuntimeError(process.stderr.read().decode())
    return peak / 2**20, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="50000,200000,1000000")
    parser.add_argument("--genes", type=int, default=2000)
    args = parser.parse_args()
    print(f"embed --model pca, {args.genes} genes, 10% non-zero, --chunk-size 20000")
    for size in (int(s) for s in args.sizes.split(",")):
        root = Path(tempfile.mkdtemp())
        try:
            store = counts_store(root / "store", size, args.genes)
            rss, seconds = peak_rss_mib(
                [
                    "--store",
                    str(store.path),
                    "embed",
                    "--model",
                    "pca",
                    "--chunk-size",
                    "20000",
                    "--json",
                ]
            )
            print(f"{size:>9,} cells: peak RSS {rss:,.0f} MiB, {seconds:.1f} s")
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
