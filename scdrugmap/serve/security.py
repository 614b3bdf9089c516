"""Who may ask: a token on every request when one is set, and only local names without.

With a token, it may come as `Authorization: Bearer <token>`, or once as
`?token=` in the address the user opens, which sets a session cookie so images and
downloads in the page need no token in their links. The cookie holds a value derived
from the token (an HMAC), never the token itself, and is marked Secure when the page
came over HTTPS (directly, or through a proxy that says so in X-Forwarded-Proto).
Without a token the server is bound to a loopback address, and the
Host header must name this machine: a web page elsewhere cannot reach the API
by pointing its own domain at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import hashlib
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


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so a cookie read off a disk or a log
    does not give away the token that scripts and other servers may share."""
    return hmac.new(token.encode(), b"scdrugmap page session", hashlib.sha256).hexdigest()


def _admitted(request: Request, token: str) -> tuple[bool | None, bool]:
    """(whether the request's credential is right, None when it carries none; whether it
    came in the address)."""
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return _same(bearer[7:].strip(), token), False
    if "token" in request.query_params:
        return _same(request.query_params["token"], token), True
    cookie = request.cookies.get(COOKIE)
    return (None if not cookie else _same(cookie, session_value(token))), False


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _over_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


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
            right, from_address = _admitted(request, settings.token)
            if right is None:
                return _refuse(
                    401,
                    f"this server needs its token (--token / ${TOKEN_ENV}): send "
                    "'Authorization: Bearer <token>', or open the page as /?token=<token>",
                )
            if not right:
                return _refuse(403, "wrong token")
        response = await call_next(request)
        response.headers.update(_HEADERS)
        if from_address:
            response.set_cookie(
                COOKIE,
                session_value(settings.token),
                httponly=True,
                samesite="strict",
                secure=_over_https(request),
            )
        return response

    return check
