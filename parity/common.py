"""What every parity script shares: its arguments, the reference checkout and its commit,
the real cells, scdrugmap run through its CLI, and the one line a script prints.

A script builds a random checkpoint in the published layout (the tests' builders),
embeds the same real PC9 cells with the authors' code (imported from the checkout at run
time, never copied here) and with the installed `scdrugmap` command, and prints
`<name>: max|diff| <value> over <n> cells (reference <repo> <commit>)`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scdrugmap.data.readers import SourceTable, read_matrix_file

REPOSITORY = Path(__file__).parents[1]
TESTS_DATA = REPOSITORY / "tests" / "data"
PC9_CONTROL = TESTS_DATA / "pc9_erlotinib" / "Day11_control.txt.gz"


@dataclass(frozen=True)
class Reference:
    """The authors' repository a script compares with, at the commit of the README table."""

    repo: str  # owner/name on GitHub
    commit: str  # the commit the README's figure was measured at (a prefix is enough)


def parse_args(
    description: str, reference: Reference, default_cells: int, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--reference",
        type=Path,
        required=True,
        help=f"a checkout of {reference.repo} (the README figure: commit {reference.commit})",
    )
    parser.add_argument(
        "--cells",
        type=int,
        default=default_cells,
        help="how many real PC9 control cells to compare (the README figure's count)",
    )
    parser.add_argument(
        "--work", type=Path, help="keep the checkpoint and the store here (default: temporary)"
    )
    args = parser.parse_args(argv)
    if args.cells < 1:
        parser.error(f"--cells must be at least 1, got {args.cells}")
    return args


def reference_commit(path: Path, reference: Reference) -> str:
    """The checkout's commit; a warning when it is not the README's, or cannot be read."""
    if not path.is_dir():
        raise SystemExit(f"--reference {path}: no such folder; check out {reference.repo} there")
    found = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    commit = found.stdout.strip() if found.returncode == 0 else "unknown"
    if not commit.startswith(reference.commit):
        warnings.warn(
            f"{path} is at commit {commit[:12]}, not {reference.commit} of the README table; "
            "the figure may differ",
            stacklevel=2,
        )
    return commit


@contextmanager
def reference_on_path(path: Path) -> Iterator[None]:
    """The checkout importable for the time of the block (its modules are the authors')."""
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))


@contextmanager
def forgetting(packages: Collection[str]) -> Iterator[None]:
    """Drop the modules of `packages` imported during the block, so the next run (another
    setting, another script in one process) imports the checkout's code afresh."""
    before = set(sys.modules)
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in packages:
                del sys.modules[name]


@contextmanager
def in_folder(folder: Path) -> Iterator[None]:
    """Run the block in `folder`: reference scripts that read and write relative paths."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def work_folder(work: Path | None) -> Iterator[Path]:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="scdrugmap-parity-") as folder:
        yield Path(folder)


def real_cells(n_cells: int) -> SourceTable:
    """The first `n_cells` real PC9 control cells of tests/data (every gene row)."""
    table = read_matrix_file(PC9_CONTROL)
    if n_cells > table.counts.shape[0]:
        raise SystemExit(f"--cells {n_cells}: tests/data holds {table.counts.shape[0]} cells")
    return SourceTable(
        counts=table.counts[:n_cells],
        genes=table.genes,
        barcodes=table.barcodes[:n_cells],
        obs=table.obs.iloc[:n_cells],
        path=table.path,
    )


def _scdrugmap(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "scdrugmap.cli", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"scdrugmap {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def scdrugmap_embedding(
    folder: Path,
    cells: SourceTable,
    model: str,
    checkpoint: Path,
    params: dict[str, object] | None = None,
) -> np.ndarray:
    """The cells embedded by the `scdrugmap` command line (ingest, embed, export), in order."""
    import anndata

    from tests.data_files import write_sample

    table = write_sample(folder / "cells.tsv", cells.counts, list(cells.genes), "cell")
    store = folder / "store"
    key = f"parity-{model}"
    _scdrugmap("--store", str(store), "ingest", str(table), "--dataset", "parity", "--replace")
    options = [f"--param={k}={v}" for k, v in (params or {}).items()]
    _scdrugmap(
        "--store", str(store), "embed", "--model", model, "--checkpoint", str(checkpoint),
        "--key", key, "--datasets", "parity", "--device", "cpu", "--replace", *options,
    )  # fmt: skip
    exported = folder / f"{key}.h5ad"
    _scdrugmap("--store", str(store), "export", "--embedding", key, "--dataset", "parity",
               "--out", str(exported))  # fmt: skip
    return np.asarray(anndata.read_h5ad(exported).obsm[f"X_{key}"], dtype=np.float64)


def report(name: str, ours: np.ndarray, theirs: np.ndarray, commit: str, repo: str) -> float:
    """Print the one line of a parity run and return its max |diff|."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise SystemExit(
            f"{name}: shapes differ, ours {ours.shape}, the reference's {theirs.shape}"
        )
    diff = float(np.max(np.abs(ours - theirs)))
    print(
        f"{name}: max|diff| {diff:.2g} over {ours.shape[0]} cells (reference {repo} {commit[:7]})"
    )
    return diff
