"""A zero-shot run: select cells, ask the chat model in batches, record everything.

The run writes what an evaluation run writes (`runs`, `results`,
`predictions`, one transaction, so a failed run leaves nothing behind) with
kind 'zeroshot', embedding 'text:<model>', classifier 'chat-zeroshot', split
'zero-shot' and one fold holding every selected cell (no cell is trained on).

Cells the model did not classify, after `retries` re-asks of just those
cells, are not dropped: each goes to `zeroshot_failures` with its reason and
the run's note counts them. Metrics are computed on the classified labelled
cells; two extra metrics show what that hides:

- `coverage`: classified cells / selected cells.
- `accuracy_unclassified_as_wrong`: correct calls / selected labelled cells.

The model gives hard calls, so prob_sensitive is 1.0 or 0.0 and AUROC/AUPRC
are those of hard calls (the note says so).

Batches hold cells of one data set (one drug and cancer type per prompt), in
an order shuffled by the seed, so a batch mixes samples and labels rather
than presenting a run of same-sample neighbours the model could key on.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scdrugmap.classify.evaluate import RunIdentity, RunRecord, _metric_rows, finish_run
from scdrugmap.classify.splits import Fold, SplitPlan
from scdrugmap.errors import InputError
from scdrugmap.progress import progress_bar
from scdrugmap.provenance import utc_now
from scdrugmap.zeroshot.client import ChatClient
from scdrugmap.zeroshot.parse import parse_answer
from scdrugmap.zeroshot.prompt import PROMPT_VERSION, build_messages, top_gene_indices

_READ_ROWS = 4096


@dataclass(frozen=True)
class ZeroShotSettings:
    batch_size: int = 20
    top_genes: int = 50
    retries: int = 2
    max_cells: int | None = None
    seed: int = 0
    include_unlabelled: bool = False

    def check(self) -> None:
        for name, low in (("batch_size", 1), ("top_genes", 1), ("retries", 0)):
            if getattr(self, name) < low:
                raise InputError(f"--{name.replace('_', '-')} must be at least {low}")
        if self.max_cells is not None and self.max_cells < 1:
            raise InputError("--max-cells must be at least 1")


@dataclass
class ZeroShotRecord(RunRecord):
    n_unclassified: int = 0


@dataclass
class _Batch:
    dataset_id: str
    positions: np.ndarray  # rows of the selection
    genes: list[list[str]]


def cell_genes(reader, cell_indices: np.ndarray, n: int) -> list[list[str]]:
    """Top-`n` gene identifiers of each cell in `cell_indices` (any order), read in row blocks."""
    names = np.asarray(reader.gene_ids, dtype=object)
    order = np.argsort(cell_indices, kind="stable")
    wanted = cell_indices[order]
    out: list[list[str]] = [[] for _ in range(len(cell_indices))]
    start = 0
    while start < len(wanted):
        first = int(wanted[start])
        stop = int(np.searchsorted(wanted, first + _READ_ROWS))
        block = reader.read_rows(first, int(wanted[stop - 1]) + 1)
        tops = top_gene_indices(block[wanted[start:stop] - first], n)
        for slot, top in zip(order[start:stop], tops):
            out[slot] = names[top].tolist()
        start = stop
    return out


def _select(store, where: str | None, datasets, settings: ZeroShotSettings) -> pd.DataFrame:
    dataset_ids = store.resolve_datasets(datasets)
    cells = store.cells(
        where,
        labelled=not settings.include_unlabelled,
        columns=("dataset_id", "cell_index", "label"),
    )
    cells = cells.loc[cells["dataset_id"].isin(dataset_ids)].reset_index(drop=True)
    if cells.empty:
        kind = "cells" if settings.include_unlabelled else "labelled cells"
        raise InputError(
            f"the selection holds no {kind}"
            + (f" (--where {where!r})" if where else "")
            + "; check it with `scdrugmap sql`"
        )
    if settings.max_cells is not None and len(cells) > settings.max_cells:
        rng = np.random.default_rng(settings.seed)
        keep = np.sort(rng.choice(len(cells), settings.max_cells, replace=False))
        cells = cells.iloc[keep].reset_index(drop=True)
    return cells


def _batches(store, cells: pd.DataFrame, settings: ZeroShotSettings) -> list[_Batch]:
    rng = np.random.default_rng(settings.seed)
    batches = []
    for dataset_id, group in cells.groupby("dataset_id", sort=True):
        positions = group.index.to_numpy()[rng.permutation(len(group))]
        indices = cells["cell_index"].to_numpy(dtype=np.int64)[positions]
        genes = cell_genes(store.reader(str(dataset_id)), indices, settings.top_genes)
        for lo in range(0, len(positions), settings.batch_size):
            hi = lo + settings.batch_size
            batches.append(_Batch(str(dataset_id), positions[lo:hi], genes[lo:hi]))
    return batches


def _ask(
    client: ChatClient, batch: _Batch, info: dict, settings: ZeroShotSettings
) -> tuple[dict[int, int], dict[int, str], int]:
    """Calls and failure reasons by position in the batch, and the requests it took."""
    ids = [f"c{i + 1}" for i in range(len(batch.positions))]
    slot = {cell_id: i for i, cell_id in enumerate(ids)}
    pending = ids
    calls: dict[int, int] = {}
    failures: dict[str, str] = {}
    attempts = 0
    while pending and attempts <= settings.retries:
        attempts += 1
        messages = build_messages(
            pending,
            [batch.genes[slot[c]] for c in pending],
            drug=info.get("drug"),
            cancer_type=info.get("cancer_type"),
            tissue=info.get("tissue"),
            n_genes=settings.top_genes,
        )
        parsed = parse_answer(client.complete(messages), pending)
        calls.update({slot[c]: call for c, call in parsed.calls.items()})
        failures = parsed.failures
        pending = [c for c in pending if c in failures]
    return calls, {slot[c]: failures[c] for c in pending}, attempts


def _extra_rows(
    run_id: str, scope: str, dataset_id: str | None, labels: Sequence, calls: np.ndarray
) -> list[dict]:
    """coverage and accuracy_unclassified_as_wrong over every selected cell of the scope."""
    labels = np.asarray(labels, dtype=object)
    classified = calls >= 0
    labelled = labels != "unknown"
    truth = (labels == "sensitive").astype(np.int8)
    base = {
        "run_id": run_id,
        "fold": 0,
        "fold_name": "zero-shot",
        "scope": scope,
        "dataset_id": dataset_id,
        "n_train": 0,
    }
    rows = [
        {
            **base,
            "metric": "coverage",
            "value": float(classified.mean()),
            "reason": None,
            "n_test": len(calls),
        }
    ]
    n_labelled = int(labelled.sum())
    correct = int(np.sum(classified & labelled & (calls == truth)))
    rows.append(
        {
            **base,
            "metric": "accuracy_unclassified_as_wrong",
            "value": correct / n_labelled if n_labelled else math.nan,
            "reason": None if n_labelled else "no labelled cells: accuracy undefined",
            "n_test": n_labelled,
        }
    )
    return rows


def run_zeroshot(
    store,
    client: ChatClient,
    *,
    where: str | None = None,
    datasets: str | Sequence[str] | None = "all",
    settings: ZeroShotSettings = ZeroShotSettings(),
    show_progress: bool = False,
) -> ZeroShotRecord:
    """Classify the selected cells with the chat model; the run goes into the store."""
    started = time.perf_counter()
    settings.check()
    cells = _select(store, where, datasets, settings)
    batches = _batches(store, cells, settings)
    info = {d: store.dataset(d) for d in cells["dataset_id"].unique()}
    n = len(cells)
    calls = np.full(n, -1, dtype=np.int8)
    reasons = np.full(n, None, dtype=object)
    attempts = np.zeros(n, dtype=np.int64)
    with progress_bar(show_progress, n, f"zero-shot {client.model}") as advance:
        for batch in batches:
            answered, failed, tries = _ask(client, batch, info[batch.dataset_id], settings)
            for i, call in answered.items():
                calls[batch.positions[i]] = call
            for i, reason in failed.items():
                reasons[batch.positions[i]] = reason
            attempts[batch.positions] = tries
            advance(len(batch.positions))

    run_id = f"run-{utc_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    labels = cells["label"].to_numpy(dtype=object)
    dataset_col = cells["dataset_id"].to_numpy(dtype=str)
    classified = calls >= 0
    scored = classified & (labels != "unknown")
    y = (labels == "sensitive").astype(np.int8)
    fold = Fold(0, "zero-shot", np.empty(0, dtype=np.int64), np.arange(n))
    results = _metric_rows(run_id, fold, "pooled", None, y[scored], calls[scored].astype(float))
    results += _extra_rows(run_id, "pooled", None, labels, calls)
    for dataset_id in np.unique(dataset_col):
        mask = dataset_col == dataset_id
        both = mask & scored
        results += _metric_rows(
            run_id, fold, "dataset", str(dataset_id), y[both], calls[both].astype(float)
        )
        results += _extra_rows(run_id, "dataset", str(dataset_id), labels[mask], calls[mask])

    predictions = pd.DataFrame(
        {
            "run_id": run_id,
            "fold": 0,
            "dataset_id": dataset_col[classified],
            "cell_index": cells["cell_index"].to_numpy(dtype=np.int64)[classified],
            "label": pd.array(
                np.where(labels == "unknown", None, y.astype(object))[classified], dtype="Int8"
            ),
            "prob_sensitive": calls[classified].astype(np.float32),
            "predicted": calls[classified],
        }
    )
    unclassified = ~classified
    failures = pd.DataFrame(
        {
            "run_id": run_id,
            "dataset_id": dataset_col[unclassified],
            "cell_index": cells["cell_index"].to_numpy(dtype=np.int64)[unclassified],
            "label": labels[unclassified].astype(str),
            "attempts": attempts[unclassified],
            "reason": reasons[unclassified].astype(str),
        }
    )
    n_failed = int(unclassified.sum())
    note = (
        f"zero-shot chat ({client.model}): {n - n_failed} of {n} cells classified, "
        f"{n_failed} unclassified after up to {settings.retries} retries "
        "(listed in zeroshot_failures); metrics other than coverage and "
        "accuracy_unclassified_as_wrong use classified cells only; AUROC and AUPRC come "
        "from hard calls (prob_sensitive 1 or 0)"
    )
    plan = SplitPlan("zero-shot", [fold], "none", note, {"selection": where, "seed": settings.seed})
    params = {
        "url": client.shown_endpoint,
        "model": client.model,
        "temperature": client.temperature,
        "timeout": client.timeout,
        "prompt_version": PROMPT_VERSION,
        "datasets": sorted(info),
        "batch_size": settings.batch_size,
        "top_genes": settings.top_genes,
        "retries": settings.retries,
        "max_cells": settings.max_cells,
        "include_unlabelled": settings.include_unlabelled,
    }
    identity = RunIdentity(
        run_id,
        "zeroshot",
        f"text:{client.model}",
        "chat-zeroshot",
        "zero-shot",
        where,
        settings.seed,
        params,
    )
    record = finish_run(
        store,
        identity,
        plan,
        cells,
        time.perf_counter() - started,
        results,
        [predictions],
        split_note="one fold: every selected cell is a test cell; nothing is trained",
        extra={"zeroshot_failures": failures},
    )
    return ZeroShotRecord(**vars(record), n_unclassified=n_failed)
