"""What the two scGPT parity scripts share (`scgpt_flash`, `scgpt_torch`: the two attention
layouts of best_model.pt).

The reference is bowang-lab/scGPT's own `scgpt.tasks.cell_emb.embed_data` (vocabulary,
model, `load_pretrained`, its `DataCollator` with binning and sampling, the `<cls>` output
L2-normalised), imported from the checkout at run time. Only the modules that path needs
are imported: `scgpt/__init__.py` (trainer, scbank, ...) and `scgpt/tasks/__init__.py`
(the GRN tools: networkx, seaborn ...) are replaced by bare package objects whose
`__path__` is the checkout's folder, so `scgpt.tasks.cell_emb` and what it imports
(`scgpt.model`, `scgpt.tokenizer`, `scgpt.utils`, `scgpt.data_collator`,
`scgpt.preprocess`) are the checkout's files, unchanged. They need scanpy and IPython
beyond scdrugmap's packages; flash-attn must not be installed (the run is on CPU, where
the reference falls back to PyTorch's encoder layers, renaming `Wqkv` to `in_proj_*` in
its `load_pretrained`).

The reference draws random numbers twice per cell: `np.random.rand` in
`scgpt.preprocess._digitize` (where a value sits on equal quantile edges) and
`torch.randperm` in `DataCollator._sample` (which 1,199 genes a longer cell keeps). For
the duration of the run both are replaced by functions handing out scdrugmap's own
draws for that cell (from `scdrugmap.embed.models.scgpt`), in the order the reference
asks for them; each call is checked against the cell it is for (its length). The
reference's DataLoader is kept in this process (its `os.sched_getaffinity` answers no
CPUs for the run, so `num_workers` is 0), so the calls come in cell order. The tokens
and bins the reference gives its model are recorded and compared with scdrugmap's.

A second line checks the draws themselves against the reference's distribution: the
tie-breaking uniforms against U[0, 1) and against the reference's `np.random.rand`,
and the gene picks (distinct, and their positions among the cell's genes ranked by
expression) against the reference's own `torch.randperm` picks of the same cells.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import sys
import types
import warnings
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from scipy import stats

from parity.common import (
    TESTS_DATA,
    Reference,
    parse_args,
    real_cells,
    reference_commit,
    reference_on_path,
    report,
    scdrugmap_embedding,
    work_folder,
)
from scdrugmap.data.readers import SourceTable
from scdrugmap.embed.cell_random import cell_seeds, gene_draws, uniform
from scdrugmap.embed.models.scgpt import (
    _BIN_STREAM,
    _SAMPLE_STREAM,
    ScGPTTokenizer,
    load_args,
    load_vocabulary,
)

REFERENCE = Reference("bowang-lab/scGPT", "cebd6fa")
DEFAULT_CELLS = 200
MAX_LENGTH = 1200  # the README figure's input length (<cls> included), embed_data's default
N_BINS = 51  # the reference collator's
CENSUS_VOCAB = TESTS_DATA / "vocab" / "scgpt" / "default_census_vocab.json"


def build_checkpoint(folder: Path, flash_layout: bool) -> tuple[Path, dict]:
    """The tests' small random scGPT (best_model.pt, vocab.json, args.json) in one layout."""
    from tests.scgpt_checkpoint import write_scgpt_checkpoint

    checkpoint = write_scgpt_checkpoint(folder / "scgpt", CENSUS_VOCAB, flash_layout=flash_layout)
    return checkpoint, {"max_length": MAX_LENGTH}


@dataclass(frozen=True)
class CellDraws:
    """scdrugmap's draws for one cell, in the order of its expressed genes (column order)."""

    tokens: np.ndarray
    uniforms: np.ndarray  # tie-breaking, one per gene
    sample_keys: np.ndarray  # gene sampling: a long cell keeps its smallest keys
    values: np.ndarray

    def permutation(self) -> torch.Tensor:
        """The reference's `randperm(n)` as our picks: kept genes first (stable on ties)."""
        return torch.from_numpy(np.argsort(self.sample_keys, kind="stable").astype(np.int64))


