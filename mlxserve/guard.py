"""Safe defaults for a server every web page the user opens can reach.

- :class:`HostGuard`: bound to loopback, only requests for a local ``Host``
  are served, so a DNS-rebinding page (evil.example resolving to 127.0.0.1)
  cannot talk to the API.
- :class:`OriginGuard`: a request a browser sends from another web origin is
  refused unless ``--cors-origin`` lists that origin (then CORS headers allow
  the page to read the answer). A cross-site form or ``fetch`` with a simple
  content type never reaches a route, so a page cannot even start a generation.
- :class:`RateLimit`: ``--rate-limit N/min`` per client, a token bucket each.
"""

import hashlib
import ipaddress
import logging
import math
import time
from typing import Optional
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlxserve.auth import presented_key
from mlxserve.errors import ForbiddenError, RateLimitError
from mlxserve.http import send_error

log = logging.getLogger("mlxserve.guard")

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# Headers a page may send and read on a cross-origin call (what the SDKs use).
ALLOW_HEADERS = (
    "authorization, content-type, x-api-key, x-request-id, anthropic-version, "
    "anthropic-beta, openai-organization, openai-project, x-stainless-lang"
)
EXPOSE_HEADERS = "x-request-id, retry-after, x-mlxserve-context-dropped"
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
PREFLIGHT_MAX_AGE = "600"


def is_loopback(host: str) -> bool:
    """Whether the listen address ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_keys: list[str]) -> Optional[str]:
    """The warning for a server bound beyond loopback with no API key (else ``None``)."""
    if is_loopback(host) or api_keys:
        return None
    return (
        f"Listening on {host} with no API key: anyone who can reach this address can use "
        "the model. Set --api-key (or --api-key-file), or bind to 127.0.0.1."
    )


def host_name(value: str) -> str:
    """The host of a ``Host`` header or an origin's netloc, lower-case, no port, no brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8080
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostGuard:
    """ASGI middleware: 403 for a ``Host`` that is not local or listed in ``allowed``."""

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app = app
        self.allowed = {*LOCAL_HOSTS, *(host_name(h) for h in allowed)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host")
            # Browsers always send Host; a client without one is no rebinding page.
            if host is not None and host_name(host.decode("latin-1")) not in self.allowed:
                error = ForbiddenError(
                    f"Host '{host.decode('latin-1')}' is not allowed: this server answers "
                    "localhost only (see --allowed-host).",
                    code="host_not_allowed",
                )
                return await send_error(send, error, path=scope["path"])
        await self.app(scope, receive, send)


def same_origin(origin: str, host: Optional[bytes]) -> bool:
    """Whether ``origin`` (``scheme://host:port``) is the site the request was sent to."""
    return host is not None and urlsplit(origin).netloc.lower() == host.decode("latin-1").lower()


class OriginGuard:
    """ASGI middleware: the CORS policy, enforced.

    A request with an ``Origin`` that is neither the server's own nor one of
    ``origins`` gets 403 ``origin_not_allowed``. Listed origins get CORS
    headers (the origin itself, never ``*``, unless ``*`` is what was listed)
    and their preflights an answer. Credentials (cookies) are never allowed:
    keys travel in the ``Authorization`` header.
    """

    def __init__(self, app: ASGIApp, origins: list[str]):
        self.app = app
        self.any = "*" in origins
        self.origins = {o.rstrip("/").lower() for o in origins if o != "*"}

    def allows(self, origin: str) -> bool:
        return self.any or origin.lower() in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not origin or same_origin(origin, headers.get(b"host")):
            return await self.app(scope, receive, send)
        if not self.allows(origin):
            error = ForbiddenError(
                f"Origin '{origin}' is not allowed to call this server (see --cors-origin).",
                code="origin_not_allowed",
            )
            return await send_error(send, error, path=scope["path"])
        cors = [
            (b"access-control-allow-origin", b"*" if self.any else origin.encode("latin-1")),
            (b"vary", b"Origin"),
        ]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            cors += [
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return
        cors.append((b"access-control-expose-headers", EXPOSE_HEADERS.encode()))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


class RateLimit:
    """ASGI middleware: each client gets ``requests`` per ``period`` seconds; then 429.

    A client is its API key when it sends one, else its address. Each has a
    token bucket of ``requests`` tokens refilled evenly over ``period``, so
    bursts up to the limit pass and the average stays under it. Paths in
    ``open_paths`` (liveness, metrics, the page) are not limited.

    Args:
        clock: Seconds, monotonic (tests pass their own).
    """

    # Past this many clients, buckets that have refilled completely are dropped.
    MAX_TRACKED = 10_000

    def __init__(
        self, app: ASGIApp, requests: int, period: float, open_paths, clock=time.monotonic
    ):
        self.app = app
        self.capacity = float(requests)
        self.rate = requests / period
        self.open_paths = open_paths
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}
        """client -> (tokens left, when counted)."""

    def client(self, scope: Scope) -> str:
        key = presented_key(dict(scope["headers"]))
        if key is not None:  # a digest: the key itself is never kept
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
        return "addr:" + (scope.get("client") or ("unknown",))[0]

    def take(self, client: str) -> float:
        """Take a token for ``client``; returns 0, or the seconds until one is free."""
        now = self.clock()
        tokens, then = self.buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1, now)
        if len(self.buckets) > self.MAX_TRACKED:
            self._forget_full(now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        full = [
            c for c, (t, then) in self.buckets.items()
            if t + (now - then) * self.rate >= self.capacity
        ]
        for c in full:
            del self.buckets[c]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or scope["path"] in self.open_paths
            or scope["path"].startswith("/static/")
        ):
            return await self.app(scope, receive, send)
        wait = self.take(self.client(scope))
        if wait > 0:
            error = RateLimitError(
                f"Rate limit reached: {self.capacity:g} requests per "
                f"{self.capacity / self.rate:g} s. Try again in {math.ceil(wait)} s.",
                retry_after=math.ceil(wait),
            )
            return await send_error(send, error, path=scope["path"])
        await self.app(scope, receive, send)
