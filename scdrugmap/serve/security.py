"""Who may ask: a token on every request when one is set, and only local names without.

With a token, it may come as `Authorization: Bearer <token>`, as the cookie
the page sets, or once as `?token=` in the address the user opens (which then
sets that cookie, so images and downloads in the page need no token in their
links). Without a token the server is bound to a loopback address, and the
Host header must name this machine: a web page elsewhere cannot reach the API
by pointing its own domain at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.responses import JSONResponse

from scdrugmap.serve.settings import TOKEN_ENV, ServeSettings, is_loopback

COOKIE = "scdrugmap_token"
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'"
    ),
}


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _given_token(request: Request) -> tuple[str | None, bool]:
    """(the token the request carries, whether it came in the address)."""
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip(), False
    if "token" in request.query_params:
        return request.query_params["token"], True
    return request.cookies.get(COOKIE), False


def _refuse(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=_HEADERS)


def guard(settings: ServeSettings):
    """The middleware that admits or refuses each request before any route sees it."""

    async def check(request: Request, call_next):
        from_address = False
        if settings.token is None:
            host = _host_name(request.headers.get("host", ""))
            if not (is_loopback(host) or host == settings.host):
                return _refuse(403, f"host {host!r} refused: this server answers local names only")
        else:
            given, from_address = _given_token(request)
            if not given:
                return _refuse(
                    401,
                    f"this server needs its token (--token / ${TOKEN_ENV}): send "
                    "'Authorization: Bearer <token>', or open the page as /?token=<token>",
                )
            if not hmac.compare_digest(given.encode(), settings.token.encode()):
                return _refuse(403, "wrong token")
        response = await call_next(request)
        response.headers.update(_HEADERS)
        if from_address:
            response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    return check
