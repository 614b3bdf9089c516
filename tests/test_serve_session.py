"""The page's session cookie on a real server: derived from the token, never the token,
and Secure when the page came over HTTPS through a proxy."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from scdrugmap import Store
from scdrugmap.serve.security import COOKIE, session_value
from tests.serve_server import running_server
from tests.store_builders import scad_options

TOKEN = "a-long-enough-session-token-5678"


@pytest.fixture(scope="module")
def store(real_data: Path, tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("session") / "store")
    store.ingest([real_data / "scad" / "PLX4720.tsv.gz"], scad_options("plx4720", "PLX4720"))
    return store


def test_the_cookie_holds_a_derived_value_and_is_secure_over_https(store: Store) -> None:
    with running_server(store.path, env={"SCDRUGMAP_TOKEN": TOKEN}) as base:
        with httpx.Client(base_url=base, timeout=60) as browser:
            page = browser.get("/", params={"token": TOKEN})
            cookie = browser.cookies[COOKIE]
            assert page.status_code == 200 and cookie == session_value(TOKEN)
            assert TOKEN not in page.headers["set-cookie"]
            assert "secure" not in page.headers["set-cookie"].lower()  # plain http here
            assert browser.get("/api/datasets").status_code == 200
        with httpx.Client(base_url=base, timeout=60) as proxied:
            page = proxied.get("/", params={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
            assert "secure" in page.headers["set-cookie"].lower()
        with httpx.Client(base_url=base, timeout=60, cookies={COOKIE: TOKEN}) as raw:
            assert raw.get("/api/datasets").status_code == 403, "the raw token is no session"
        with httpx.Client(base_url=base, timeout=60, cookies={COOKIE: "x" * 64}) as forged:
            assert forged.get("/api/datasets").status_code == 403
