"""Baselines refitted within each fold, so a held-out data set is unseen by the fit too.

`pca` and `hvg` learn their genes and axes from the cells they are fitted on. Fitted
on every data set of a selection, they have seen a cross-dataset fold's held-out data
set, and its score is not that of data never seen. Here each fold's fit learns only
from the data sets the fold trains on; every fit is an embedding of its own in the
store (`<key>.fit-<digest>`), made once and shared by every classifier and split that
trains on the same data sets.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from scdrugmap.classify.evaluate import FoldFeatures
from scdrugmap.classify.splits import Fold
from scdrugmap.embed.registry import get_model
from scdrugmap.errors import InputError
from scdrugmap.store.storage import Storage, check_key
from scdrugmap.workflows.embed import embed

RUN_SUFFIX = " (fit within folds)"


def fold_fit_key(embedding: str, fit_datasets: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(fit_datasets)).encode()).hexdigest()[:10]
    return check_key(f"{embedding[:48]}.fit-{digest}")


def _baseline(store: Storage, embedding: str) -> tuple[str, dict] | None:
    """The baseline model and the fit options of `embedding`; None for checkpoint models."""
    made = store.embedding_model(embedding)
    if made is None:
        raise InputError(f"no embedding {embedding!r} in the store; see `scdrugmap embeddings`")
    model, settings = made
    spec = get_model(model)
    if not spec.fitted_in_store:
        return None
    defaults = spec.load_class().defaults
    return model, {k: settings[k] for k in defaults if k in settings}


def refit_per_fold(
    store: Storage, embedding: str, *, show_progress: bool = False
) -> FoldFeatures | None:
    """Features per fold from a fit on the fold's training data sets only (those with no
    test cell); None when `embedding` is a checkpoint model, which has nothing to refit."""
    baseline = _baseline(store, embedding)
    if baseline is None:
        return None
    model, options = baseline

    def features(fold: Fold, cells: pd.DataFrame) -> tuple:
        datasets = cells["dataset_id"].to_numpy(dtype=str)
        fit_ids = sorted(set(datasets[fold.train]) - set(datasets[fold.test]))
        if not fit_ids:
            raise InputError(
                f"fold {fold.name} tests cells of every data set it trains on, so a fit "
                "within it has no data set to learn from; --fit-within-folds needs folds "
                "that hold whole data sets out (cross-dataset, few-shot, or pooled over "
                "data sets of one sample each)"
            )
        key = fold_fit_key(embedding, fit_ids)
        embed(
            store,
            model,
            sorted(set(datasets)),
            key=key,
            fit_on=fit_ids,
            show_progress=show_progress,
            **options,
        )
        return store.load_embedding(key, cells), fit_ids

    return features
