"""UCE throughput on real PC9 cells: cell sentences (ours vs the reference's) and embedding.

Run as `python -m benchmarks.model_uce [--reference DIR]`, where DIR is a
checkout of snap-stanford/UCE (or set UCE_REFERENCE). The reference side runs
its `eval_data.sample_cell_sentences` one cell at a time, as its data loader
does (log1p weights, `np.random.choice`, chromosome shuffle and sort). The
network is a small random one in the published layout, so the embedding
figure measures our batching, not the published model's cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from benchmarks.pc9 import CELLS
from benchmarks.timing import print_skipped, print_versus, time_embed, time_tokenise
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.models.uce import TOKENS, UCEEmbedder
from tests.uce_checkpoint import write_uce_checkpoint


def reference_rate(reference: Path, embedder: UCEEmbedder, counts, genes) -> float:
    sys.path.insert(0, str(reference))
    import eval_data

    columns, tokens, chroms, starts = embedder.tokenizer.gene_map(genes)
    args = types.SimpleNamespace(
        pad_length=1536,
        sample_size=1024,
        cls_token_idx=TOKENS["cls"],
        CHROM_TOKEN_OFFSET=TOKENS["chrom_offset"],
        chrom_token_right_idx=TOKENS["chrom_right"],
        pad_token_idx=TOKENS["pad"],
    )
    started = time.perf_counter()
    dense = counts[:, columns].toarray().astype(np.int64)
    for row in dense:
        cell = torch.tensor(row).unsqueeze(0)
        weights = torch.log1p(cell)
        eval_data.sample_cell_sentences(
            cell,
            weights / torch.sum(weights),
            "d",
            args,
            {"d": torch.tensor(tokens)},
            {"d": chroms},
            {"d": starts},
        )
    return counts.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", default=os.environ.get("UCE_REFERENCE"))
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--embed-cells", type=int, default=40)
    args = parser.parse_args()
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], table.genes
    with tempfile.TemporaryDirectory() as scratch:
        symbols = [g for i, g in enumerate(genes) if i % 10]
        embedder = UCEEmbedder.load(write_uce_checkpoint(Path(scratch), symbols))
        batch, ours = time_tokenise(embedder, counts, genes, what="cell sentences")
        reference = Path(args.reference) if args.reference else None
        if reference is not None and (reference / "eval_data.py").is_file():
            rate = reference_rate(reference, embedder, counts, genes)
            print_versus("cell sentences", "reference", rate, ours)
        else:
            print_skipped("cell sentences", "UCE_REFERENCE")
        subset = embedder.tokenize(counts[: args.embed_cells], genes)
        rate = time_embed(embedder, subset, args.embed_cells)
        print(
            f"embed, 2 layers x 40 wide on CPU ({torch.get_num_threads()} threads): "
            f"{rate:,.1f} cells/s at {batch.lengths.mean():.0f} tokens/cell"
        )


if __name__ == "__main__":
    main()
