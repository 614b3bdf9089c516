"""Throughput timing and the printed comparison lines shared by the `model_*` benchmarks.

Every model benchmark reports the same figures (our tokenise rate, the
reference's rate against it, our embed rate) in the same words, so the
timing and the wording live here once; each script keeps only what is its
own: the reference's path and the description of its network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from scipy import sparse

from scdrugmap.embed.protocol import Embedder

T = TypeVar("T")


def cells_per_second(work: Callable[[], T], n_cells: int) -> tuple[float, T]:
    """Times one call and hands its result back, so a timed tokenise still
    yields the batch the rest of the run needs without tokenising twice."""
    started = time.perf_counter()
    result = work()
    return n_cells / (time.perf_counter() - started), result


def time_tokenise(
    embedder: Embedder,
    counts: sparse.csr_matrix,
    genes: Sequence[str],
    what: str = "tokenise",
    note: str = "",
) -> tuple[Any, float]:
    """Our tokenise rate over all of `counts`, printed as the "ours" line.

    One cell goes through first so the gene-list caches are built, as they
    are in a real run after its first chunk; the figure is then the steady
    rate, not a one-off set-up. `what` names the step as the script calls it
    (UCE's "cell sentences") and `note` adds to the parenthesis (scBERT's
    panel size), so each script keeps its wording.
    """
    embedder.tokenize(counts[:1], genes)
    ours, batch = cells_per_second(lambda: embedder.tokenize(counts, genes), counts.shape[0])
    print(f"{what}, ours: {ours:,.0f} cells/s ({counts.shape[0]} PC9 cells{note})")
    return batch, ours


def print_versus(what: str, label: str, rate: float, ours: float) -> None:
    """The reference's rate with our speed-up over it, worded alike in every script
    so the figures can be read side by side."""
    print(f"{what}, {label}: {rate:,.0f} cells/s ({ours / rate:.1f}x)")


def print_skipped(what: str, variable: str) -> None:
    """Says how to get the reference figure when its code is not at hand, rather
    than leaving the comparison silently out."""
    print(f"{what}, reference: skipped (pass --reference DIR or {variable})")


def time_embed(embedder: Embedder, batch: Any, n_cells: int) -> float:
    """Our embed rate on an already tokenised batch, so tokenising is not counted
    twice; the line stays with each script, which alone knows its network's shape."""
    rate, _ = cells_per_second(lambda: embedder.embed(batch), n_cells)
    return rate


def peak_rss_mib(command: Sequence[str]) -> tuple[float, float, str]:
    """(peak resident MiB, seconds, stdout) of a fresh process, its memory sampled every 10 ms.

    Sampled rather than read from getrusage: on Linux a child's ru_maxrss starts from its
    parent's high-water mark, and a parent often holds the data the child works on.
    """
    import contextlib
    import subprocess

    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.01)
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(err.strip().splitlines()[-1] if err.strip() else "failed")
    return peak / 2**20, time.perf_counter() - started, out


def own_peak_resident_mib() -> float:
    """This process's peak resident memory since it started: VmHWM, which, unlike
    getrusage's ru_maxrss, does not carry over the high-water mark of the parent that
    spawned it, and needs no sampling thread competing with the work for the cores."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")
