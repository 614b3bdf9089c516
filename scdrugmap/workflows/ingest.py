"""Ingest: read and validate files, then add them to the store as one data set."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from scdrugmap.data.prepare import IngestOptions, prepare_dataset
from scdrugmap.store.storage import Storage


def ingest(
    store: Storage,
    files: Sequence[str | os.PathLike],
    options: IngestOptions,
    *,
    replace: bool = False,
) -> dict:
    """Read, validate and add one data set built from `files` (all or nothing)."""
    prepared = prepare_dataset([Path(f) for f in files], options)
    return store.add_prepared(prepared, replace=replace)
