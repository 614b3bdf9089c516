"""Geneformer V1 parity: scdrugmap against the authors' tokenizer and embedding extractor.

The random checkpoint is a BertForMaskedLM in the published layout with the real V1
dictionaries (tests/data/vocab/geneformer_v1). The same real PC9 cells go, as a loom file
(`ensembl_id` rows named through the authors' `gene_name_id_dict.pkl`, float32 counts,
float64 `n_counts`), through the checkout's `TranscriptomeTokenizer.tokenize_data` and
`EmbExtractor.extract_embs` (mean of the penultimate layer over the gene tokens), and
through `scdrugmap embed --model geneformer`. The extractor shuffles and sorts the cells;
a `cell_index` attribute carried through its labels puts them back in order. Its
hard-coded "cuda" devices read as the CPU for the time of the run.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

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

REFERENCE = Reference("jkobject/geneformer", "95b6340")
DEFAULT_CELLS = 300
VOCAB = TESTS_DATA / "vocab" / "geneformer_v1"
# The extractor runs BertForMaskedLM, whose head writes batch x length x vocabulary floats
# (100 cells of 2,048 tokens: 21 GB); 10 cells a forward pass keep that near 2 GB.
FORWARD_BATCH_SIZE = 10


def build_checkpoint(folder: Path) -> tuple[Path, dict]:
    """The tests' small random V1 checkpoint (published layout, real dictionaries)."""
    from tests.geneformer_checkpoint import write_geneformer_checkpoint

    return write_geneformer_checkpoint(folder, VOCAB), {}


@contextmanager
def cuda_on_cpu() -> Iterator[None]:
    """The reference's hard-coded "cuda" devices (and its `torch.cpu.empty_cache`, which
    torch 2.13 lacks) read as the CPU for the time of the block."""
    import torch

    def cpu(device):
        is_cuda = isinstance(device, (str, torch.device)) and str(device).startswith("cuda")
        return "cpu" if is_cuda else device

    tensor, tensor_to, module_to = torch.tensor, torch.Tensor.to, torch.nn.Module.to
    had_empty_cache = hasattr(torch.cpu, "empty_cache")

    def new_tensor(*args, device=None, **kwargs):
        return tensor(*args, device=cpu(device), **kwargs)

    def moved(args, kwargs):
        return tuple(cpu(a) for a in args), {k: cpu(v) for k, v in kwargs.items()}

    def new_tensor_to(self, *args, **kwargs):
        args, kwargs = moved(args, kwargs)
        return tensor_to(self, *args, **kwargs)

    def new_module_to(self, *args, **kwargs):
        args, kwargs = moved(args, kwargs)
        return module_to(self, *args, **kwargs)

    torch.tensor, torch.Tensor.to, torch.nn.Module.to = new_tensor, new_tensor_to, new_module_to
    if not had_empty_cache:
        torch.cpu.empty_cache = lambda: None
    try:
        yield
    finally:
        torch.tensor, torch.Tensor.to, torch.nn.Module.to = tensor, tensor_to, module_to
        if not had_empty_cache:
            del torch.cpu.empty_cache


def import_reference(path: Path, *modules: str) -> list:
    """The checkout's `geneformer` modules, imported from it (an installed one is set aside)."""
    for name in [m for m in sys.modules if m == "geneformer" or m.startswith("geneformer.")]:
        del sys.modules[name]
    with reference_on_path(path):
        loaded = [importlib.import_module(f"geneformer.{m}") for m in modules]
    origin = Path(loaded[0].__file__).resolve()
    if not origin.is_relative_to(path.resolve()):
        raise SystemExit(f"geneformer was imported from {origin}, not from {path}")
    return loaded


def write_loom(
    path: Path, cells: SourceTable, checkpoint: Path, n_counts_dtype: type = np.float64
) -> Path:
    """The cells as the reference reads them: genes as rows named by Ensembl ID (symbols
    mapped through the authors' `gene_name_id_dict.pkl`), `n_counts` the cell's total over
    every gene, `cell_index` its position."""
    import loompy

    with (checkpoint / "token_dictionary.pkl").open("rb") as handle:
        tokens = pickle.load(handle)
    with (checkpoint / "gene_name_id_dict.pkl").open("rb") as handle:
        names = pickle.load(handle)
    ids = [g if g in tokens else names.get(g, g) for g in map(str, cells.genes)]
    known = [i for i in ids if i in tokens]
    if len(known) != len(set(known)):
        raise SystemExit("two data genes name one Ensembl ID; the V1 tokenizer would rank both")
    counts = cells.counts.astype(np.float32)
    totals = np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel()
    path.parent.mkdir(parents=True, exist_ok=True)
    loompy.create(
        str(path),
        counts.T.toarray(),
        row_attrs={"ensembl_id": np.array(ids)},
        col_attrs={
            "n_counts": totals.astype(n_counts_dtype),
            "cell_index": np.arange(counts.shape[0]),
        },
    )
    return path


def in_data_order(embs_df, n_cells: int) -> np.ndarray:
    """The extractor's table (cells shuffled and sorted by length) back in data order."""
    index = embs_df["cell_index"].to_numpy().astype(int)
    values = embs_df.drop(columns=["cell_index"]).to_numpy(dtype=np.float64)
    if sorted(index.tolist()) != list(range(n_cells)):
        raise SystemExit(f"the reference embedded {len(index)} cells, not the {n_cells} given")
    ordered = np.empty_like(values)
    ordered[index] = values
    return ordered


def reference_embedding(
    path: Path, cells: SourceTable, checkpoint: Path, folder: Path, n_counts_dtype=np.float64
) -> np.ndarray:
    """The checkout's tokenizer and embedding extractor on the cells (penultimate layer)."""
    tokenizer, extractor = import_reference(path, "tokenizer", "emb_extractor")
    loom = write_loom(folder / "loom" / "cells.loom", cells, checkpoint, n_counts_dtype)
    tokenize = tokenizer.TranscriptomeTokenizer(
        {"cell_index": "cell_index"},
        nproc=1,
        gene_median_file=checkpoint / "gene_median_dictionary.pkl",
        token_dictionary_file=checkpoint / "token_dictionary.pkl",
    )
    tokenize.tokenize_data(loom.parent, folder, "cells", file_format="loom")
    embex = extractor.EmbExtractor(
        model_type="Pretrained",
        emb_mode="cell",
        max_ncells=None,
        emb_layer=-1,
        emb_label=["cell_index"],
        forward_batch_size=FORWARD_BATCH_SIZE,
        nproc=1,
        token_dictionary_file=checkpoint / "token_dictionary.pkl",
    )
    with cuda_on_cpu():
        embs = embex.extract_embs(checkpoint, folder / "cells.dataset", folder, "reference")
    return in_data_order(embs, cells.counts.shape[0])


def main(argv: Sequence[str] | None = None) -> float:
    args = parse_args(__doc__, REFERENCE, DEFAULT_CELLS, argv)
    commit = reference_commit(args.reference, REFERENCE)
    cells = real_cells(args.cells)
    with work_folder(args.work) as folder:
        checkpoint, params = build_checkpoint(folder / "checkpoint")
        theirs = reference_embedding(args.reference, cells, checkpoint, folder / "reference")
        (folder / "ours").mkdir()
        ours = scdrugmap_embedding(folder / "ours", cells, "geneformer", checkpoint, params)
    return report("geneformer V1", ours, theirs, commit, REFERENCE.repo)


if __name__ == "__main__":
    main()
