"""CellLM throughput on real PC9 cells: tokenisation (ours vs the reference's loop) and embedding.

Run as `python -m benchmarks.model_celllm`. The reference builds its input
inside `PerformerLM_CellLM.forward`, one cell at a time over a dense row
(expressed values, clip, CLS, gene positions, padding to 6,000); the
reference side restates that loop, fed the same dense log2-normalised rows.
Its Performer then runs all 6,000 positions; ours runs the real tokens plus
one position for the padding, which the embedding figure reflects. The
network is a small random one in the published layout.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.pc9 import CELLS
from benchmarks.timing import print_versus, time_embed, time_tokenise
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.models.celllm import CellLMEmbedder
from scdrugmap.embed.panel import log2_per_10k
from tests.celllm_checkpoint import SMALL, write_celllm_checkpoint


def reference_rate(embedder: CellLMEmbedder, counts, genes) -> float:
    n_genes, length = len(embedder.tokenizer.panel), embedder.settings["max_seq_len"]
    started = time.perf_counter()
    on_panel = embedder.tokenizer.panel.project(counts, genes, np.float32)
    on_panel.data = log2_per_10k(on_panel)
    rows = torch.from_numpy(on_panel.toarray())
    tokens = torch.full((len(rows), length), 7, dtype=torch.long)
    positions = torch.full((len(rows), length), n_genes + 1, dtype=torch.long)
    for i, row in enumerate(rows):
        values = row[row > 0]
        where = torch.arange(row.shape[0])[row > 0]
        values[values > 5] = 5
        values = torch.cat((torch.tensor([6]), values.long()))
        where = torch.cat((torch.tensor([n_genes]), where))
        kept = min(values.shape[0], length)
        tokens[i, :kept], positions[i, :kept] = values[:kept], where[:kept]
    return len(rows) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--embed-cells", type=int, default=200)
    args = parser.parse_args()
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], list(table.genes)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = write_celllm_checkpoint(Path(scratch), genes[:19379])
        embedder = CellLMEmbedder.load(checkpoint, heads=SMALL["heads"], dim_head=SMALL["dim_head"])
        batch, ours = time_tokenise(embedder, counts, genes)
        print_versus("tokenise", "reference loop", reference_rate(embedder, counts, genes), ours)
        subset = embedder.tokenize(counts[: args.embed_cells], genes)
        rate = time_embed(embedder, subset, args.embed_cells)
        print(
            f"embed, 2 Performer layers x 32 wide on CPU ({torch.get_num_threads()} threads): "
            f"{rate:,.1f} cells/s at {subset.lengths.mean():.0f} positions/cell "
            f"(the reference runs 6,000); all cells average {batch.lengths.mean():.0f}"
        )


if __name__ == "__main__":
    main()
