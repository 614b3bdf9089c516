"""Ingest: read and validate files, then add them to the store as one data set."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from scdrugmap.data.prepare import IngestOptions, prepare_dataset
from scdrugmap.store.storage import Storage

__all__ = ["IngestOptions", "ingest"]


def ingest(
    store: Storage,
    files: Sequence[str | os.PathLike],
    options: IngestOptions,
    *,
    replace: bool = False,
    show_progress: bool = False,
) -> dict:
    """Read, validate and add one data set built from `files` (all or nothing).

    Returns the data set's catalog row with `warnings`: findings that did not stop
    the ingest but that the user should hear of (a data set of one label, say)."""
    prepared = prepare_dataset([Path(f) for f in files], options, show_progress=show_progress)
    row = store.add_prepared(prepared, replace=replace)
    return {**row, "warnings": list(prepared.warnings)}
