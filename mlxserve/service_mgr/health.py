"""Is the service's port answering ``/healthz``, and is it mlxserve that answers?

Uses only the standard library: the service commands must work without the test extras.
"""

import http.client
import json
from dataclasses import dataclass
from typing import Literal

State = Literal["up", "loading", "failed", "down", "foreign"]


@dataclass(frozen=True)
class Probe:
    """What a ``GET /healthz`` found.

    ``up``/``loading``/``failed`` are mlxserve's own statuses; ``down`` means nothing accepts
    connections on the port; ``foreign`` means a different program holds it.
    """

    state: State
    detail: str


def probe_host(host: str) -> str:
    """The address to probe for a listen address: wildcards are reached over loopback."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    # http.client reads "::1" as host ":" port "1" unless the literal is bracketed.
    return f"[{host}]" if ":" in host else host


def classify(status: int, body: bytes) -> Probe:
    """Tell mlxserve's ``/healthz`` answer from any other program's.

    Args:
        status: the HTTP status of ``GET /healthz``.
        body: the response body.

    Returns:
        ``up`` for 200 with ``status: ok``; ``loading``/``failed`` for mlxserve's 503 answers;
        ``foreign`` for anything that is not mlxserve's health document.
    """
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if (
        not isinstance(data, dict)
        or data.get("status") not in ("ok", "loading", "failed")
        or "version" not in data
    ):
        return Probe("foreign", f"a different program holds the port (GET /healthz -> {status})")
    about = f"mlxserve {data['version']}, model {data.get('model')!r}"
    if status == 200 and data["status"] == "ok":
        return Probe("up", about)
    if data["status"] == "loading":
        return Probe("loading", f"{about} is still loading")
    return Probe("failed", f"{about} failed to load its model (see the logs)")


def probe(host: str, port: int, timeout: float = 3.0) -> Probe:
    """``GET http://host:port/healthz`` and classify the answer (never raises)."""
    conn = http.client.HTTPConnection(probe_host(host), port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as exc:
            return Probe("down", f"nothing accepts connections ({exc.strerror or exc})")
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            body = response.read(1 << 16)
        except (OSError, http.client.HTTPException) as exc:
            # Accepted the connection but did not answer HTTP: not mlxserve.
            return Probe("foreign", f"a different program holds the port (no HTTP answer: {exc!r})")
        return classify(response.status, body)
    finally:
        conn.close()