def our_draws(checkpoint: Path, cells: SourceTable) -> tuple[list[CellDraws], ScGPTTokenizer]:
    """The random numbers scdrugmap draws for each cell (`ScGPTTokenizer.__call__`'s)."""
    vocab = load_vocabulary(checkpoint / "vocab.json")
    pad_value = float(load_args(checkpoint / "args.json").get("pad_value", -2))
    tokenizer = ScGPTTokenizer(vocab, pad_value, N_BINS, MAX_LENGTH, seed=0)
    genes = tokenizer.expressed(cells.counts, list(cells.genes))
    seeds = cell_seeds(genes, tokenizer.seed)
    uniforms = uniform(gene_draws(genes, seeds, _BIN_STREAM))
    keys = gene_draws(genes, seeds, _SAMPLE_STREAM) >> np.uint64(20)  # sampling_order's 44 bits
    bounds = np.r_[0, np.cumsum(genes.counts)]
    draws = [
        CellDraws(genes.tokens[a:b], uniforms[a:b], keys[a:b], genes.values[a:b])
        for a, b in itertools.pairwise(bounds)
    ]
    return draws, tokenizer


class DrawQueue:
    """Hands the reference our draws, call by call, checking each call is for the cell expected."""

    def __init__(self, draws: list[CellDraws], max_length: int) -> None:
        self.calls: list[tuple[str, int, object]] = []
        for cell in draws:
            self.calls.append(("rand", len(cell.tokens), cell.uniforms))
            if len(cell.tokens) + 1 > max_length:
                self.calls.append(("randperm", len(cell.tokens), cell.permutation()))
        self.position = 0

    def _next(self, kind: str, n: int) -> object:
        if self.position >= len(self.calls):
            raise RuntimeError(f"the reference asked for one more {kind}({n}) than expected")
        expected, length, value = self.calls[self.position]
        if (expected, length) != (kind, n):
            raise RuntimeError(
                f"call {self.position}: the reference asked for {kind}({n}), "
                f"expected {expected}({length}); the cells are not aligned"
            )
        self.position += 1
        return value

    def rand(self, *shape: int) -> np.ndarray:
        if len(shape) != 1:
            raise RuntimeError(f"unexpected np.random.rand{shape}")
        return np.array(self._next("rand", int(shape[0])), dtype=np.float64)

    def randperm(self, n: int, *args, **kwargs) -> torch.Tensor:
        device = kwargs.get("device")
        value = self._next("randperm", int(n))
        return value.to(device) if device is not None else value.clone()

    def finished(self) -> None:
        if self.position != len(self.calls):
            raise RuntimeError(
                f"the reference used {self.position} of the {len(self.calls)} draws prepared"
            )


def import_reference(path: Path) -> types.ModuleType:
    """The checkout's `scgpt.tasks.cell_emb`, without the package `__init__` files' imports."""
    for name, folder in (("scgpt", path / "scgpt"), ("scgpt.tasks", path / "scgpt" / "tasks")):
        if not folder.is_dir():
            raise SystemExit(f"--reference {path}: no {folder.relative_to(path)}/ in the checkout")
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        package.__file__ = str(folder / "__init__.py")
        sys.modules[name] = package
    sys.modules["scgpt"].logger = logging.getLogger("scGPT")  # what scgpt/__init__ defines
    sys.modules["scgpt"].tasks = sys.modules["scgpt.tasks"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("scgpt.tasks.cell_emb")


@contextmanager
def our_draws_in_the_reference(queue: DrawQueue):
    """np.random.rand and torch.randperm answer with our draws; the DataLoader stays here."""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(np.random, "rand", queue.rand))
        stack.enter_context(mock.patch.object(torch, "randperm", queue.randperm))
        stack.enter_context(mock.patch.object(os, "sched_getaffinity", lambda pid: set()))
        yield
    queue.finished()


def anndata_of(cells: SourceTable):
    import anndata
    import pandas as pd

    return anndata.AnnData(
        X=cells.counts.astype(np.float32).toarray(),
        obs=pd.DataFrame(index=[str(b) for b in cells.barcodes]),
        var=pd.DataFrame(index=[str(g) for g in cells.genes]),
    )


