"""API keys: the middleware that demands one on every API route.

Keys come from ``--api-key`` (comma-separated) and ``--api-key-file`` (one per
line; see ``Settings.api_keys``). With no key configured the server is open.
Clients send ``Authorization: Bearer KEY`` (OpenAI, Ollama clients) or
``x-api-key: KEY`` (Anthropic clients).
"""

import hmac
from typing import Optional

from starlette.types import ASGIApp, Receive, Scope, Send

from mlxserve.errors import AuthenticationError
from mlxserve.http import send_error

# Paths anyone may read: the chat page and its assets (the page itself asks for
# the key), liveness, and the API description.
OPEN_PATHS = frozenset({"/", "/healthz", "/health", "/docs", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/static/",)


def presented_key(headers: dict[bytes, bytes]) -> Optional[str]:
    """The key a request carries, from ``Authorization: Bearer`` or ``x-api-key``."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key or None


def key_matches(key: str, keys: list[str]) -> bool:
    """Whether ``key`` is one of ``keys``, comparing every key in constant time."""
    given = key.encode()
    found = False
    for k in keys:
        found |= hmac.compare_digest(given, k.encode())
    return found


class APIKeyAuth:
    """ASGI middleware: API routes need one of ``keys``; 401 ``invalid_api_key`` otherwise.

    CORS preflights (``OPTIONS``) carry no credentials and pass through.
    """

    def __init__(self, app: ASGIApp, keys: list[str], open_paths=OPEN_PATHS):
        self.app = app
        self.keys = keys
        self.open_paths = open_paths

    def is_open(self, scope: Scope) -> bool:
        path = scope["path"]
        return (
            scope["method"] == "OPTIONS"
            or path in self.open_paths
            or path.startswith(OPEN_PREFIXES)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or self.is_open(scope):
            return await self.app(scope, receive, send)
        key = presented_key(dict(scope["headers"]))
        if key is None:
            error = AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
            )
        elif not key_matches(key, self.keys):
            error = AuthenticationError("Incorrect API key provided.")
        else:
            return await self.app(scope, receive, send)
        await send_error(send, error, path=scope["path"])
