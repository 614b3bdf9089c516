"""Embedding throughput and peak memory per model: our runner against a plain reference-style
loop, on the same small random checkpoint and the same real PC9 cells, in one run.

Run as `python -m benchmarks.embed_pipeline [--cells 2000] [--models scgpt,tgpt]
[--device cuda]`. Ours is `Store.embed`: reading and tokenising in a background
thread, batches bucketed by length within a token budget, a background writer. The
reference-style loop is what the published scripts do: read a chunk, tokenise it,
embed fixed batches of 64 cells in file order (no bucketing), write synchronously.
Each (model, way) runs in its own process; peak RSS is sampled every 10 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from tests.model_checkpoints import SMALL_CHECKPOINTS

SHARED = Path(__file__).parents[1].parent / "shared"
CELLS = SHARED / "data" / "pc9_erlotinib" / "Day11_control.txt.gz"
REFERENCE_BATCH = 64
CHUNK = 1000


def _setup(scratch: Path, model: str, n_cells: int):
    from scdrugmap.data.prepare import IngestOptions
    from scdrugmap.data.readers import read_matrix_file
    from scdrugmap.store.store import Store
    from tests.data_files import write_sample

    table = read_matrix_file(CELLS)
    checkpoint, options = SMALL_CHECKPOINTS[model](scratch / model, SHARED, table)
    store = Store(scratch / "store")
    sample = write_sample(scratch / "cells.tsv", table.counts[:n_cells], table.genes, "a")
    store.ingest([sample], IngestOptions("pc9", samples=["a"], labels=["sensitive"]))
    return store, checkpoint, options


def run_one(model: str, way: str, n_cells: int, device: str) -> float:
    """Cells/s of one way of embedding a stored data set with a loaded model; ours includes
    its per-run work (vocabulary coverage check, catalog records)."""
    import torch

    from scdrugmap.embed.registry import get_model
    from scdrugmap.store.embedding_array import EmbeddingArray

    with tempfile.TemporaryDirectory() as scratch:
        store, checkpoint, options = _setup(Path(scratch), model, n_cells)
        embedder = get_model(model).load_class().load(checkpoint, device=device, **options)
        started = time.perf_counter()
        if way == "ours":
            store.embed_with(embedder, "ours", ["pc9"], chunk_size=CHUNK, min_coverage=0)
            return n_cells / (time.perf_counter() - started)
        reader = store.reader("pc9")
        array = EmbeddingArray.create(
            Path(scratch) / "plain.zarr",
            n_cells=n_cells,
            dim=int(embedder.dim),
            chunk_size=CHUNK,
            dtype="float32",
            attrs={},
        )
        for chunk, (start, stop, counts) in enumerate(reader.iter_chunks(CHUNK)):
            batch = embedder.tokenize(counts, reader.gene_ids)
            rows = []
            with torch.inference_mode():
                for first in range(0, stop - start, REFERENCE_BATCH):
                    cells = np.arange(first, min(first + REFERENCE_BATCH, stop - start))
                    rows.append(embedder.encode(batch, cells).float().cpu().numpy())
            array.write_chunk(chunk, np.vstack(rows), np.ones(stop - start, dtype=np.float32))
        return n_cells / (time.perf_counter() - started)


def measured(model: str, way: str, n_cells: int, device: str) -> tuple[float, float]:
    """(cells/s, peak RSS MiB) of a fresh process."""
    command = [sys.executable, "-m", "benchmarks.embed_pipeline", "--one", f"{model}:{way}"]
    command += ["--cells", str(n_cells), "--device", device]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.01)
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{model} {way}: {err.strip().splitlines()[-1]}")
    return json.loads(out.strip().splitlines()[-1])["cells_per_second"], peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--models", default=",".join(sorted(SMALL_CHECKPOINTS)))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, way = args.one.split(":")
        rate = run_one(model, way, args.cells, args.device)
        print(json.dumps({"cells_per_second": rate}))
        return
    print(
        f"{args.cells} PC9 cells, small random checkpoints, {args.device}; "
        f"reference-style: batches of {REFERENCE_BATCH} in file order, synchronous writes"
    )
    for model in args.models.split(","):
        try:
            ours, ours_rss = measured(model, "ours", args.cells, args.device)
            plain, plain_rss = measured(model, "plain", args.cells, args.device)
        except RuntimeError as error:
            print(f"  {model}: failed ({error})")
            continue
        print(
            f"  {model:<12} ours {ours:8,.0f} cells/s ({ours_rss:5,.0f} MiB)   "
            f"reference-style {plain:8,.0f} cells/s ({plain_rss:5,.0f} MiB)   "
            f"{ours / plain:4.1f}x"
        )


if __name__ == "__main__":
    main()
