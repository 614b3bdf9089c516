"""scBERT throughput on real PC9 cells: tokenisation (ours vs the reference's steps) and embedding.

Run as `python -m benchmarks.model_scbert`. The reference's preprocessing is
a script (`preprocess.py`: panel columns copied one by one into a LIL matrix,
scanpy normalisation and base-2 log1p) followed by `predict.py`'s per-cell
densify, clip and truncate; the reference side restates those steps on the
same cells (scanpy's two calls as the numpy they run). The network is a small
random one in the published layout, so the embedding figure measures our
batching, not the published model's cost.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

from benchmarks.pc9 import CELLS
from benchmarks.timing import print_versus, time_embed, time_tokenise
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.models.scbert import ScBERTEmbedder
from tests.scbert_checkpoint import SMALL, write_scbert_checkpoint


def reference_rate(counts: sparse.csr_matrix, genes: list[str], panel: list[str]) -> float:
    started = time.perf_counter()
    mapped = sparse.lil_matrix((counts.shape[0], len(panel)), dtype=np.float32)
    for i, gene in enumerate(panel):
        if gene in genes:
            mapped[:, i] = counts[:, genes.index(gene)].toarray()
    mapped = mapped.tocsr()
    totals = np.asarray(mapped.sum(axis=1)).ravel()
    mapped = sparse.diags((1e4 / totals).astype(np.float32)) @ mapped
    mapped.data = (np.log1p(mapped.data) / np.log(2)).astype(np.float32)
    for i in range(mapped.shape[0]):
        row = mapped[i].toarray()[0]
        row[row > 5] = 5
        torch.cat((torch.from_numpy(row).long(), torch.tensor([0])))
    return counts.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--embed-cells", type=int, default=100)
    args = parser.parse_args()
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], list(table.genes)
    panel = genes[:16906]
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = write_scbert_checkpoint(Path(scratch), panel)
        embedder = ScBERTEmbedder.load(checkpoint, heads=SMALL["heads"], dim_head=SMALL["dim_head"])
        _, ours = time_tokenise(embedder, counts, genes, note=", 16,906 genes")
        print_versus("tokenise", "reference steps", reference_rate(counts, genes, panel), ours)
        subset = embedder.tokenize(counts[: args.embed_cells], genes)
        rate = time_embed(embedder, subset, args.embed_cells)
        print(
            f"embed, 2 Performer layers x 32 wide on CPU ({torch.get_num_threads()} threads): "
            f"{rate:,.1f} cells/s at 16,907 tokens/cell"
        )


if __name__ == "__main__":
    main()
