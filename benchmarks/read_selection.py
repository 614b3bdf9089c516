"""Reading embeddings for a SQL selection: 200k of 1M cells x 512 dims.

Prints the time of `Store.cells(where)` + `Store.load_embedding` against
fancy-indexing one in-memory numpy array and `np.load` of a .npy holding just
the selection (target: within 3x of np.load), and how that time splits between
the SQL and the read. Two selections: whole data sets (contiguous rows) and one
in five cells scattered over the store. Each figure is the best of five runs (the
machine is shared); the rows read are checked equal to the in-memory selection.

    python -m benchmarks.read_selection [--cells 1000000] [--dim 512] [--dir /tmp/bench]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.synthetic_store import embedding_store

REPEATS = 5


def read_from_store(store, where: str) -> np.ndarray:
    cells = store.cells(where, labelled=False, columns=("dataset_id", "cell_index"))
    return store.load_embedding("bench", cells)


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        n_datasets = 10
        store = embedding_store(root / "store", n_datasets, args.cells // n_datasets, args.dim)
        everything = store.cells(labelled=False)
        in_memory = store.load_embedding("bench", everything)
        selections = {
            "2 whole data sets (contiguous)": "dataset_id IN ('ds3', 'ds7')",
            "1 in 5 cells (scattered)": "cell_index % 5 = 0",
        }
        print(f"store: {args.cells:,} cells x {args.dim} dims, float32, 20k-cell chunks")
        for name, where in selections.items():
            cells = store.cells(where, labelled=False)
            positions = (
                everything.reset_index()
                .merge(cells, on=["dataset_id", "cell_index"])["index"]
                .to_numpy()
            )
            npy = root / "selection.npy"
            np.save(npy, in_memory[positions])
            if not np.array_equal(read_from_store(store, where), in_memory[positions]):
                raise AssertionError(f"{name}: the store's rows differ from the selection")
            selected = store.cells(where, labelled=False, columns=("dataset_id", "cell_index"))
            ours = best_of(REPEATS, partial(read_from_store, store, where))
            read = best_of(REPEATS, partial(store.load_embedding, "bench", selected))
            memory = best_of(REPEATS, partial(in_memory.__getitem__, positions))
            loaded = best_of(REPEATS, partial(np.load, npy))
            print(
                f"{name}: {len(cells):,} cells | store (SQL + read) {ours:.3f} s "
                f"(read alone {read:.3f} s) | "
                f"in-memory numpy {memory:.3f} s ({ours / memory:.1f}x) | "
                f"np.load .npy {loaded:.3f} s ({ours / loaded:.1f}x, read alone "
                f"{read / loaded:.1f}x; target <= 3x)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
