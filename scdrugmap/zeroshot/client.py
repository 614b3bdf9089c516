"""A minimal OpenAI-compatible chat-completions client (standard library only).

Only `POST <url>/chat/completions` with `model`, `messages` and
`temperature` is used, the common ground of OpenAI, vLLM, llama.cpp, Ollama
and most gateways. `url` is either the API base (`https://host/v1`) or the
full endpoint (`.../chat/completions`).

Failures of the transport are retried a bounded number of times with
exponential backoff: connection errors, timeouts, 408, 429 (honouring a
numeric Retry-After) and 5xx. A 401/403 or another 4xx is not retried: asking
again will not change the answer. Every error is one line naming the endpoint
(without credentials or query string) and the status. The API key goes only
into the Authorization header; it is kept out of repr() and scrubbed from any
server text an error quotes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from scdrugmap.errors import ScdrugmapError

_RETRYABLE = {408, 429}


class ChatError(ScdrugmapError):
    """The chat endpoint could not be reached or refused the request."""


def endpoint_url(url: str) -> str:
    """The chat-completions endpoint for a base URL or an endpoint URL."""
    stripped = url.rstrip("/")
    if not stripped.startswith(("http://", "https://")):
        raise ChatError(f"chat URL {url!r} must start with http:// or https://")
    return stripped if stripped.endswith("/chat/completions") else stripped + "/chat/completions"


def public_url(url: str) -> str:
    """`url` without user:password@ or query string, safe to show and to store."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class ChatClient:
    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    max_wait: float = 60.0
    temperature: float = 0.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @property
    def endpoint(self) -> str:
        return endpoint_url(self.url)

    @property
    def shown_endpoint(self) -> str:
        return public_url(self.endpoint)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's text for `messages` ("" when the model gave no content)."""
        body = json.dumps(
            {"model": self.model, "messages": messages, "temperature": self.temperature}
        ).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempts = self.retries + 1
        for attempt in range(attempts):
            request = urllib.request.Request(self.endpoint, body, headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return self._content(response.read())
            except urllib.error.HTTPError as error:
                problem = f"HTTP {error.code}"
                detail = self._scrub(error.read()[:300].decode("utf-8", "replace"))
                if error.code in (401, 403):
                    raise ChatError(
                        f"chat endpoint {self.shown_endpoint} refused the request ({problem}); "
                        "check --api-key / $SCDRUGMAP_CHAT_API_KEY / $OPENAI_API_KEY"
                    ) from None
                if error.code not in _RETRYABLE and error.code < 500:
                    raise ChatError(
                        f"chat endpoint {self.shown_endpoint} rejected the request ({problem}: "
                        f"{' '.join(detail.split()) or 'no detail'}); check --model and --url"
                    ) from None
                wait = self._retry_after(error.headers.get("Retry-After"), attempt)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = getattr(error, "reason", error)
                problem = f"unreachable: {self._scrub(str(reason))}"
                wait = self._retry_after(None, attempt)
            if attempt + 1 < attempts:
                self.sleep(wait)
        raise ChatError(
            f"chat endpoint {self.shown_endpoint} failed after {attempts} attempts ({problem})"
        )

    def _retry_after(self, header: str | None, attempt: int) -> float:
        """The server's numeric Retry-After if given, else exponential backoff; capped."""
        try:
            wait = float(header) if header is not None else self.backoff * 2**attempt
        except ValueError:
            wait = self.backoff * 2**attempt
        return max(0.0, min(wait, self.max_wait))

    def _content(self, raw: bytes) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ChatError(
                f"chat endpoint {self.shown_endpoint} answered without "
                "choices[0].message; is it an OpenAI-compatible chat-completions endpoint?"
            ) from None
        return content if isinstance(content, str) else ""

    def _scrub(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text
