"""Embed: build (or load, or fit) an embedder by name and embed data sets into the store."""

from __future__ import annotations

import os
from collections.abc import Sequence

from scdrugmap.embed.build import build_embedder, model_recipe
from scdrugmap.embed.into_store import embed_into_store
from scdrugmap.errors import InputError
from scdrugmap.store.storage import Storage, check_key

EXECUTORS = ("local", "ray")


def embed(
    store: Storage,
    model: str,
    datasets: str | Sequence[str] | None = "all",
    *,
    key: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    fit_on: str | Sequence[str] | None = None,
    chunk_size: int = 10_000,
    dtype: str = "float32",
    replace: bool = False,
    show_progress: bool = False,
    device: str = "auto",
    min_coverage: float | None = None,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    **model_options,
):
    """Embed data sets with a model into `embeddings/<key>/`; resumes unfinished runs.

    `executor="ray"` spreads the chunks over Ray actors (`address`: a cluster to
    join; `workers`: how many, default one per GPU or CPU)."""
    if executor not in EXECUTORS:
        raise InputError(f"unknown --executor {executor!r}; choose {' or '.join(EXECUTORS)}")
    key = check_key(key or model)
    dataset_ids = store.resolve_datasets(datasets)
    if replace:
        store.drop_embedding(key)
    # With Ray the driver's model only checks the data sets (vocabulary, settings);
    # the actors embed, each on its own device, so the driver keeps it on the CPU.
    embedder = build_embedder(
        store,
        model,
        key,
        dataset_ids,
        checkpoint,
        fit_on,
        "cpu" if executor == "ray" else device,
        model_options,
        show_progress=show_progress,
    )
    recipe = model_recipe(store, model, key, embedder, device) if executor == "ray" else None
    return embed_into_store(
        store,
        embedder,
        key,
        dataset_ids,
        chunk_size=chunk_size,
        dtype=dtype,
        min_coverage=min_coverage,
        show_progress=show_progress,
        recipe=recipe,
        address=address,
        workers=workers,
    )
