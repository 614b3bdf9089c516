"""Where the store is, decided without importing anything heavy."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = "scdrugmap-store"
CATALOG_NAME = "catalog.duckdb"


def default_store_path() -> Path:
    return Path(os.environ.get("SCDRUGMAP_STORE") or DEFAULT_STORE)