def run_reference(
    cell_emb: types.ModuleType, checkpoint: Path, cells: SourceTable, flash_layout: bool, queue
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """embed_data on CPU, with our draws; also the (gene ids, values) each cell was fed."""
    fed: list[tuple[np.ndarray, np.ndarray]] = []
    model_class = cell_emb.TransformerModel
    encode = model_class._encode

    def recording_encode(self, src, values, src_key_padding_mask, batch_labels=None):
        for ids, vals, pad in zip(src, values, src_key_padding_mask):
            fed.append((ids[~pad].numpy().copy(), vals[~pad].numpy().copy()))
        return encode(self, src, values, src_key_padding_mask, batch_labels)

    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(mock.patch.object(model_class, "_encode", recording_encode))
        stack.enter_context(our_draws_in_the_reference(queue))
        adata = cell_emb.embed_data(
            anndata_of(cells),
            checkpoint,
            gene_col="index",
            max_length=MAX_LENGTH,
            batch_size=64,
            device="cpu",
            use_fast_transformer=flash_layout,
            return_new_adata=False,
        )
    return np.asarray(adata.obsm["X_scGPT"]), fed


def compare_tokens(tokenizer: ScGPTTokenizer, cells: SourceTable, fed) -> tuple[int, int]:
    """Cells whose (gene, bin) multiset the reference fed its model equals scdrugmap's."""
    batch = tokenizer(cells.counts, list(cells.genes))
    same = 0
    for i, (ids, values) in enumerate(fed):
        a, b = batch.offsets[i], batch.offsets[i + 1]
        ours = np.stack([batch.ids[a:b].astype(np.float64), batch.values[a:b]], 1)
        theirs = np.stack([ids.astype(np.float64), values.astype(np.float64)], 1)
        same += ours.shape == theirs.shape and np.array_equal(
            ours[np.lexsort(ours.T[::-1])], theirs[np.lexsort(theirs.T[::-1])]
        )
    return same, len(fed)


def distribution_check(cell_emb: types.ModuleType, draws: list[CellDraws]) -> str:
    """Our uniforms and picks beside the reference's own random draws, for the same cells."""
    preprocess = sys.modules["scgpt.preprocess"]
    collator_module = sys.modules["scgpt.data_collator"]
    ours_u = np.concatenate([d.uniforms for d in draws])
    np.random.seed(0)
    theirs_u = np.concatenate([preprocess.np.random.rand(len(d.tokens)) for d in draws])
    uniform_p = stats.kstest(ours_u, "uniform").pvalue
    two_sample_u = stats.ks_2samp(ours_u, theirs_u).pvalue
    collator = collator_module.DataCollator(
        do_padding=True, pad_token_id=0, pad_value=-2, do_mlm=False, do_binning=False,
        max_length=MAX_LENGTH, sampling=True, keep_first_n_tokens=1,
    )  # fmt: skip
    torch.manual_seed(0)
    ours_rank, theirs_rank, distinct, n_long = [], [], True, 0
    for cell in draws:
        n = len(cell.tokens)
        if n + 1 <= MAX_LENGTH:
            continue
        n_long += 1
        by_expression = np.empty(n)
        by_expression[np.argsort(-cell.values, kind="stable")] = (np.arange(n) + 0.5) / n
        ours = cell.permutation().numpy()[: MAX_LENGTH - 1]
        distinct &= len(np.unique(ours)) == len(ours)
        genes = torch.arange(-1, n)  # <cls> first, then the cell's genes 0..n-1
        picked, _ = collator._sample(genes, genes.float(), MAX_LENGTH)
        theirs = picked[1:].numpy()
        ours_rank.append(by_expression[ours])
        theirs_rank.append(by_expression[theirs])
    line = (
        f"scgpt draws: {len(ours_u)} tie-breaking uniforms in [{ours_u.min():.2g}, "
        f"{ours_u.max():.6f}], KS against U[0,1) p={uniform_p:.2f}, against the reference's "
        f"np.random.rand p={two_sample_u:.2f}"
    )
    if n_long:
        rank_p = stats.ks_2samp(np.concatenate(ours_rank), np.concatenate(theirs_rank)).pvalue
        flat = np.concatenate(ours_rank)
        line += (
            f"; {len(flat)} gene picks in {n_long} cells over {MAX_LENGTH - 1} genes, "
            f"{'all distinct' if distinct else 'REPEATED'}, expression rank of picked genes "
            f"KS against the reference's torch.randperm picks p={rank_p:.2f}, "
            f"against uniform p={stats.kstest(flat, 'uniform').pvalue:.2f}"
        )
    return line


def main(description: str, flash_layout: bool, argv: Sequence[str] | None = None) -> float:
    layout = "flash-attention Wqkv" if flash_layout else "PyTorch in_proj"
    name = f"scgpt ({layout} layout)"
    args = parse_args(description, REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    cells = real_cells(args.cells)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder, flash_layout)
        draws, tokenizer = our_draws(checkpoint, cells)
        with reference_on_path(args.reference):
            cell_emb = import_reference(args.reference.resolve())
            theirs, fed = run_reference(
                cell_emb, checkpoint, cells, flash_layout, DrawQueue(draws, MAX_LENGTH)
            )
            draw_line = distribution_check(cell_emb, draws)
        ours = scdrugmap_embedding(folder, cells, "scgpt", checkpoint, params)
    diff = report(name, ours, theirs, commit, REFERENCE.repo)
    same, total = compare_tokens(tokenizer, cells, fed)
    print(f"scgpt tokens: the reference fed its model the same genes and bins for {same} of "
          f"{total} cells")  # fmt: skip
    print(draw_line)
    return diff
