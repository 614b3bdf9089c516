"""Seconds for `evaluate`, pooled 5-fold, 100k cells x 512 dims, per classifier.

python -m benchmarks.evaluate_speed [--cells 100000] [--dim 512] [--classifiers logreg,lightgbm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.synthetic_store import embedding_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classifiers", default="logreg,lightgbm")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    try:
        store = embedding_store(root / "store", 2, args.cells // 2, args.dim)
        print(f"{args.cells:,} cells x {args.dim} dims, pooled 5-fold, {os.cpu_count()} cores")
        for classifier in args.classifiers.split(","):
            record = store.evaluate("bench", classifier, "pooled", n_folds=5)
            f1 = record.results.query("scope == 'pooled' and metric == 'f1_sensitive'")["value"]
            print(f"{classifier}: {record.seconds:.1f} s (F1 sensitive {f1.mean():.3f})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
