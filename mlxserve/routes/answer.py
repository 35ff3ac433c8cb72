"""How the generating routes answer: a stream or a fold, with the window's report.

Every protocol's route plans its generation, then answers through here, so a
streamed answer waits in the queue the same way (response headers at once,
``: queued position=N`` comments) and every answer says what the context window
dropped in the same header.
"""

from typing import Callable, Optional

from fastapi import Request
from fastapi.responses import Response

from mlxserve.http import ClientDisconnected, GenerationSSE, until_disconnect
from mlxserve.queueing import queued_stream
from mlxserve.service import Plan

CLIENT_CLOSED = 499  # nginx's "client closed request": only ever seen in logs
CONTEXT_DROPPED_HEADER = "X-MLXServe-Context-Dropped"


def dropped_headers(plan: Plan) -> dict[str, str]:
    """The header that says how many messages the window left out, when it left any."""
    return {CONTEXT_DROPPED_HEADER: str(plan.dropped.messages)} if plan.dropped else {}


async def respond(
    request: Request,
    response: Response,
    svc,
    plan: Plan,
    *,
    stream: bool,
    to_stream: Callable,
    to_fold: Callable,
    ping_message: Optional[Callable] = None,
):
    """Run ``plan``: stream it as SSE (queue comments while it waits) or fold it.

    Args:
        request: The request (its disconnect cancels a wait or a fold).
        response: The route's response, which carries a folded answer's headers.
        svc: The service.
        plan: The planned generation.
        stream: Stream the answer as SSE, or fold it into one object.
        to_stream: The SSE payloads of an event stream (an admission's wait
            failing arrives as its events' error).
        to_fold: The answer folded from an event stream.
        ping_message: The keep-alive event, where the protocol has its own
            (default: an SSE comment).
    """
    headers = dropped_headers(plan)
    if stream:
        admission = svc.enter(plan)
        return GenerationSSE(
            queued_stream(admission, to_stream, svc.settings.keepalive_interval),
            admission,
            headers=headers,
            ping=svc.settings.keepalive_interval,
            ping_message_factory=ping_message,
            shutdown_grace_period=svc.settings.drain_timeout,
        )
    response.headers.update(headers)
    try:
        generation = await until_disconnect(request, svc.admit(plan))
        try:
            return await until_disconnect(request, to_fold(generation))
        finally:
            await generation.aclose()
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)
