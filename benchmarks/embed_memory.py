"""Peak RSS of `scdrugmap embed --model pca` as the data set grows (20k-cell chunks).

Each size runs in a fresh process; the figure is that process's peak resident
memory. Bounded streaming shows as a flat line.

    python -m benchmarks.embed_memory [--sizes 50000,100000,200000] [--genes 2000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.synthetic_store import counts_store


def peak_rss_mib(args: list[str]) -> tuple[float, float]:
    code = (
        "import resource, sys; from scdrugmap.cli import main;"
        "sys.argv = ['scdrugmap', *sys.argv[1:]];"
        "\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - started
    return int(done.stderr.strip().splitlines()[-1]) / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="50000,100000,200000")
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
