"""A baseline's fit on disk: arrays in .npz (no pickle) and settings in JSON.

The fit is the baseline's "checkpoint": written once when the embedding key is
first created, then loaded unchanged for data sets added later and for new
cells at prediction time, so every cell under one key shares one projection.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scdrugmap.errors import StoreError
from scdrugmap.store.staging import remove_stale, staging_path

ARRAYS = "fit.npz"
SETTINGS = "fit.json"
PARTIAL = ".partial-"


@dataclass
class SavedFit:
    arrays: dict[str, np.ndarray]
    settings: dict

    def save(self, directory: Path) -> None:
        """Write atomically: a half-written fit never looks like a fit.

        Each process stages its own copy and renames it into place; when two `embed`
        runs fit one key at once, the first rename wins and the other keeps the winner's
        fit (the caller loads `directory`), so every cell under a key shares one fit."""
        directory.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(directory.parent, f"{directory.name}{PARTIAL}")
        staging = staging_path(directory.parent, f"{directory.name}{PARTIAL}", "fit")
        staging.mkdir()
        try:
            np.savez(staging / ARRAYS, **self.arrays)
            (staging / SETTINGS).write_text(json.dumps(self.settings, indent=2, sort_keys=True))
            try:
                os.replace(staging, directory)
            except OSError:
                if not (directory / ARRAYS).is_file():
                    raise  # not a fit that got there first: a real failure
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(cls, directory: Path) -> SavedFit:
        if not (directory / ARRAYS).is_file() or not (directory / SETTINGS).is_file():
            raise StoreError(f"{directory}: no fitted baseline here ({ARRAYS}, {SETTINGS})")
        with np.load(directory / ARRAYS, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return cls(arrays, json.loads((directory / SETTINGS).read_text()))
