"""Predict: per-cell calls for new cells with a kept predictor."""

from __future__ import annotations

from scdrugmap.predict.predict import predict_files
from scdrugmap.store.storage import Storage


def predict(store: Storage, predictor: str, files, **options):
    """Per-cell calls for new cells (see `scdrugmap.predict.predict.predict_files`)."""
    store.require()
    return predict_files(store, predictor, list(files), **options)
