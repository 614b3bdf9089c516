"""Receiving an uploaded file: a safe name, a size limit, streamed to disk.

The file is written chunk by chunk as it arrives, so a large upload never
sits in memory, and the transfer stops the moment it passes the limit. The
name the client gives is reduced to its last component and plain characters:
it names the file (and, by default, the sample), never a place to write.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from fastapi import Request

from scdrugmap.data.readers import detect_format
from scdrugmap.errors import InputError

UPLOAD_FORMATS = ("h5ad", "10x-h5", "table")
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
