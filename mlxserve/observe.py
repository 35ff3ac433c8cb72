"""Request ids, the access log and metrics for every request; the log format.

:class:`Observe` is the outermost middleware: it gives each request an id
(the client's ``X-Request-ID`` or a new one), echoes it, keeps a
:class:`~mlxserve.tracing.RequestRecord` current while the request runs, and
when the response has ended writes one access-log line and feeds the metrics.
"""

import json
import logging
import time
from typing import Optional

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlxserve import tracing
from mlxserve.metrics import Metrics
from mlxserve.tracing import REQUEST_ID_HEADER, RequestRecord

access_log = logging.getLogger("mlxserve.access")

UNMATCHED = "unmatched"


class Observe:
    """ASGI middleware: request id, access log line and metrics for each HTTP request.

    Args:
        app: The app to wrap.
        metrics: Where finished requests are counted.
        routes: The app's routes, to label requests by route template.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def endpoint(self, scope: Scope) -> str:
        """The path template of the route ``scope`` goes to (bounded label values)."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        record = RequestRecord(
            request_id=tracing.request_id_from(dict(scope["headers"]).get(b"x-request-id")),
            method=scope["method"],
            path=scope["path"],
            endpoint=self.endpoint(scope),
            started=time.monotonic(),
        )
        id_header = (REQUEST_ID_HEADER.lower().encode(), record.request_id.encode())

        def finish() -> None:
            if record.finished is None:
                record.finished = time.monotonic()
                self.metrics.observe(record)
                log_access(record)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), id_header]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finish()  # before the last byte: a client that has its answer sees it counted
            await send(message)

        token = tracing.begin(record)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            record.status = record.status or 500
            raise
        finally:
            tracing.end(token)
            finish()


def log_access(record: RequestRecord) -> None:
    """One line per request: method, path, status, tokens, TTFT, tok/s, duration."""
    figures = {
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens if record.first_token else None,
        "ttft_s": _round(record.ttft),
        "tokens_per_second": _round(record.tokens_per_second, 1),
        "duration_s": _round(record.duration),
        "error": record.error_code,
    }
    shown = "".join(f" {k}={v}" for k, v in figures.items() if v is not None)
    fields = {"method": record.method, "path": record.path, "status": record.status, **figures}
    access_log.info(
        "%s %s %s%s",
        record.method,
        record.path,
        record.status,
        shown,
        extra={"request_id": record.request_id, "access": fields},
    )


def _round(value: Optional[float], digits: int = 4) -> Optional[float]:
    return None if value is None else round(value, digits)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = tracing.current_id() or "-"
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, access fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            **getattr(record, "access", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def setup_logging(level: str, fmt: str) -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``), uvicorn's loggers included.

    uvicorn's own access log is replaced by :func:`log_access`.
    """
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
