"""Embedding a store's data sets with an embedder already built, into `embeddings/<key>/`."""

from __future__ import annotations

from collections.abc import Sequence

from scdrugmap.embed.runner import EmbedTarget, plan_embedding, run_embedding
from scdrugmap.store.storage import check_key


def embed_into_store(
    store,
    embedder,
    key: str,
    dataset_ids: Sequence[str],
    *,
    chunk_size: int = 10_000,
    dtype: str = "float32",
    min_coverage: float | None = None,
    show_progress: bool = False,
    recipe=None,
    address: str | None = None,
    workers: int | None = None,
):
    """Embed data sets with an embedder already built (a fine-tuned one, say); with a
    `recipe` (how workers rebuild it), on Ray actors."""
    key = check_key(key)
    info = {d: store.dataset(d) for d in dataset_ids}
    targets = [
        EmbedTarget(
            d,
            store.reader(d),
            info[d]["value_type"],
            store.embedding_path(key, d),
            info[d]["gene_id_type"],
        )
        for d in dataset_ids
    ]
    store.embedding_path(key, dataset_ids[0]).parent.mkdir(parents=True, exist_ok=True)
    plan = plan_embedding(
        embedder,
        key,
        targets,
        store.catalog_path,
        chunk_size=chunk_size,
        dtype=dtype,
        min_coverage=min_coverage,
    )
    if recipe is None:
        return run_embedding(plan, embedder, store.catalog_path, show_progress)
    from scdrugmap.embed.ray_executor import run_embedding_ray

    return run_embedding_ray(
        plan,
        recipe,
        store.catalog_path,
        address=address,
        workers=workers,
        show_progress=show_progress,
    )
