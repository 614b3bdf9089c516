"""scFoundation throughput on real PC9 cells: tokenisation (ours vs the reference's) and embedding.

Run as `python -m benchmarks.model_scfoundation [--reference DIR]`, where DIR
is a checkout of biomap-research/scFoundation (or set SCFOUNDATION_REFERENCE).
The reference input path is `get_embedding.py`'s single-cell loop: a dense
19,264-gene row per cell from a DataFrame, log1p per 10,000, the T and S
tokens, and `gatherData` from its `model/load.py`. The network is a small
random one in the published layout, so the embedding figure measures our
batching, not the published model's cost.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.pc9 import CELLS, SHARED
from benchmarks.timing import print_skipped, print_versus, time_embed, time_tokenise
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.models.scfoundation import ScFoundationEmbedder
from tests.scfoundation_checkpoint import write_scfoundation_checkpoint

PANEL = SHARED / "vocab" / "scfoundation" / "OS_scRNA_gene_index.19264.tsv"


def reference_gather(reference: Path):
    """`gatherData` compiled from the reference's model/load.py (its imports not needed)."""
    source = (reference / "model" / "load.py").read_text()
    start = source.index("def gatherData(")
    end = source.index("\ndef ", start + 1)
    namespace: dict = {}
    exec(compile("import torch\n" + source[start:end], "load.py", "exec"), namespace)
    return namespace["gatherData"]


def reference_rate(reference: Path, embedder: ScFoundationEmbedder, counts, genes) -> float:
    gather = reference_gather(reference)
    panel = embedder.tokenizer.panel.genes
    started = time.perf_counter()
    frame = pd.DataFrame(counts.toarray(), columns=genes)
    frame = frame.loc[:, ~frame.columns.duplicated()].reindex(columns=panel, fill_value=0)
    ids = torch.arange(len(panel) + 2)[None]
    for i in range(frame.shape[0]):
        row = frame.iloc[i, :]
        values = np.log1p(row / row.sum() * 1e4).tolist()
        cell = torch.tensor([*values, 4.0, np.log10(row.sum())])[None]
        labels = cell > 0
        gather(cell, labels, 103)
        gather(ids, labels, 103)
    return counts.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", default=os.environ.get("SCFOUNDATION_REFERENCE"))
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--embed-cells", type=int, default=100)
    args = parser.parse_args()
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], table.genes
    with tempfile.TemporaryDirectory() as scratch:
        embedder = ScFoundationEmbedder.load(write_scfoundation_checkpoint(Path(scratch), PANEL))
        batch, ours = time_tokenise(embedder, counts, genes)
        reference = Path(args.reference) if args.reference else None
        if reference is not None and (reference / "model" / "load.py").is_file():
            rate = reference_rate(reference, embedder, counts, genes)
            print_versus("tokenise", "reference loop", rate, ours)
        else:
            print_skipped("tokenise", "SCFOUNDATION_REFERENCE")
        subset = embedder.tokenize(counts[-args.embed_cells :], genes)
        rate = time_embed(embedder, subset, args.embed_cells)
        print(
            f"embed, 2 layers x 32 wide on CPU ({torch.get_num_threads()} threads): "
            f"{rate:,.0f} cells/s at {subset.lengths.mean():.0f} tokens/cell; "
            f"all {len(batch.lengths)} cells average {batch.lengths.mean():.0f} tokens"
        )


if __name__ == "__main__":
    main()
