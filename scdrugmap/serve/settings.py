"""What a server is allowed to do, checked before it binds a port."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from scdrugmap.data.source import DEFAULT_MAX_COLUMNS, DEFAULT_MAX_LINE_BYTES, ReadLimits
from scdrugmap.errors import InputError

TOKEN_ENV = "SCDRUGMAP_TOKEN"
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_upload_bytes: int = 2 * 1024**3
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_columns: int = DEFAULT_MAX_COLUMNS
    job_memory_bytes: int | None = None  # None: 3/4 of this machine's memory
    sql_max_rows: int = 10_000
    sql_seconds: float = 10.0
    sql_max_bytes: int = 16 * 1024**2
    sql_memory_mb: int = 512
    device: str = "auto"

    def check(self) -> ServeSettings:
        """Refuse settings that would expose the store: a non-loopback address without a
        token, or a token short enough to guess."""
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise InputError(
                f"--token is {len(self.token)} characters; use at least {MIN_TOKEN_LENGTH} "
                "(for example: python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        if not is_loopback(self.host) and self.token is None:
            raise InputError(
                f"--host {self.host} lets other machines reach the store; give a token with "
                f"--token or ${TOKEN_ENV} that every request must carry, or bind 127.0.0.1"
            )
        limits = (self.max_upload_bytes, self.sql_max_rows, self.sql_seconds, self.sql_max_bytes)
        if min(limits) <= 0 or self.sql_memory_mb <= 0:
            raise InputError(
                "--max-upload-mb, --sql-rows, --sql-seconds, --sql-max-mb and --sql-memory-mb "
                "must be positive"
            )
        if min(self.max_line_bytes, self.max_columns, self.job_memory_bytes or 1) <= 0:
            raise InputError("--max-line-mb, --max-columns and --job-memory-mb must be positive")
        return self

    def read_limits(self) -> ReadLimits:
        """What an uploaded file may unpack to: --max-upload-mb bounds its unpacked bytes
        (and the memory of its arrays) as it bounds the upload."""
        return ReadLimits(
            max_unpacked_bytes=self.max_upload_bytes,
            max_line_bytes=self.max_line_bytes,
            max_columns=self.max_columns,
            how_to_raise=(
                ("max_unpacked_bytes", "or start the server with a larger --max-upload-mb"),
                ("max_line_bytes", "or start the server with a larger --max-line-mb"),
                ("max_columns", "or start the server with a larger --max-columns"),
            ),
        )
