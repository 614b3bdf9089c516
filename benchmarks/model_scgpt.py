"""scGPT throughput on real PC9 cells: tokenisation (ours vs the reference's) and embedding.

Run as `python -m benchmarks.model_scgpt [--reference DIR]`, where DIR is a
checkout of bowang-lab/scGPT (or set SCGPT_REFERENCE). The reference input
path is its `embed_data` dataset item (non-zero genes, <cls> first) and its
`DataCollator` (per-cell binning, sampling, padding), run as its DataLoader
runs them, one cell at a time. The network is a small random one in the
published layout, so the embedding figure measures our batching, not a
published model's cost.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.pc9 import CELLS, SHARED
from benchmarks.timing import print_skipped, print_versus, time_embed, time_tokenise
from scdrugmap.data.readers import read_matrix_file
from scdrugmap.embed.models.scgpt import ScGPTEmbedder
from tests.scgpt_checkpoint import write_scgpt_checkpoint

CENSUS = SHARED / "vocab" / "scgpt" / "default_census_vocab.json"


def reference_collator(reference: Path, embedder: ScGPTEmbedder):
    """The reference's binning and DataCollator, compiled from its files (not imported as a package,
    whose __init__ pulls in scanpy and plotting)."""
    namespace: dict = {"logger": logging.getLogger("scgpt-reference")}
    preprocess = (reference / "scgpt" / "preprocess.py").read_text()
    start = preprocess.index("def _digitize")
    end = preprocess.find("\ndef ", preprocess.index("def binning"))
    header = "import numpy as np\nimport torch\nfrom typing import Union\n"
    exec(
        compile(header + preprocess[start : end if end > 0 else None], "preprocess.py", "exec"),
        namespace,
    )
    collator = (reference / "scgpt" / "data_collator.py").read_text()
    collator = collator.replace("from .preprocess import binning", "")
    exec(compile(collator, "data_collator.py", "exec"), namespace)
    return namespace["DataCollator"](
        do_padding=True,
        pad_token_id=embedder.tokenizer.vocab["<pad>"],
        pad_value=embedder.tokenizer.pad_value,
        do_mlm=False,
        do_binning=True,
        max_length=embedder.tokenizer.max_length,
        sampling=True,
        keep_first_n_tokens=1,
    )


def reference_rate(reference: Path, embedder: ScGPTEmbedder, counts, genes) -> float:
    collator = reference_collator(reference, embedder)
    columns, tokens = embedder.tokenizer.gene_map(genes)
    cls = embedder.tokenizer.vocab["<cls>"]
    started = time.perf_counter()
    dense = counts[:, columns].toarray().astype(np.float32)
    for start in range(0, dense.shape[0], 64):
        examples = []
        for row in dense[start : start + 64]:
            nonzero = np.nonzero(row)[0]
            examples.append(
                {
                    "genes": torch.from_numpy(np.insert(tokens[nonzero], 0, cls)).long(),
                    "expressions": torch.from_numpy(
                        np.insert(row[nonzero], 0, embedder.tokenizer.pad_value)
                    ).float(),
                }
            )
        collator(examples)
    return counts.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", default=os.environ.get("SCGPT_REFERENCE"))
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--embed-cells", type=int, default=100)
    args = parser.parse_args()
    logging.getLogger("scgpt-reference").setLevel(logging.ERROR)
    table = read_matrix_file(CELLS)
    counts, genes = table.counts[: args.cells], table.genes
    with tempfile.TemporaryDirectory() as scratch:
        embedder = ScGPTEmbedder.load(write_scgpt_checkpoint(Path(scratch), CENSUS))
        batch, ours = time_tokenise(embedder, counts, genes)
        reference = Path(args.reference) if args.reference else None
        if reference is not None and (reference / "scgpt" / "data_collator.py").is_file():
            rate = reference_rate(reference, embedder, counts, genes)
            print_versus("tokenise", "reference DataCollator", rate, ours)
        else:
            print_skipped("tokenise", "SCGPT_REFERENCE")
        subset = embedder.tokenize(counts[-args.embed_cells :], genes)
        rate = time_embed(embedder, subset, args.embed_cells)
        print(
            f"embed, 2 layers x 32 wide on CPU ({torch.get_num_threads()} threads): "
            f"{rate:,.0f} cells/s at {subset.lengths.mean():.0f} tokens/cell; "
            f"all {len(batch.lengths)} cells average {batch.lengths.mean():.0f} tokens"
        )


if __name__ == "__main__":
    main()
