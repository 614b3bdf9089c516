"""A baseline's fit on disk: arrays in .npz (no pickle) and settings in JSON.

The fit is the baseline's "checkpoint": written once when the embedding key is
first created, then loaded unchanged for data sets added later and for new
cells at prediction time, so every cell under one key shares one projection.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scdrugmap.errors import StoreError

ARRAYS = "fit.npz"
SETTINGS = "fit.json"


@dataclass
class SavedFit:
    arrays: dict[str, np.ndarray]
    settings: dict

    def save(self, directory: Path) -> None:
        """Write atomically: a half-written fit never looks like a fit."""
        staging = directory.with_name(directory.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        np.savez(staging / ARRAYS, **self.arrays)
        (staging / SETTINGS).write_text(json.dumps(self.settings, indent=2, sort_keys=True))
        os.replace(staging, directory)

    @classmethod
    def load(cls, directory: Path) -> SavedFit:
        if not (directory / ARRAYS).is_file() or not (directory / SETTINGS).is_file():
            raise StoreError(f"{directory}: no fitted baseline here ({ARRAYS}, {SETTINGS})")
        with np.load(directory / ARRAYS, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return cls(arrays, json.loads((directory / SETTINGS).read_text()))
