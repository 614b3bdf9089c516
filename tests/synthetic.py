"""Small generated count tables for tests, written as real files and ingested."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

GENES = [f"GENE{i:04d}" for i in range(300)]
PROGRAMME = GENES[:20]


def counts_matrix(
    n_cells: int, resistant: bool, seed: int, n_genes: int = 300, fold_change: float = 4.0
) -> np.ndarray:
    """cells x genes integer counts; resistant cells raise the first 20 genes `fold_change`-fold.

    Gene means are shared by every sample (a sample only adds mild noise), so
    the label, not the sample, is the main signal.
    """
    means = np.random.default_rng(12345).lognormal(0.0, 1.0, size=n_genes)
    rng = np.random.default_rng(seed)
    means = means * rng.lognormal(0.0, 0.1, size=n_genes)
    if resistant:
        means[:20] *= fold_change
    library = rng.lognormal(0.0, 0.3, size=(n_cells, 1))
    return rng.poisson(means * library).astype(np.int64)


def write_genes_by_cells(
    path: Path, counts: np.ndarray, genes: list[str] | None = None, prefix: str = "c"
) -> Path:
    genes = genes or GENES[: counts.shape[1]]
    barcodes = [f"{prefix}{i:05d}" for i in range(counts.shape[0])]
    lines = ["GENE\t" + "\t".join(barcodes)]
    lines += [g + "\t" + "\t".join(map(str, row)) for g, row in zip(genes, counts.T)]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def tree_digest(root: Path) -> str:
    """A hash of every file path and byte under `root` (empty string if absent)."""
    if not root.exists():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()
