"""Evaluate: cross-validate a classifier on a stored embedding; results go to the catalog."""

from __future__ import annotations

from scdrugmap.classify.evaluate import evaluate as cross_validate
from scdrugmap.store.storage import Storage


def evaluate(
    store: Storage,
    embedding: str,
    classifier: str,
    split: str,
    *,
    where: str | None = None,
    n_folds: int = 5,
    shots: int = 5,
    seed: int = 0,
    show_progress: bool = False,
):
    """Cross-validate a classifier on a stored embedding; results go to the catalog."""
    store.require()
    return cross_validate(
        store,
        embedding,
        classifier,
        split,
        where=where,
        n_folds=n_folds,
        shots=shots,
        seed=seed,
        show_progress=show_progress,
    )
