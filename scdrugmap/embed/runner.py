"""Streaming, resumable embedding of stored data sets into the store.

Each data set is read and embedded one chunk of cells at a time, so memory
depends on the chunk size and never on the data set's size; reading,
embedding and writing overlap (`chunk_pipeline.py`). A chunk's rows are
written before its `done` flag; a rerun with the same settings skips done
chunks and redoes the rest, giving the same array as an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scdrugmap.embed.cell_filters import Screened, screen
from scdrugmap.embed.chunk_pipeline import chunk_source, coverage, run_chunks
from scdrugmap.embed.protocol import Embedder
from scdrugmap.errors import InputError, StoreError
from scdrugmap.progress import progress_bar
from scdrugmap.provenance import canonical_json, package_versions, settings_hash, utc_now
from scdrugmap.store.catalog import connect
from scdrugmap.store.dataset_zarr import DatasetReader
from scdrugmap.store.embedding_array import EmbeddingArray
from scdrugmap.store.staging import remove_stale, staging_path

DTYPES = ("float32", "float16")


NO_GENES = "no expressed gene"
NO_KNOWN_GENES = "no expressed gene in the model's vocabulary"
COVERAGE_SAMPLE = 2000
DEFAULT_MIN_COVERAGE = 0.5


@dataclass
class EmbedTarget:
    dataset_id: str
    reader: DatasetReader
    value_type: str
    path: Path
    gene_id_type: str | None = None


@dataclass
class EmbedSummary:
    key: str
    model: str
    datasets: list[str] = field(default_factory=list)
    cells_embedded: int = 0
    chunks_written: int = 0
    chunks_resumed: int = 0
    seconds: float = 0.0
    failures: int = 0
    filtered: int = 0
    filter_reason: str = ""
    device: str = "cpu"

    @property
    def cells_per_second(self) -> float:
        return self.cells_embedded / self.seconds if self.seconds > 0 else float("nan")


def describe_device(embedder: Embedder) -> str:
    """Where the model runs, said plainly (`--device auto` must say what it picked)."""
    device = getattr(embedder, "device", None)
    if device is None:
        return "cpu (numpy)"
    if getattr(device, "type", "") == "cuda":
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _check_compatible(embedder: Embedder, target: EmbedTarget) -> None:
    if embedder.requires_counts and target.value_type != "counts":
        raise InputError(
            f"data set {target.dataset_id!r} holds normalised values; {embedder.name} needs raw "
            "counts: ingest the raw counts, or use the pca/hvg baselines"
        )
    wanted = getattr(embedder, "value_type", None)
    if wanted is not None and wanted != target.value_type:
        raise InputError(
            f"data set {target.dataset_id!r} holds {target.value_type} values but this "
            f"{embedder.name} fit was made on {wanted} values: embed it under another --key"
        )


class LowCoverageError(InputError):
    """A data set shares too few genes with the model; `finding` says how few, so a caller
    with its own remedy (prediction has no --min-coverage) can word the error itself."""

    def __init__(self, message: str, finding: str) -> None:
        super().__init__(message)
        self.finding = finding


def _check_coverage(
    embedder: Embedder, target: EmbedTarget, known: np.ndarray, min_coverage: float | None
) -> None:
    """Refuse a data set the model barely knows, before anything is written.

    Judged on the first cells (a sample is enough to catch a wrong identifier
    type, the usual cause), so the check costs one small read.
    """
    if min_coverage is None:
        min_coverage = getattr(embedder, "min_coverage", DEFAULT_MIN_COVERAGE)
    if min_coverage <= 0 or target.reader.n_cells == 0:
        return
    sample = target.reader.read_rows(0, min(COVERAGE_SAMPLE, target.reader.n_cells))
    mean = float(coverage(sample, known).mean())
    if mean < min_coverage:
        hint = getattr(embedder, "gene_id_hint", f"{embedder.name} does not know these genes")
        finding = (
            f"only {mean:.0%} of expressed genes are in the {embedder.name} vocabulary (data "
            f"uses {target.gene_id_type or 'unknown'} identifiers; {hint})"
        )
        raise LowCoverageError(
            f"data set {target.dataset_id!r}: {finding}; pass --min-coverage 0 to embed anyway",
            finding,
        )


def _known_genes(genes: Sequence[str], vocabulary: Container[str]) -> np.ndarray:
    return np.fromiter((g in vocabulary for g in genes), dtype=bool, count=len(genes))


def _open_or_create(
    embedder: Embedder, key: str, target: EmbedTarget, chunk_size: int, dtype: str
) -> EmbeddingArray:
    provenance = embedder.provenance()
    digest = settings_hash(embedder.name, provenance)
    if target.path.exists():
        array = EmbeddingArray(target.path)
        stored = array.attrs.get("settings_hash")
        if stored == digest and array.attrs.get("dtype") == dtype:
            return array
        raise StoreError(
            f"embedding {key!r} of {target.dataset_id!r} exists with other settings "
            f"({stored} != {digest}); choose another --key or pass --replace"
        )
    attrs = {
        "key": key,
        "model": embedder.name,
        "dataset_id": target.dataset_id,
        "dim": int(embedder.dim),
        "dtype": dtype,
        "weights_sha256": provenance.get("weights_sha256"),
        "settings": provenance.get("settings", {}),
        "settings_hash": digest,
        "versions": package_versions(),
        "created_at": utc_now().isoformat(),
    }
    recipe = getattr(embedder, "load_recipe", None)
    if recipe is not None:
        attrs["load_recipe"] = recipe
    remove_stale(target.path.parent, f".creating-{target.path.name}")
    staging = staging_path(target.path.parent, f".creating-{target.path.name}", "")
    EmbeddingArray.create(
        staging,
        n_cells=target.reader.n_cells,
        dim=int(embedder.dim),
        chunk_size=chunk_size,
        dtype=dtype,
        attrs=attrs,
    )
    try:
        os.replace(staging, target.path)
    except OSError:
        # Another run of the same key created it first: write into theirs (chunks are
        # idempotent), after checking it was made with the same settings.
        shutil.rmtree(staging, ignore_errors=True)
        if not target.path.exists():
            raise
        return _open_or_create(embedder, key, target, chunk_size, dtype)
    return EmbeddingArray(target.path)


def _record(
    catalog: Path, array: EmbeddingArray, dataset_id: str, screened: Screened | None
) -> tuple[int, int]:
    """Mirror an array's state into the catalog (idempotent upsert); once it is complete,
    its failures too. Returns the numbers of failed and of filtered cells (0 while
    incomplete)."""
    attrs = array.attrs
    done = array.done_chunks()
    complete = bool(done.all())
    cell_coverage = array.read_coverage() if complete else None
    row = pd.DataFrame(
        [
            {
                "key": attrs["key"],
                "dataset_id": dataset_id,
                "model": attrs["model"],
                "dim": attrs["dim"],
                "dtype": attrs["dtype"],
                "n_cells": array.shape[0],
                "chunk_size": array.chunk_size,
                "n_chunks": array.n_chunks,
                "chunks_done": int(done.sum()),
                "complete": complete,
                "weights_sha256": attrs.get("weights_sha256"),
                "settings_hash": attrs["settings_hash"],
                "settings": canonical_json(attrs.get("settings", {})),
                "versions": canonical_json(attrs.get("versions", {})),
                "mean_coverage": float(np.mean(cell_coverage)) if complete else None,
                "created_at": pd.Timestamp(attrs["created_at"]),
                "completed_at": utc_now() if complete else None,
            }
        ]
    )
    # One transaction: an embedding counts as complete only with its failures recorded,
    # so a run killed in between is seen, and finished, as incomplete.
    with connect(catalog, write=True) as con:
        con.register("incoming", row)
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "DELETE FROM embeddings WHERE key = ? AND dataset_id = ?", [attrs["key"], dataset_id]
        )
        con.execute("INSERT INTO embeddings BY NAME SELECT * FROM incoming")
        counts = (
            _record_failures(con, attrs["key"], dataset_id, cell_coverage, screened)
            if complete
            else (0, 0)
        )
        con.execute("COMMIT")
    return counts


def _record_failures(
    con, key: str, dataset_id: str, cell_coverage: np.ndarray, screened: Screened | None
) -> tuple[int, int]:
    """Cells the model saw nothing of (no expressed gene it knows), with the reason, in the
    `failures` table: their rows hold no information about the cell, and a user must be
    able to find and leave them out. Then the cells the authors' data-set filter leaves
    out (`embed/cell_filters.py`), with the filter as the reason, unless already listed."""
    unseen = np.flatnonzero(cell_coverage == 0)
    failed = pd.DataFrame({"cell_index": unseen})
    con.execute("DELETE FROM failures WHERE key = ? AND dataset_id = ?", [key, dataset_id])
    con.register("failed", failed)
    con.execute(
        "INSERT INTO failures SELECT ?, ?, f.cell_index, "
        "CASE WHEN c.n_genes = 0 THEN ? ELSE ? END "
        "FROM failed f LEFT JOIN cells c ON c.dataset_id = ? AND c.cell_index = f.cell_index",
        [key, dataset_id, NO_GENES, NO_KNOWN_GENES, dataset_id],
    )
    if screened is None:
        return len(failed), 0
    filtered = pd.DataFrame({"cell_index": np.setdiff1d(screened.dropped, unseen)})
    con.register("filtered", filtered)
    con.execute(
        "INSERT INTO failures SELECT ?, ?, cell_index, ? FROM filtered",
        [key, dataset_id, screened.reason],
    )
    return len(failed), len(filtered)


def _cells_in(array: EmbeddingArray, chunks: np.ndarray) -> int:
    return sum(array.chunk_bounds(int(c))[1] - array.chunk_bounds(int(c))[0] for c in chunks)


@dataclass
class EmbedPlan:
    """What a run must do, checked and set up before any cell is embedded: each target's
    array (created or reopened) and the chunks still to write."""

    summary: EmbedSummary
    known: dict[str, np.ndarray]
    screened: dict[str, Screened | None]
    todo: list[tuple[EmbedTarget, EmbeddingArray, np.ndarray]]
    started: float

    def gene_mask(self, target: EmbedTarget) -> np.ndarray | None:
        screened = self.screened[target.dataset_id]
        return None if screened is None else screened.gene_mask

    @property
    def total_cells(self) -> int:
        return sum(_cells_in(array, chunks) for _, array, chunks in self.todo)


def plan_embedding(
    embedder: Embedder,
    key: str,
    targets: Sequence[EmbedTarget],
    catalog: Path,
    *,
    chunk_size: int = 10_000,
    dtype: str = "float32",
    min_coverage: float | None = None,
) -> EmbedPlan:
    """Every target checked (value type, vocabulary coverage) before anything is written;
    then the arrays opened or created and recorded."""
    if dtype not in DTYPES:
        raise InputError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if chunk_size < 1:
        raise InputError(f"--chunk-size must be at least 1, not {chunk_size}")
    vocabulary = embedder.gene_vocabulary()
    known = {t.dataset_id: _known_genes(t.reader.gene_ids, vocabulary) for t in targets}
    for target in targets:
        _check_compatible(embedder, target)
        _check_coverage(embedder, target, known[target.dataset_id], min_coverage)
    summary = EmbedSummary(key=key, model=embedder.name, device=describe_device(embedder))
    started = time.perf_counter()
    cell_filter = getattr(embedder, "cell_filter", None)
    screened = {
        t.dataset_id: screen(cell_filter, t.reader, known[t.dataset_id]) if cell_filter else None
        for t in targets
    }
    arrays = [_open_or_create(embedder, key, t, chunk_size, dtype) for t in targets]
    for target, array in zip(targets, arrays):
        _record(catalog, array, target.dataset_id, screened[target.dataset_id])
    todo = [(t, a, np.flatnonzero(~a.done_chunks())) for t, a in zip(targets, arrays)]
    for target, array, chunks in todo:
        summary.datasets.append(target.dataset_id)
        summary.chunks_resumed += array.n_chunks - len(chunks)
    return EmbedPlan(summary, known, screened, todo, started)


def finish_target(plan: EmbedPlan, catalog: Path, target: EmbedTarget, array) -> None:
    """Mirror a target's array into the catalog (the driver's job alone); once complete,
    count its failed and filtered cells into the summary."""
    screened = plan.screened[target.dataset_id]
    failed, filtered = _record(catalog, array, target.dataset_id, screened)
    plan.summary.failures += failed
    plan.summary.filtered += filtered
    if screened is not None:
        plan.summary.filter_reason = screened.reason


def run_embedding(
    plan: EmbedPlan, embedder: Embedder, catalog: Path, show_progress: bool = False
) -> EmbedSummary:
    """Run a checked plan in this process, chunk after chunk, resuming finished chunks."""
    summary = plan.summary
    with progress_bar(
        show_progress, plan.total_cells, f"embedding with {embedder.name}", started=plan.started
    ) as advance:
        for target, array, chunks in plan.todo:
            source = chunk_source(
                embedder, target.reader, plan.known[target.dataset_id], plan.gene_mask(target)
            )
            bounds = [(int(c), *array.chunk_bounds(int(c))) for c in chunks]

            def written(n_cells: int) -> None:
                summary.cells_embedded += n_cells
                summary.chunks_written += 1
                advance(n_cells)

            run_chunks(bounds, source, array.write_chunk, written)
            finish_target(plan, catalog, target, array)
    summary.seconds = time.perf_counter() - plan.started
    return summary
