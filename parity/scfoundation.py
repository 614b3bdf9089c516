"""scFoundation parity: scdrugmap's cell embedding against the authors' `get_embedding.py`.

The reference is biomap-research/scFoundation's `model/get_embedding.py`, run unchanged as
a script from the checkout (`--input_type singlecell --output_type cell --pool_type all
--version ce --pre_normalized F`), once per resolution setting of the README figure
(`--tgthighres t4` and `a5`): its per-cell loop (log1p per 10^4 on the 19,264-gene panel,
the T and S tokens, `gatherData`, the encoder, S, T, max and mean) with its own
`load.load_model_frommmf` and `pretrainmodels`. The script reads `./models/models.ckpt`
and `./OS_scRNA_gene_index.19264.tsv` from its working folder, so it runs in a folder
holding the random checkpoint under those names. The cells are handed to it as an h5ad of
their panel genes (in data order): the reference README asks for data converted to the
panel, and the script applies its own `main_gene_selection` (filling and ordering the
19,264 genes) only to data with fewer columns than the panel; a data set with more genes
than the panel would enter its loop unconverted.

Two things are changed for the run and nothing else: `torch.Tensor.cuda` and
`torch.nn.Module.cuda` return their object unchanged (the script moves every input and
the model to CUDA; the comparison is float32 on CPU), and the script's printing goes to
`reference.log` in the work folder. It needs einops, local-attention (imported by its
Performer module, unused by the transformer encoder of the checkpoint), scanpy and tqdm
beyond scdrugmap's packages.

One line per setting; the value returned is the largest.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from parity.common import (
    TESTS_DATA,
    Reference,
    in_folder,
    parse_args,
    real_cells,
    reference_commit,
    reference_on_path,
    report,
    scdrugmap_embedding,
    work_folder,
)
from scdrugmap.data.readers import SourceTable

REFERENCE = Reference("biomap-research/scFoundation", "d09626a")
DEFAULT_CELLS = 200
SETTINGS = ("t4", "a5")  # --tgthighres of the README figure
GENE_INDEX = TESTS_DATA / "vocab" / "scfoundation" / "OS_scRNA_gene_index.19264.tsv"
# The reference script's own modules, dropped after each run so the next imports them anew.
_REFERENCE_MODULES = ("load", "pretrainmodels")


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """The tests' small random models.ckpt (gene, cell, rde) with the real 19,264-gene index,
    in a folder named `models` as the reference script expects it."""
    from tests.scfoundation_checkpoint import write_scfoundation_checkpoint

    return write_scfoundation_checkpoint(folder / "models", GENE_INDEX), {}


def _same_object(self, *args, **kwargs):
    return self


def reference_embedding(
    checkpoint: Path, cells_h5ad: Path, reference: Path, setting: str, folder: Path
) -> np.ndarray:
    """`get_embedding.py` run on the cells in a folder laid out as it expects."""
    folder.mkdir(parents=True, exist_ok=True)
    models = folder / "models"
    if not models.exists():
        models.symlink_to(checkpoint.resolve(), target_is_directory=True)
    index = folder / GENE_INDEX.name
    if not index.exists():
        index.symlink_to((checkpoint / GENE_INDEX.name).resolve())
    saved = folder / f"saved-{setting}"
    saved.mkdir(exist_ok=True)
    argv = [
        "get_embedding.py", "--task_name", "parity", "--ckpt_name", "small",
        "--input_type", "singlecell", "--output_type", "cell", "--pool_type", "all",
        "--version", "ce", "--pre_normalized", "F", "--tgthighres", setting,
        "--data_path", str(cells_h5ad), "--save_path", str(saved),
    ]  # fmt: skip
    model_dir = reference / "model"
    with ExitStack() as stack:
        log = stack.enter_context((folder / "reference.log").open("a"))
        stack.enter_context(redirect_stdout(log))
        stack.enter_context(redirect_stderr(log))
        stack.enter_context(reference_on_path(model_dir))
        stack.enter_context(in_folder(folder))
        stack.enter_context(mock.patch.object(sys, "argv", argv))
        stack.enter_context(mock.patch.object(torch.Tensor, "cuda", _same_object))
        stack.enter_context(mock.patch.object(torch.nn.Module, "cuda", _same_object))
        try:
            runpy.run_path(str(model_dir / "get_embedding.py"), run_name="__main__")
        finally:
            for name in [m for m in sys.modules if m.split(".")[0] in _REFERENCE_MODULES]:
                del sys.modules[name]
    (found,) = saved.glob("*.npy")
    return np.load(found).reshape(-1, 4 * _width(checkpoint))


def _width(checkpoint: Path) -> int:
    entry = torch.load(checkpoint / "models.ckpt", weights_only=True)["cell"]
    return int(entry["config"]["model_config"]["mae_autobin"]["encoder"]["hidden_dim"])


def write_cells(path: Path, cells: SourceTable) -> Path:
    """The cells' panel genes, in data order, as the h5ad the reference script reads (it
    fills and orders the panel itself, with its `main_gene_selection`)."""
    import anndata
    import pandas as pd
    from scipy import sparse

    panel = set(pd.read_csv(GENE_INDEX, sep="\t", header=0)["gene_name"].astype(str))
    seen: set[str] = set()
    columns = []
    for j, gene in enumerate(map(str, cells.genes)):
        if gene in panel and gene not in seen:
            seen.add(gene)
            columns.append(j)
    anndata.AnnData(
        X=sparse.csr_matrix(cells.counts[:, columns], dtype=np.float32),
        obs=pd.DataFrame(index=[str(b) for b in cells.barcodes]),
        var=pd.DataFrame(index=[str(cells.genes[j]) for j in columns]),
    ).write_h5ad(path)
    return path


def longest_input(checkpoint: Path, cells: SourceTable) -> int:
    """The most tokens a cell gives (its expressed panel genes, T and S)."""
    from scdrugmap.embed.models.scfoundation import ScFoundationEmbedder

    embedder = ScFoundationEmbedder.load(checkpoint)
    return int(embedder.tokenize(cells.counts, list(cells.genes)).lengths.max())


def main(argv: Sequence[str] | None = None) -> float:
    args = parse_args(__doc__.splitlines()[0], REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder / "checkpoint")
        cells = real_cells(args.cells)
        cells_h5ad = write_cells(folder / "cells.h5ad", cells)
        tokens = longest_input(checkpoint, cells)
        worst = 0.0
        for setting in SETTINGS:
            (folder / f"ours-{setting}").mkdir(exist_ok=True)
            theirs = reference_embedding(
                checkpoint, cells_h5ad, args.reference, setting, folder / "reference"
            )
            ours = scdrugmap_embedding(
                folder / f"ours-{setting}",
                cells,
                "scfoundation",
                checkpoint,
                {**params, "tgthighres": setting},
            )
            name = f"scfoundation tgthighres={setting}, up to {tokens:,} tokens"
            worst = max(worst, report(name, ours, theirs, commit, REFERENCE.repo))
    return worst


if __name__ == "__main__":
    main()
