"""Anthropic Messages routes: thin wrappers over the service and the Anthropic formatting.

Errors on these paths are rendered in Anthropic's shape by the app's handlers
(see :func:`mlxserve.protocols.error_body_for`).
"""

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import ServerSentEvent

from mlxserve import anthropic_format
from mlxserve.http import ClientDisconnected, GenerationSSE, until_disconnect
from mlxserve.openapi import SSE, streamed
from mlxserve.routes.deps import ServiceDep
from mlxserve.schemas.anthropic import (
    CountTokensRequest,
    Message,
    MessageCreateParams,
    MessageTokensCount,
)

router = APIRouter()

CLIENT_CLOSED = 499


def _ping() -> ServerSentEvent:
    """Anthropic's keep-alive is a ``ping`` event, not an SSE comment."""
    return ServerSentEvent(event="ping", data=json.dumps({"type": "ping"}), sep="\n")


@router.post("/v1/messages", response_model=Message, responses=streamed(SSE))
async def create_message(body: MessageCreateParams, request: Request, svc: ServiceDep):
    plan = await svc.plan_chat(anthropic_format.chat_request(body))
    shared = dict(
        model=plan.model,
        input_tokens=len(plan.request.prompt),
        thinking=anthropic_format.shows_thinking(body),
    )
    try:
        generation = await until_disconnect(request, svc.admit(plan))
        if body.stream:
            return GenerationSSE(
                anthropic_format.message_stream(generation, **shared),
                generation,
                ping=svc.settings.keepalive_interval,
                ping_message_factory=_ping,
                shutdown_grace_period=svc.settings.drain_timeout,
            )
        try:
            return await until_disconnect(
                request, anthropic_format.message_fold(generation, **shared)
            )
        finally:
            await generation.aclose()
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)


@router.post("/v1/messages/count_tokens", response_model=MessageTokensCount)
async def count_tokens(body: CountTokensRequest, svc: ServiceDep):
    """Exactly the prompt a generation with these messages and tools would get."""
    plan = await svc.plan_chat(anthropic_format.chat_request(body))
    return MessageTokensCount(input_tokens=len(plan.request.prompt))
