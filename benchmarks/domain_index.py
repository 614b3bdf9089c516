"""The applicability-domain index: build and query time and memory at 10^4, 10^5 and
10^6 training cells, against sklearn's exact NearestNeighbors on the same data.

The training cells are a seeded mixture of 20 Gaussian clusters in `--dim` dimensions
(a foundation model's embedding size); the queries are 10,000 cells, half drawn like the
training cells and half shifted off them. Ours: `build_domain` (standardise, 32
principal axes, at most 50,000 reference cells, 10,000 leave-one-out calibration cells)
and `DomainIndex.scores`. sklearn: NearestNeighbors fitted on all training cells
(standardised, every dimension), the same number of leave-one-out calibration cells
(k + 1 neighbours, itself dropped) and the queries. Figures are ratios in one run on one
machine, and the share of queries on which the two agree about `in_domain`, so the
subsample and the axes are seen to keep the verdict. Memory: tracemalloc's peak of the
step (numpy reports its buffers to it), and the size of what is kept (domain.npz).

    python -m benchmarks.domain_index [--dim 256] [--sizes 10000,100000,1000000]
                                      [--sklearn-max 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from sklearn.neighbors import NearestNeighbors

from scdrugmap.predict.domain import MAX_CALIBRATION, QUANTILE, K, build_domain

T = TypeVar("T")
N_QUERIES = 10_000
N_CLUSTERS = 20


def measured(work: Callable[[], T]) -> tuple[T, float, float]:
    """(result, seconds, peak MiB allocated during the call)."""
    tracemalloc.start()
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def cells(n: int, dim: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    centres = np.random.default_rng(7).normal(scale=3.0, size=(N_CLUSTERS, dim))
    which = rng.integers(N_CLUSTERS, size=n)
    points = centres[which] + rng.normal(size=(n, dim)) + shift
    return points.astype(np.float32)


def exact_scores(train: np.ndarray, queries: np.ndarray, seed: int) -> np.ndarray:
    """sklearn's exact k-NN on every training cell, as the same percentile."""
    mean, scale = train.mean(axis=0), train.std(axis=0)
    standard = (train - mean) / scale
    search = NearestNeighbors(n_neighbors=K + 1).fit(standard)
    rows = np.random.default_rng(seed).choice(
        len(train), size=min(MAX_CALIBRATION, len(train)), replace=False
    )
    calibration = np.sort(search.kneighbors(standard[rows])[0][:, 1:].mean(axis=1))
    distances = search.kneighbors((queries - mean) / scale, n_neighbors=K)[0].mean(axis=1)
    return 100.0 * np.searchsorted(calibration, distances) / len(calibration)


def one_size(n: int, dim: int, sklearn_max: int) -> None:
    rng = np.random.default_rng(n)
    train = cells(n, dim, rng)
    queries = np.concatenate(
        [cells(N_QUERIES // 2, dim, rng), cells(N_QUERIES // 2, dim, rng, shift=1.5)]
    )
    index, build_s, build_mib = measured(lambda: build_domain(train))
    scores, query_s, query_mib = measured(lambda: index.scores(queries))
    with tempfile.TemporaryDirectory() as folder:
        kept = Path(folder) / index.save(Path(folder))
        kept_mib = kept.stat().st_size / 2**20
    inside = index.in_domain(scores)
    print(
        f"{n:>9,} cells x {dim}: ours build {build_s:6.2f} s ({build_mib:6.0f} MiB peak), "
        f"query {N_QUERIES:,} {query_s:5.2f} s ({query_mib:5.0f} MiB), kept {kept_mib:.1f} MiB; "
        f"in domain: drawn alike {inside[: N_QUERIES // 2].mean():.3f}, "
        f"shifted {inside[N_QUERIES // 2 :].mean():.3f}"
    )
    if n > sklearn_max:
        print(f"{'':>9}  sklearn skipped above --sklearn-max {sklearn_max:,}")
        return
    exact, exact_s, exact_mib = measured(lambda: exact_scores(train, queries, n))
    agree = (inside == (exact < 100.0 * QUANTILE)).mean()
    print(
        f"{'':>9}  sklearn NearestNeighbors (calibration + query) {exact_s:6.2f} s "
        f"({exact_mib:6.0f} MiB peak): ours {exact_s / (build_s + query_s):.1f}x faster, "
        f"{exact_mib / max(build_mib, query_mib):.1f}x less memory; in_domain agrees on "
        f"{agree:.3f} of queries"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--sklearn-max", type=int, default=100_000)
    args = parser.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        one_size(n, args.dim, args.sklearn_max)


if __name__ == "__main__":
    main()
