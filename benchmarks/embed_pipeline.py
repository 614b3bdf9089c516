"""Embedding throughput and peak memory per model: our runner against a plain reference-style
loop, on the same small random checkpoint and the same real PC9 cells, in one run.

Run as `python -m benchmarks.embed_pipeline [--cells 2000] [--models scgpt,tgpt]
[--device cuda]`. Ours is `Store.embed`: reading and tokenising in a background
thread, batches bucketed by length within a token budget, a background writer. The
reference-style loop is what the published scripts do: read a chunk, tokenise it,
embed fixed batches of 64 cells in file order (no bucketing), write synchronously.
Each (model, way) runs in its own process on a store and checkpoint the parent built
once, so its peak RSS (its resident high-water mark) is the embedding's, not reading
PC9's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.pc9 import CELLS, SHARED, pc9_store
from benchmarks.timing import own_peak_resident_mib
from tests.model_checkpoints import SMALL_CHECKPOINTS

REFERENCE_BATCH = 64
CHUNK = 1000


def embed_ours(store, embedder, key: str, chunk: int = CHUNK) -> float:
    """Cells/s of `Store.embed` with a loaded model, its per-run work (vocabulary coverage
    check, catalog records) included."""
    n_cells = store.reader("pc9").n_cells
    started = time.perf_counter()
    store.embed_with(embedder, key, ["pc9"], chunk_size=chunk, min_coverage=0)
    return n_cells / (time.perf_counter() - started)


def embed_reference_style(store, embedder, target: Path, chunk: int = CHUNK) -> float:
    """Cells/s of the published scripts' loop: read a chunk, tokenise it, embed fixed
    batches of `REFERENCE_BATCH` cells in file order, write synchronously to `target`."""
    import torch

    from scdrugmap.store.embedding_array import EmbeddingArray

    reader = store.reader("pc9")
    started = time.perf_counter()
    array = EmbeddingArray.create(
        target,
        n_cells=reader.n_cells,
        dim=int(embedder.dim),
        chunk_size=chunk,
        dtype="float32",
        attrs={},
    )
    for index, (start, stop, counts) in enumerate(reader.iter_chunks(chunk)):
        batch = embedder.tokenize(counts, reader.gene_ids)
        rows = []
        with torch.inference_mode():
            for first in range(0, stop - start, REFERENCE_BATCH):
                cells = np.arange(first, min(first + REFERENCE_BATCH, stop - start))
                rows.append(embedder.encode(batch, cells).float().cpu().numpy())
        array.write_chunk(index, np.vstack(rows), np.ones(stop - start, dtype=np.float32))
    return reader.n_cells / (time.perf_counter() - started)


def run_one(
    model: str, way: str, store_path: Path, checkpoint: Path, options: dict, device: str
) -> float:
    """Cells/s of one way of embedding the stored data set with a freshly loaded model."""
    from scdrugmap import Store
    from scdrugmap.embed.registry import get_model

    store = Store(store_path)
    embedder = get_model(model).load_class().load(checkpoint, device=device, **options)
    if way == "ours":
        return embed_ours(store, embedder, f"ours-{model}")
    return embed_reference_style(store, embedder, store_path.parent / f"plain-{model}.zarr")


def measured(
    model: str, way: str, store: Path, checkpoint: Path, options: dict, device: str
) -> tuple[float, float]:
    """(cells/s, peak RSS MiB) of a fresh process."""
    command = [sys.executable, "-m", "benchmarks.embed_pipeline", "--one", f"{model}:{way}"]
    command += ["--store", str(store), "--checkpoint", str(checkpoint)]
    command += ["--options", json.dumps(options, default=str), "--device", device]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{model} {way}: {done.stderr.strip().splitlines()[-1]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return row["cells_per_second"], row["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--models", default=",".join(sorted(SMALL_CHECKPOINTS)))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, way = args.one.split(":")
        options = json.loads(args.options)
        rate = run_one(model, way, args.store, args.checkpoint, options, args.device)
        print(json.dumps({"cells_per_second": rate, "peak_mib": own_peak_resident_mib()}))
        return
    from scdrugmap.data.readers import read_matrix_file

    print(
        f"{args.cells} PC9 cells, small random checkpoints, {args.device}; "
        f"reference-style: batches of {REFERENCE_BATCH} in file order, synchronous writes"
    )
    table = read_matrix_file(CELLS)
    with tempfile.TemporaryDirectory() as scratch:
        store = pc9_store(Path(scratch), table, args.cells)
        for model in args.models.split(","):
            checkpoint, options = SMALL_CHECKPOINTS[model](Path(scratch) / model, SHARED, table)
            try:
                ours, ours_rss = measured(
                    model, "ours", store.path, checkpoint, options, args.device
                )
                plain, plain_rss = measured(
                    model, "plain", store.path, checkpoint, options, args.device
                )
            except RuntimeError as error:
                print(f"  {model}: failed ({error})")
                continue
            print(
                f"  {model:<12} ours {ours:8,.0f} cells/s ({ours_rss:5,.0f} MiB)   "
                f"reference-style {plain:8,.0f} cells/s ({plain_rss:5,.0f} MiB)   "
                f"{ours / plain:4.1f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
