"""Anthropic Messages routes: thin wrappers over the service and the Anthropic formatting.

Errors on these paths are rendered in Anthropic's shape by the app's handlers
(see :func:`mlxserve.protocols.error_body_for`).
"""

import json
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import ServerSentEvent

from mlxserve import anthropic_format
from mlxserve.openapi import SSE, streamed
from mlxserve.routes.answer import respond
from mlxserve.routes.deps import ServiceDep
from mlxserve.schemas.anthropic import (
    CountTokensRequest,
    Message,
    MessageCreateParams,
    MessageTokensCount,
)

router = APIRouter()


def _ping() -> ServerSentEvent:
    """Anthropic's keep-alive is a ``ping`` event, not an SSE comment."""
    return ServerSentEvent(event="ping", data=json.dumps({"type": "ping"}), sep="\n")


@router.post("/v1/messages", response_model=Message, responses=streamed(SSE))
async def create_message(
    body: MessageCreateParams, request: Request, response: Response, svc: ServiceDep
):
    plan = await svc.plan_chat(anthropic_format.chat_request(body))
    shared = dict(
        model=plan.model,
        input_tokens=len(plan.request.prompt),
        thinking=anthropic_format.shows_thinking(body),
        dropped=plan.dropped,
    )
    return await respond(
        request,
        response,
        svc,
        plan,
        stream=bool(body.stream),
        to_stream=partial(anthropic_format.message_stream, **shared),
        to_fold=partial(anthropic_format.message_fold, **shared),
        ping_message=_ping,
    )


@router.post("/v1/messages/count_tokens", response_model=MessageTokensCount)
async def count_tokens(body: CountTokensRequest, svc: ServiceDep):
    """Exactly the prompt a generation with these messages and tools would get."""
    plan = await svc.plan_chat(anthropic_format.chat_request(body))
    return MessageTokensCount(input_tokens=len(plan.request.prompt))
