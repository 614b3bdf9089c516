"""Geneformer throughput on real PC9 cells: tokenisation (ours vs the reference's) and embedding.

Run as `python -m benchmarks.model_geneformer [--reference DIR]`, where DIR
holds the authors' `geneformer/tokenizer.py` (or set GENEFORMER_REFERENCE).
The network is a small random one in the published layout, so the embedding
figure measures our batching and pooling, not a published model's cost.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.pc9 import CELLS, SHARED
from benchmarks.timing import print_skipped, print_versus, time_embed, time_tokenise
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.models.geneformer import GeneformerEmbedder, GeneformerTokenizer
from tests.geneformer_checkpoint import write_geneformer_checkpoint

VOCAB = SHARED / "vocab" / "geneformer_v1"


def reference_rate(reference: Path, tokenizer: GeneformerTokenizer, counts, genes) -> float:
    """The reference's `tokenize_cell`, one dense normalised cell at a time (its loom path)."""
    spec = importlib.util.spec_from_file_location("gf_reference_rank", reference)
    module = importlib.util.module_from_spec(spec)
    source = reference.read_text()
    # Only the two ranking functions are needed; the module's file-format imports are not.
    start = source.index("def rank_genes")
    end = source.index("\nclass ", start)
    exec(
        compile("import numpy as np\n" + source[start:end], str(reference), "exec"), module.__dict__
    )
    ids = [tokenizer.ensembl_id(g) for g in genes]
    columns = np.array([j for j, i in enumerate(ids) if i is not None])
    tokens = np.array([tokenizer.token_dictionary[ids[j]] for j in columns])
    medians = np.array([tokenizer.medians[ids[j]] for j in columns])
    started = time.perf_counter()
    view = counts.T.toarray()[columns, :]
    totals = np.asarray(counts.sum(axis=1)).ravel().astype(np.int64)
    normalised = view / totals * 10_000 / medians[:, None]
    for i in range(normalised.shape[1]):
        module.tokenize_cell(normalised[:, i], tokens)[: tokenizer.model_input_size]
    return counts.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", default=os.environ.get("GENEFORMER_REFERENCE"))
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--embed-cells", type=int, default=200)
    args = parser.parse_args()
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], table.genes
    with tempfile.TemporaryDirectory() as scratch:
        embedder = GeneformerEmbedder.load(write_geneformer_checkpoint(Path(scratch) / "gf", VOCAB))
        batch, ours = time_tokenise(embedder, counts, genes)
        reference = Path(args.reference) / "geneformer" / "tokenizer.py" if args.reference else None
        if reference is not None and reference.is_file():
            rate = reference_rate(reference, embedder.tokenizer, counts, genes)
            print_versus("tokenise", "reference tokenize_cell", rate, ours)
        else:
            print_skipped("tokenise", "GENEFORMER_REFERENCE")
        subset = embedder.tokenize(counts[-args.embed_cells :], genes)
        rate = time_embed(embedder, subset, args.embed_cells)
        mean_tokens = subset.lengths.mean()
        print(
            f"embed, 2 layers x 64 wide on CPU ({torch.get_num_threads()} threads): "
            f"{rate:,.0f} cells/s at {mean_tokens:.0f} tokens/cell; "
            f"all {len(batch.lengths)} cells average {batch.lengths.mean():.0f} tokens"
        )


if __name__ == "__main__":
    main()
