"""CellPLM throughput on real PC9 cells: input preparation (ours vs the reference's path) and
embedding, in blocks of cells that attend to each other.

Run as `python -m benchmarks.model_cellplm [--published]`. The reference
prepares a data set by filtering AnnData columns to its gene set with a
Python list, converting each sample to a float64 CSR matrix and then a torch
sparse tensor, and at inference building the gene index with a Python list
and taking log1p; the reference side restates that path on the same cells.
The network is random in the published layout: narrow by default, the
published widths (1,024 wide, 4 layers, 512-dim latent) with `--published`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from scipy import sparse

from benchmarks.pc9 import CELLS, SHARED
from benchmarks.timing import print_versus, time_embed, time_tokenise
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.models.cellplm import CellPLMEmbedder
from tests.cellplm_checkpoint import PUBLISHED, SMALL, write_cellplm_checkpoint


def reference_rate(embedder: CellPLMEmbedder, counts, genes) -> float:
    gene_list = embedder.tokenizer.panel.genes
    gene_set, gene_index = set(gene_list), {g: i for i, g in enumerate(gene_list)}
    started = time.perf_counter()
    ids = embedder.tokenizer.ensembl_ids(genes)
    kept = [j for j, g in enumerate(ids) if g in gene_set]
    matrix = sparse.csr_matrix(counts[:, kept].astype(float))
    x = torch.sparse_csr_tensor(matrix.indptr, matrix.indices, matrix.data, matrix.shape)
    torch.log1p(x.to_sparse().float().coalesce())
    torch.tensor([gene_index[ids[j]] for j in kept if ids[j] in gene_index]).long()
    return counts.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=4000)
    parser.add_argument("--block-size", type=int, default=4000)
    parser.add_argument("--published", action="store_true", help="the published widths")
    args = parser.parse_args()
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], list(table.genes)
    widths = PUBLISHED if args.published else SMALL
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = write_cellplm_checkpoint(Path(scratch), SHARED, widths=widths)
        embedder = CellPLMEmbedder.load(checkpoint, block_size=args.block_size)
        batch, ours = time_tokenise(embedder, counts, genes)
        print_versus("tokenise", "reference path", reference_rate(embedder, counts, genes), ours)
        rate = time_embed(embedder, batch, counts.shape[0])
        print(
            f"embed, {widths['enc_layers']} Flowformer layers x {widths['enc_hid']} wide on CPU "
            f"({torch.get_num_threads()} threads), blocks of {args.block_size} cells: "
            f"{rate:,.0f} cells/s"
        )


if __name__ == "__main__":
    main()
