"""What an embedding records about how it was made."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

_PACKAGES = ("scdrugmap", "numpy", "scipy", "zarr", "anndata", "torch", "transformers", "peft")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def settings_hash(model: str, provenance: dict) -> str:
    """Identifies what determines the output: the model, its weights and settings."""
    basis = {"model": model, **provenance}
    return hashlib.sha256(canonical_json(basis).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes: the identity of a checkpoint's weights."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
