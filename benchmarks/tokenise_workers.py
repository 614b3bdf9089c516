"""Threads or processes for tokenising ahead of the model: the measurement behind the choice.

Run as `python -m benchmarks.tokenise_workers [--cells 3000] [--models scgpt,tgpt]`.
Both ways run the same pipeline (`run_chunks`: prepare ahead, embed here, write
behind) over the same stored PC9 cells with the same loaded model; they differ only
in where `prepare` (read + tokenise) runs: a thread of this process, or a worker
process that rebuilt the model's tokeniser once and sends each tokenised chunk back.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.pc9 import CELLS, SHARED, pc9_store
from scdrugmap.embed.chunk_pipeline import chunk_source, run_chunks
from scdrugmap.embed.registry import get_model
from tests.model_checkpoints import SMALL_CHECKPOINTS

CHUNK = 500
_worker_source = None


def _start_worker(model: str, checkpoint: str, options: dict, dataset: str, known) -> None:
    global _worker_source
    from scdrugmap.store.dataset_zarr import DatasetReader

    embedder = get_model(model).load_class().load(Path(checkpoint), device="cpu", **options)
    _worker_source = chunk_source(embedder, DatasetReader(Path(dataset)), known)


def _prepare_in_worker(start: int, stop: int):
    return _worker_source.prepare(start, stop)


class ProcessPrepared:
    """`prepare` in a worker process; `finish` here, with this process's model."""

    def __init__(self, pool: ProcessPoolExecutor, local) -> None:
        self.pool, self.local = pool, local

    def prepare(self, start: int, stop: int):
        future: Future = self.pool.submit(_prepare_in_worker, start, stop)
        return future.result()

    def finish(self, prepared):
        return self.local.finish(prepared)


def main() -> None:
    from scdrugmap.data.readers import read_matrix_file

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--models", default="scgpt,tgpt,geneformer")
    args = parser.parse_args()
    table = read_matrix_file(CELLS)
    print(
        f"{args.cells} PC9 cells in {CHUNK}-cell chunks, CPU; read + tokenise ahead in a:",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        reader = pc9_store(Path(scratch), table, args.cells).reader("pc9")
        starts = range(0, args.cells, CHUNK)
        chunks = [(i, s, min(s + CHUNK, args.cells)) for i, s in enumerate(starts)]
        for model in args.models.split(","):
            checkpoint, options = SMALL_CHECKPOINTS[model](Path(scratch) / model, SHARED, table)
            embedder = get_model(model).load_class().load(checkpoint, device="cpu", **options)
            vocabulary = embedder.gene_vocabulary()
            known = np.array([g in vocabulary for g in reader.gene_ids])
            local = chunk_source(embedder, reader, known)
            local.prepare(0, 1)
            started = time.perf_counter()
            run_chunks(chunks, local, lambda *_: None, lambda n: None)
            threads = args.cells / (time.perf_counter() - started)
            with ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),  # fork would copy torch's threads
                initializer=_start_worker,
                initargs=(model, str(checkpoint), options, str(reader.path), known),
            ) as pool:
                remote = ProcessPrepared(pool, local)
                remote.prepare(0, 1)
                started = time.perf_counter()
                run_chunks(chunks, remote, lambda *_: None, lambda n: None)
                processes = args.cells / (time.perf_counter() - started)
            print(
                f"  {model:<12} thread {threads:8,.0f} cells/s   process {processes:8,.0f} "
                f"cells/s   ({threads / processes:.2f}x for threads)",
                flush=True,
            )


if __name__ == "__main__":
    main()
