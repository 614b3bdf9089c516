"""Train: fit a classifier on all selected cells and keep it in the store as a predictor."""

from __future__ import annotations

from scdrugmap.predict.train import train_predictor as fit_and_keep
from scdrugmap.store.storage import Storage


def train_predictor(
    store: Storage,
    embedding: str,
    classifier: str,
    name: str,
    *,
    where: str | None = None,
    seed: int = 0,
    replace: bool = False,
) -> dict:
    """Fit a classifier on all selected cells of an embedding and keep it as a predictor."""
    store.require()
    return fit_and_keep(store, embedding, classifier, name, where=where, seed=seed, replace=replace)
