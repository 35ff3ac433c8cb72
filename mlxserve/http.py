"""HTTP plumbing shared by the routes: body limits, disconnect watching, SSE, NDJSON."""

import asyncio
import json
import re
from typing import AsyncIterator, Awaitable, Optional, TypeVar

import numpy as np

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlxserve import tracing
from mlxserve.errors import InvalidRequestError, MLXServeError, PayloadTooLargeError
from mlxserve.protocols import error_body_for

T = TypeVar("T")


async def send_error(send: Send, error: MLXServeError, *, path: str, close: bool = False) -> None:
    """Answer with ``error`` straight from ASGI middleware (outside FastAPI's handlers).

    The body has the error shape of the API that owns ``path``.
    """
    tracing.note_error(error)
    body = json.dumps(error_body_for(path, error)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ClientDisconnected(Exception):
    """The client went away before the response was ready."""


# A JSON string, escapes included: what is inside one is not structure.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (0 for a scalar).

    Counts brackets outside strings, in linear time and without recursion, so
    a body nested a million deep is measured before any parser sees it.
    """
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
# A surrogate encoded as UTF-8 bytes: invalid UTF-8, yet Python's json decodes it.
_UTF8_SURROGATE = re.compile(rb"\xed[\xa0-\xbf][\x80-\xbf]")
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.S)


def lone_surrogate(body: bytes) -> Optional[str]:
    """The first UTF-16 surrogate in a JSON text that is half of no pair, as ``\\udXXX``.

    Such a string is valid JSON but not Unicode: no tokenizer can encode it.
    """
    raw = _UTF8_SURROGATE.search(body)
    if raw:
        return f"\\u{ord(raw.group().decode('utf-8', 'surrogatepass')):04x}"
    if not _SURROGATE.search(body):
        return None
    pending = None  # a high surrogate waiting for its low half, right after it
    for m in _ESCAPE.finditer(body):
        unit = int(m.group(1), 16) if m.group(1) else None
        if pending is not None:
            if unit is None or not 0xDC00 <= unit <= 0xDFFF or m.start() != pending.end():
                return pending.group().decode()
            pending = None
        elif unit is not None and 0xD800 <= unit <= 0xDBFF:
            pending = m
        elif unit is not None and 0xDC00 <= unit <= 0xDFFF:
            return m.group().decode()
    return pending.group().decode() if pending is not None else None


class BodySizeLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, declared or streamed;
    JSON nested deeper than ``max_depth``, or with lone surrogates, with 400.

    The body is read up front (it is small by construction) and replayed to the
    app; later ``receive`` calls go to the server, so disconnects still arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int):
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_error(
            send,
            PayloadTooLargeError(
                f"The request body is larger than the server's limit of {self.max_bytes} bytes."
            ),
            path=scope["path"],
            close=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # gone before the body arrived
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(scope, send)
        body = b"".join(chunks)
        if body and json_depth(body) > self.max_depth:
            error = InvalidRequestError(
                f"The request body nests arrays and objects deeper than the server's "
                f"limit of {self.max_depth} levels.",
                code="json_too_deep",
            )
            return await send_error(send, error, path=scope["path"])
        surrogate = body and lone_surrogate(body)
        if surrogate:
            error = InvalidRequestError(
                f"The request body holds a string with a lone UTF-16 surrogate ({surrogate}): "
                "not valid Unicode.",
                code="invalid_unicode",
            )
            return await send_error(send, error, path=scope["path"])
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class JSONBodies:
    """ASGI middleware: read API request bodies as JSON whatever Content-Type says.

    ``curl -d`` sends ``application/x-www-form-urlencoded``; like llama.cpp and
    mlx_lm.server, the API takes the body as JSON anyway.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first.

    Raises:
        ClientDisconnected: The client went away; ``work`` was cancelled.
    """
    task = asyncio.ensure_future(work)

    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    raise ClientDisconnected()


class _ClosesGeneration:
    """A streamed response that closes ``self.generation`` however the stream ends.

    sse-starlette may cancel the body iterator before it starts (client gone at
    once, shutdown); closing the generation here releases its gate slot anyway.
    """

    generation: object

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.generation.aclose()


class GenerationSSE(_ClosesGeneration, EventSourceResponse):
    """Server-sent events that always close their generation."""

    def __init__(self, payloads: AsyncIterator[str], generation, **kwargs):
        super().__init__(payloads, sep="\n", **kwargs)
        self.generation = generation


class GenerationNDJSON(_ClosesGeneration, StreamingResponse):
    """Newline-delimited JSON that always closes its generation."""

    def __init__(self, lines: AsyncIterator[str], generation, headers=None):
        super().__init__(lines, media_type="application/x-ndjson", headers=headers)
        self.generation = generation
