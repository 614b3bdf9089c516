"""tGPT throughput on real PC9 cells: tokenisation (ours vs the reference's path) and embedding.

Run as `python -m benchmarks.model_tgpt`. The reference publishes no ranking
code, only the feature-extraction loop of its README: text lines through
`re.sub('-|.', '_')` and `PreTrainedTokenizerFast` in batches of 64. Its
side of the comparison ranks each dense cell with `np.argsort` (what such a
script does) and then runs that loop; ours maps the whole sparse chunk to
token ids at once. The network is a small random one in the published
layout, so the embedding figure measures our batching, not the published
model's cost.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from benchmarks.pc9 import CELLS, SHARED
from benchmarks.timing import print_versus, time_embed, time_tokenise
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.models.tgpt import TGPTEmbedder
from tests.tgpt_checkpoint import write_tgpt_checkpoint

VOCAB = SHARED / "vocab" / "tgpt"


def reference_rate(checkpoint: Path, counts, genes: list[str], n_genes: int) -> float:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(checkpoint))
    separators = re.compile(r"\-|\.")
    names = np.array(genes, dtype=object)
    started = time.perf_counter()
    dense = counts.toarray()
    lines = []
    for row in dense:
        expressed = np.flatnonzero(row)
        ranked = expressed[np.argsort(-row[expressed], kind="stable")][:n_genes]
        lines.append(" ".join(names[ranked]))
    for start in range(0, len(lines), 64):
        batch = [separators.sub("_", line) for line in lines[start : start + 64]]
        tokenizer(batch, max_length=n_genes + 2, truncation=True, padding=True)
    return counts.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--embed-cells", type=int, default=500)
    args = parser.parse_args()
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], table.genes
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = write_tgpt_checkpoint(Path(scratch), VOCAB)
        embedder = TGPTEmbedder.load(checkpoint)
        batch, ours = time_tokenise(embedder, counts, genes)
        columns, _ = embedder.tokenizer.known_columns(genes)
        rate = reference_rate(
            checkpoint, counts[:, columns], [genes[c] for c in columns], embedder.tokenizer.n_genes
        )
        print_versus("tokenise", "reference path", rate, ours)
        subset = embedder.tokenize(counts[: args.embed_cells], genes)
        rate = time_embed(embedder, subset, args.embed_cells)
        print(
            f"embed, 2 layers x 64 wide on CPU ({torch.get_num_threads()} threads): "
            f"{rate:,.0f} cells/s at {subset.lengths.mean():.0f} tokens/cell; "
            f"all {len(batch.lengths)} cells average {batch.lengths.mean():.0f} tokens"
        )


if __name__ == "__main__":
    main()
