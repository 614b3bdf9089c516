"""Embedding over a Ray cluster: one actor per GPU (or per CPU worker where there is none).

The driver checks every data set, creates the arrays and alone writes the DuckDB
catalog; actors load the model once each and write the chunks they are handed
straight into the zarr arrays, at a store path every node reaches. A chunk's
rows are written before its `done` flag, and writing a chunk twice writes the
same rows, so when an actor dies Ray restarts it and retries its unfinished
chunks: no chunk is lost, and the array equals a single-process run's.

Ray is an optional extra (`pip install scdrugmap[ray]`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from scdrugmap.embed.chunk_pipeline import chunk_source
from scdrugmap.embed.registry import get_model
from scdrugmap.embed.runner import EmbedSummary, finish_target
from scdrugmap.errors import InputError
from scdrugmap.progress import progress_bar

ACTOR_RESTARTS = 3


@dataclass(frozen=True)
class ModelRecipe:
    """How an actor builds the embedder the driver checked: a model name, the directory it
    loads from (checkpoint, or a baseline's fit) and its options."""

    model: str
    path: str
    device: str = "cpu"
    options: dict = field(default_factory=dict)

    def build(self):
        loader = get_model(self.model).load_class().load
        return loader(Path(self.path), device=self.device, **self.options)


class EmbedWorker:
    """Loads the model once; embeds and writes the chunks it is handed."""

    def __init__(self, recipe: ModelRecipe) -> None:
        self.embedder = recipe.build()
        self._sources: dict[str, object] = {}

    def embed_chunk(
        self,
        dataset: str,
        array_path: str,
        genes: tuple[np.ndarray, np.ndarray | None],
        chunk: int,
        start: int,
        stop: int,
    ) -> int:
        """`genes`: the data set's known-gene flags and the filter's gene mask (or None)."""
        from scdrugmap.store.dataset_zarr import DatasetReader
        from scdrugmap.store.embedding_array import EmbeddingArray

        if dataset not in self._sources:
            reader = DatasetReader(Path(dataset))
            self._sources[dataset] = chunk_source(self.embedder, reader, *genes)
        source = self._sources[dataset]
        values, coverage = source.finish(source.prepare(start, stop))
        EmbeddingArray(Path(array_path)).write_chunk(chunk, values, coverage)
        return stop - start


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError(
            "--executor ray needs Ray: pip install 'scdrugmap[ray]' (or pip install ray)"
        ) from None
    return ray


def start_ray(address: str | None):
    """Join the cluster at `address` ('auto': the one this node belongs to), or start a
    local one; an already started session is used as it is."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    return ray


def _actors(ray, recipe: ModelRecipe, workers: int | None) -> list:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    wants_gpu = recipe.device != "cpu" and gpus > 0
    if recipe.device.startswith("cuda") and not wants_gpu:
        raise InputError(f"--device {recipe.device}: the Ray cluster has no GPU; use cpu")
    count = workers or (gpus if wants_gpu else max(1, int(resources.get("CPU", 1))))
    remote = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)(EmbedWorker)
    options = {"num_gpus": 1, "num_cpus": 1} if wants_gpu else {"num_cpus": 1}
    worker_recipe = replace(recipe, device="cuda" if wants_gpu else "cpu")
    return [remote.options(**options).remote(worker_recipe) for _ in range(count)]


def run_embedding_ray(
    plan,
    recipe: ModelRecipe,
    catalog: Path,
    *,
    address: str | None = None,
    workers: int | None = None,
    show_progress: bool = False,
) -> EmbedSummary:
    """Run a checked `EmbedPlan` on Ray actors; the driver records the finished arrays."""
    summary = plan.summary
    work = [
        (target, array, int(chunk), *array.chunk_bounds(int(chunk)))
        for target, array, chunks in plan.todo
        for chunk in chunks
    ]
    if work:
        ray = start_ray(address)
        actors = _actors(ray, recipe, workers)
        summary.device = f"ray ({len(actors)} workers, {recipe.device})"
        genes = {
            t.dataset_id: ray.put((plan.known[t.dataset_id], plan.gene_mask(t)))
            for t, _, _ in plan.todo
        }
        pending = [
            actors[i % len(actors)].embed_chunk.remote(
                str(target.reader.path), str(array.path), genes[target.dataset_id], *bounds
            )
            for i, (target, array, *bounds) in enumerate(work)
        ]
        with progress_bar(
            show_progress, plan.total_cells, f"embedding with {recipe.model}"
        ) as advance:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                n_cells = ray.get(done[0])
                summary.cells_embedded += n_cells
                summary.chunks_written += 1
                advance(n_cells)
        for actor in actors:
            ray.kill(actor)
    for target, array, _ in plan.todo:
        finish_target(plan, catalog, target, array)
    summary.seconds = time.perf_counter() - plan.started
    return summary
