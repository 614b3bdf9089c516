"""Predict: per-cell calls for new cells with a kept predictor."""

from __future__ import annotations

from scdrugmap.predict.predict import NO_CALL, Predictions, predict_files, write_predictions
from scdrugmap.predict.train import read_predictor_record
from scdrugmap.store.storage import Storage

__all__ = ["NO_CALL", "Predictions", "predict", "read_predictor_record", "write_predictions"]


def predict(store: Storage, predictor: str, files, **options):
    """Per-cell calls for new cells (see `scdrugmap.predict.predict.predict_files`)."""
    store.require()
    return predict_files(store, predictor, list(files), **options)
