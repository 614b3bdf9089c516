"""Train: fit a classifier on all selected cells and keep it in the store as a predictor."""

from __future__ import annotations

from scdrugmap.predict.domain import QUANTILE
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
    domain_quantile: float = QUANTILE,
) -> dict:
    """Fit a classifier on all selected cells of an embedding and keep it as a predictor,
    with its applicability domain admitting `domain_quantile` of training-like cells, and
    a calibrator (Platt or isotonic) chosen and fitted by cross-validation on those cells."""
    store.require()
    return fit_and_keep(
        store,
        embedding,
        classifier,
        name,
        where=where,
        seed=seed,
        replace=replace,
        domain_quantile=domain_quantile,
    )
