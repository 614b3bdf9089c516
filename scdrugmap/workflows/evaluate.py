"""Evaluate: cross-validate a classifier on a stored embedding; results go to the catalog."""

from __future__ import annotations

from scdrugmap.classify.evaluate import FoldFeatures
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
    control: str | None = None,
    fold_features: FoldFeatures | None = None,
    run_name: str | None = None,
    show_progress: bool = False,
):
    """Cross-validate a classifier on a stored embedding; results go to the catalog.

    `control="shuffled"`: the same folds with labels permuted within each data set, kept
    beside the real run as its control (near AUROC 0.5 when nothing leaks).

    Folds fit in parallel, one library thread each (`classify/threads.py`: never folds
    and library threads at once); the run's params keep the policy under "threads"."""
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
        control=control,
        fold_features=fold_features,
        run_name=run_name,
        show_progress=show_progress,
    )
