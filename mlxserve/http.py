"""HTTP plumbing shared by the routes: body limit, disconnect watching, SSE, NDJSON."""

import asyncio
import json
from typing import AsyncIterator, Awaitable, TypeVar

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlxserve.errors import MLXServeError, PayloadTooLargeError
from mlxserve.protocols import error_body_for

T = TypeVar("T")


async def send_error(send: Send, error: MLXServeError, *, path: str, close: bool = False) -> None:
    """Answer with ``error`` straight from ASGI middleware (outside FastAPI's handlers).

    The body has the error shape of the API that owns ``path``.
    """
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


class BodySizeLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, declared or streamed.

    The body is read up front (it is small by construction) and replayed to the
    app; later ``receive`` calls go to the server, so disconnects still arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

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
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

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


class GenerationSSE(EventSourceResponse):
    """An SSE response that always closes its generation, whatever happens to the stream.

    sse-starlette may cancel the body iterator before it starts (client gone at
    once, shutdown); closing the generation here releases its gate slot anyway.
    """

    def __init__(self, payloads: AsyncIterator[str], generation, **kwargs):
        super().__init__(payloads, sep="\n", **kwargs)
        self.generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.generation.aclose()


class GenerationNDJSON(StreamingResponse):
    """Newline-delimited JSON that always closes its generation, like :class:`GenerationSSE`."""

    def __init__(self, lines: AsyncIterator[str], generation):
        super().__init__(lines, media_type="application/x-ndjson")
        self.generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.generation.aclose()
