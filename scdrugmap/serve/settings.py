"""What a server is allowed to do, checked before it binds a port."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

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
    sql_max_rows: int = 10_000
    sql_seconds: float = 10.0
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
        if self.max_upload_bytes <= 0 or self.sql_max_rows <= 0 or self.sql_seconds <= 0:
            raise InputError("--max-upload-mb, --sql-rows and --sql-seconds must be positive")
        return self
