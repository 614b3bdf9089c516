"""Receiving an uploaded file: a safe name, a size limit, streamed to disk; and the
uploads kept for a job still to come.

The file is written chunk by chunk as it arrives, so a large upload never
sits in memory, and the transfer stops the moment it passes the limit. The
name the client gives is reduced to its last component and plain characters:
it names the file (and, by default, the sample), never a place to write.
"""

from __future__ import annotations

import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fastapi import Request

from scdrugmap.data.obs_columns import CellColumns
from scdrugmap.data.readers import detect_format
from scdrugmap.errors import InputError
from scdrugmap.provenance import utc_now

UPLOAD_FORMATS = ("h5ad", "10x-h5", "table")
# Uploads waiting for a job: at most this many, none older than this.
MAX_STAGED = 8
MAX_STAGED_SECONDS = 3600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120


class UploadTooLarge(InputError):
    """The upload passed the server's size limit."""


def safe_filename(name: str) -> str:
    """The client's file name as one plain path component with a known format suffix."""
    last = PurePosixPath(name.replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", last).lstrip("._-")[-_MAX_NAME:]
    if not cleaned:
        raise InputError(f"file name {name!r} is empty once unsafe characters are removed")
    if detect_format(Path(cleaned)) not in UPLOAD_FORMATS:
        raise InputError(
            f"{cleaned}: a 10x matrix directory cannot be uploaded as one file; upload the "
            "Cell Ranger .h5 file, an .h5ad, or a .tsv/.txt/.csv table (optionally .gz)"
        )
    return cleaned


def _limit_message(limit: int) -> str:
    return (
        f"upload is larger than this server's limit of {limit / 1024**2:,.1f} MiB; "
        "subset the cells, or start the server with a larger --max-upload-mb"
    )


async def receive(request: Request, destination: Path, limit: int) -> int:
    """Stream the request body into `destination`; returns its size in bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(_limit_message(limit))
    size = 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as sink:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge(_limit_message(limit))
            sink.write(chunk)
    if size == 0:
        raise InputError(f"{destination.name}: the upload is empty; send the file as the body")
    return size


@dataclass
class StagedUpload:
    """A file uploaded ahead of its job, with the per-cell columns it offers."""

    id: str
    filename: str
    size: int
    cells: CellColumns
    created: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=lambda: utc_now().isoformat())

    def public(self) -> dict:
        """What the API shows of the upload."""
        return {
            "upload_id": self.id,
            "filename": self.filename,
            "size": self.size,
            "n_cells": self.cells.n_cells,
            "columns": self.cells.columns,
            "suggested_sample_column": self.cells.suggested_sample_column,
            "created_at": self.created_at,
        }


class StagedUploads:
    """Uploads waiting for their job, each in `<folder>/<id>/<file name>`.

    Uploading before the job lets the page read a file's per-cell columns and ask which
    names the samples. A page may upload a file and never use it, so the server keeps at
    most `max_count` of them, none older than `max_age_s` seconds, and none past its own
    life. Their ids live in memory, so a server that was killed leaves files no later one
    can use: those are deleted on start once past the age limit (a younger one may belong
    to a second server on the same store).
    """

    def __init__(
        self, folder: Path, max_count: int = MAX_STAGED, max_age_s: float = MAX_STAGED_SECONDS
    ) -> None:
        self.folder = folder
        self.max_count = max_count
        self.max_age_s = max_age_s
        self._uploads: dict[str, StagedUpload] = {}
        self._lock = threading.Lock()
        self._remove_leftovers()

    def new_path(self, filename: str) -> tuple[str, Path]:
        """A fresh id and the path its file is to be written to."""
        upload_id = secrets.token_hex(6)
        return upload_id, self.folder / upload_id / filename

    def add(self, upload: StagedUpload) -> None:
        """Keep a received upload; the oldest go when there are too many."""
        with self._lock:
            self._uploads[upload.id] = upload
            stale = self._stale()
        for old in stale:
            self.discard(old)

    def take(self, upload_id: str) -> StagedUpload | None:
        """The upload for a job to use (it is then no longer offered), or None when unknown
        or expired."""
        with self._lock:
            stale = self._stale()
            upload = None if upload_id in stale else self._uploads.pop(upload_id, None)
        for old in stale:
            self.discard(old)
        return upload

    def path(self, upload: StagedUpload) -> Path:
        return self.folder / upload.id / upload.filename

    def discard(self, upload_id: str) -> None:
        """Forget an upload and delete its file (a partial one, too)."""
        with self._lock:
            self._uploads.pop(upload_id, None)
        self._remove_folder(self.folder / upload_id)

    def clear(self) -> None:
        """Delete every upload this server kept (when it stops)."""
        with self._lock:
            ids = list(self._uploads)
        for upload_id in ids:
            self.discard(upload_id)

    def _remove_leftovers(self) -> None:
        if not self.folder.is_dir():
            return
        cutoff = time.time() - self.max_age_s
        for folder in self.folder.iterdir():
            if folder.stat().st_mtime < cutoff:
                self._remove_folder(folder)

    def _stale(self) -> list[str]:
        """Ids past the age limit, then the oldest beyond the count limit (lock held)."""
        now = time.monotonic()
        by_age = sorted(self._uploads.values(), key=lambda u: u.created)
        expired = [u.id for u in by_age if now - u.created > self.max_age_s]
        kept = [u.id for u in by_age if u.id not in expired]
        return expired + kept[: max(0, len(kept) - self.max_count)]

    def _remove_folder(self, folder: Path) -> None:
        """Delete a folder, and the server's folders above it once they are empty, so unused
        uploads leave no trace in the store."""
        shutil.rmtree(folder, ignore_errors=True)
        for parent in (self.folder, self.folder.parent):
            try:
                parent.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                return
