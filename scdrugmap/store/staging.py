"""Staging folders: where a write is assembled before one rename puts it in place.

Each process stages under a name of its own (`<prefix><name>-<pid>-<token>`), so two
processes writing the same thing never mix their files, and the first rename wins. A
process killed mid-write leaves its staging folder behind; the next write in the same
folder removes those of processes that no longer run, and says what it removed.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

_OWNER = re.compile(r"-(\d+)-[0-9a-f]{8}(?:\.zarr)?$")


def staging_path(folder: Path, prefix: str, name: str, suffix: str = "") -> Path:
    """A staging folder in `folder` that no other process (or call) will use."""
    return folder / f"{prefix}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge
    return True


def remove_stale(folder: Path, prefix: str) -> list[Path]:
    """Remove the staging folders under `prefix` whose process has died; return them.

    Folders of a name without an owner (from before owners were recorded) are stale too:
    no running scdrugmap writes them any longer."""
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob(f"{prefix}*")):
        owner = _OWNER.search(path.name)
        if owner is not None and _alive(int(owner.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
