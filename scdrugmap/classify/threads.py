"""How a cross-validation run spends the cores: folds in parallel or library threads,
never both, chosen once for the whole run.

Two thread pools on top of each other (folds in parallel, each fit with its own
OpenMP or BLAS team) oversubscribe the cores, and an OpenMP team cannot finish a
parallel region until every one of its threads has run: on a busy machine each
barrier waits for a descheduled thread, and LightGBM's spinning threads burn the
cores the others need (issue 19: 4x the plain library under load). One level of
parallelism removes both: either one fold at a time with the library's threads, or
`min(folds, cores)` folds at once with one thread each.

Folds in parallel with one thread each is the rule wherever a run has two folds or
more. Measured on this project's 2-core machine while it was shared (load average 2.6
to 9), 5 pooled folds of the demo's 5,000 cells, one fold at a time on 2 library
threads / one fold at a time on 1 / 2 folds at once on 1 each: LightGBM on 384
dimensions 148 s / 18.7 s / 19.3 s, on 50 dimensions 12.2 / 1.6 / 1.7 s; logistic
regression on 384 dimensions 54 / 2.6 / 2.8 s; the MLP head on 50 dimensions 10.5 /
9.1 / 3.9 s. Single-threaded fits have no barriers, so a fit descheduled by another
process waits only for itself; on idle cores two of them run side by side. LightGBM
and kNN give the same bits at any thread count, so their runs are the ones made
before; logistic regression's lbfgs path depends on BLAS's summation order (up to
0.08 in a probability on 1,000 dimensions), so its runs now match a 1-thread fit,
on every machine alike, where they used to depend on the machine's core count.

On 16 cores a 5-fold run uses 5 of them. The alternative, one fold at a time on 16
threads, would need LightGBM and BLAS to scale past 5x on ~10^4 cells x 50-1,000
dimensions, where their per-split and per-call synchronisation is a large share of
the work, and would bring the barrier waits back whenever the machine is shared; so
the rule stays the same there. A single fit (one fold, or folds whose features come
from a per-fold refit that writes to the store) gets the library threads instead.

Folds run in threads of this process, not in processes: the fits spend their time in
C (LightGBM, OpenBLAS, sklearn's Cython, torch) with the GIL released, the features
are shared rather than copied, and there is no start-up per worker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from threadpoolctl import threadpool_limits

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, as `taskset` or a container
    sets it), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPolicy:
    """Folds run `fold_workers` at a time; each fit uses `library_threads` threads
    (LightGBM `n_jobs`, BLAS, OpenMP, torch). One of the two is always 1."""

    fold_workers: int
    library_threads: int
    cores: int

    def record(self) -> dict:
        """What a run's params keep, so its timing can be read with its parallelism."""
        return {
            "fold_workers": self.fold_workers,
            "library_threads": self.library_threads,
            "cores": self.cores,
        }


def choose_policy(n_folds: int, *, cores: int | None = None, parallel: bool = True) -> ThreadPolicy:
    """Parallel folds, one thread each, when there are two folds and two cores or more
    (and `parallel`); otherwise one fold at a time with a thread per core."""
    cores = usable_cores() if cores is None else max(1, cores)
    if parallel and n_folds >= 2 and cores >= 2:
        return ThreadPolicy(min(n_folds, cores), 1, cores)
    return ThreadPolicy(1, cores, cores)


@contextmanager
def library_threads(n: int) -> Iterator[None]:
    """BLAS, OpenMP and (when it is loaded) torch held to `n` threads, restored after.

    torch is limited only when something has imported it already: the CPU stage must
    not pay its import, and a torch imported later inside the block is limited by the
    code that uses it (the MLP head sets its own threads)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)


def _one_openmp_thread() -> None:
    """OpenMP's thread count is per calling thread: each worker sets its own to 1."""
    threadpool_limits(limits=1, user_api="openmp")


def map_folds(
    policy: ThreadPolicy,
    work: Callable[[T], R],
    items: Sequence[T],
    done: Callable[[int], object] = lambda _: None,
) -> list[R]:
    """`work` over `items` under `policy`, results in the items' order; `done(1)` after
    each. The first failure cancels the folds not yet started and is raised."""
    with library_threads(policy.library_threads):
        if policy.fold_workers == 1:
            results = []
            for item in items:
                results.append(work(item))
                done(1)
            return results
        with ThreadPoolExecutor(
            policy.fold_workers,
            thread_name_prefix="scdrugmap-fold",
            initializer=_one_openmp_thread,
        ) as pool:
            futures: list[Future[R]] = [pool.submit(work, item) for item in items]
            try:
                results = []
                for future in futures:
                    results.append(future.result())
                    done(1)
                return results
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
