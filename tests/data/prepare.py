"""Rebuild the trimmed real test data in this folder from the full public files.

    python tests/data/prepare.py --source DIR

DIR holds `data/pc9_erlotinib/`, `data/scad/` and `vocab/` as described in
tests/data/README.md. PC9 cells are a seeded random quarter of each sample,
kept in their file order with every gene row, so coverage and gene-panel
behaviour stay those of the full files; SCAD tables and vocabularies are copied
whole.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
PC9_CELLS = {"Day11_control": 1_500, "Day11_Erlotinib": 2_150}
SEED = 20261202
VOCABULARIES = ("geneformer_v1", "scgpt", "scfoundation", "cellplm", "tgpt")


def subsample_pc9(source: Path, name: str, n_cells: int) -> None:
    frame = pd.read_csv(source / f"{name}.txt.gz", sep="\t", index_col=0)
    rng = np.random.default_rng(SEED)
    keep = np.sort(rng.choice(frame.shape[1], n_cells, replace=False))
    target = HERE / "pc9_erlotinib" / f"{name}.txt.gz"
    target.parent.mkdir(exist_ok=True)
    frame.iloc[:, keep].to_csv(target, sep="\t", compression={"method": "gzip", "mtime": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    source = parser.parse_args().source
    for name, n_cells in PC9_CELLS.items():
        subsample_pc9(source / "data" / "pc9_erlotinib", name, n_cells)
    shutil.copytree(source / "data" / "scad", HERE / "scad", dirs_exist_ok=True)
    for vocabulary in VOCABULARIES:
        shutil.copytree(
            source / "vocab" / vocabulary, HERE / "vocab" / vocabulary, dirs_exist_ok=True
        )


if __name__ == "__main__":
    main()
