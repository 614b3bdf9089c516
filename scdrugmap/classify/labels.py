"""The two response classes as classifiers see them (resistant 0, sensitive 1), and the
check every classifier makes of its training labels, in one module that each
classifier imports, so no classifier module imports another."""

from __future__ import annotations

import numpy as np

from scdrugmap.errors import InputError

CLASS_NAMES = {0: "resistant", 1: "sensitive"}


def check_training_labels(y: np.ndarray) -> np.ndarray:
    """Labels as int8 0/1, refusing anything a binary response model cannot learn from."""
    labels = np.asarray(y).ravel()
    if not np.isin(labels, (0, 1)).all():
        raise InputError("training labels must be 0 (resistant) or 1 (sensitive)")
    present = np.unique(labels)
    if present.size < 2:
        only = CLASS_NAMES[int(present[0])] if present.size else "none"
        raise InputError(
            f"training cells hold only one class ({only}); a classifier needs sensitive and "
            "resistant cells: widen the selection or use another split"
        )
    return labels.astype(np.int8)
