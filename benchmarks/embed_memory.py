"""Peak RSS of `scdrugmap embed --model pca` as the data set grows (20k-cell chunks).

Each size runs in a fresh process; the figure is that process's peak resident
memory. Bounded streaming shows as a flat line.

    python -m benchmarks.embed_memory [--sizes 50000,200000,1000000] [--genes 2000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.synthetic_store import counts_store
from benchmarks.timing import peak_rss_mib


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
            rss, seconds, _ = peak_rss_mib(
                [
                    sys.executable,
                    "-m",
                    "scdrugmap.cli",
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
