"""Anthropic Messages <-> the internal chat path.

:func:`chat_request` translates a Messages request into the internal chat
request; :func:`message_stream` turns the parsed events of its generation into
Anthropic's server-sent events, and :func:`message_fold` (non-streaming) is the
fold of those same events into one ``Message``.
"""

import json
import logging
import uuid
from typing import AsyncIterator, Optional

from mlxserve import tracing
from mlxserve.context import Dropped, dropped_fields
from mlxserve.parsing import Event
from mlxserve.protocols import anthropic_error_body, translated
from mlxserve.schemas.anthropic import (
    CountTokensRequest,
    Message,
    MessageCreateParams,
    TextBlock,
    ThinkingBlock,
    ToolResultBlockParam,
    ToolUseBlock,
    ToolUseBlockParam,
    Usage,
)
from mlxserve.schemas.openai import ChatCompletionRequest

log = logging.getLogger("mlxserve.anthropic")

TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def new_message_id() -> str:
    """``msg_`` and the request's id (see :mod:`mlxserve.tracing`)."""
    return "msg_" + (tracing.current_id() or uuid.uuid4().hex[:24])


def tool_use_id(call_id: str) -> str:
    """Anthropic's ``toolu_`` id for an internal ``call_`` id."""
    return "toolu_" + call_id.removeprefix("call_")


def chat_request(body: CountTokensRequest) -> ChatCompletionRequest:
    """The internal chat request for a Messages (or count_tokens) request.

    ``tool_result`` blocks become ``tool`` messages ahead of the user's text, as
    they answer the assistant's ``tool_use`` blocks of the turn before.
    """
    messages = []
    system = body.system_text()
    if system is not None:
        messages.append({"role": "system", "content": system})
    for message in body.messages:
        texts, calls = [], []
        for block in message.blocks():
            if isinstance(block, ToolResultBlockParam):
                messages.append(
                    {"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text()}
                )
            elif isinstance(block, ToolUseBlockParam):
                calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": json.dumps(block.input)},
                    }
                )
            elif block.type == "text":
                texts.append(block.text)
        if message.role == "assistant":
            messages.append(
                {
                    "role": "assistant",
                    "content": "".join(texts),
                    **({"tool_calls": calls} if calls else {}),
                }
            )
        elif texts or not isinstance(message.content, list):
            messages.append({"role": "user", "content": "\n".join(texts)})
    data: dict = {"model": body.model, "messages": messages}
    if body.tools:
        data["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.input_schema,
                },
            }
            for t in body.tools
        ]
    if body.tool_choice is not None and body.tools:
        choice = body.tool_choice
        data["tool_choice"] = TOOL_CHOICES.get(choice.type) or {
            "type": "function",
            "function": {"name": choice.name},
        }
    if isinstance(body, MessageCreateParams):
        data.update(
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            stop=body.stop_sequences or None,
            stream=body.stream,
        )
    return translated(ChatCompletionRequest, data)


def shows_thinking(body: CountTokensRequest) -> bool:
    """Whether the answer carries the model's reasoning as thinking blocks."""
    return body.thinking is None or body.thinking.type != "disabled"


def stop_reason(event: Event) -> tuple[str, Optional[str]]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for the last event."""
    if event.finish_reason == "tool_calls":
        return "tool_use", None
    if event.finish_reason == "length":
        return "max_tokens", None
    if event.delta.stop_sequence is not None:
        return "stop_sequence", event.delta.stop_sequence
    return "end_turn", None


def _event(kind: str, **fields) -> tuple[str, dict]:
    return kind, {"type": kind, **fields}


async def _message_events(
    events: AsyncIterator[Event],
    *,
    model: str,
    input_tokens: int,
    thinking: bool,
    dropped: Optional[Dropped],
) -> AsyncIterator[tuple[str, dict]]:
    """Anthropic's stream events, as ``(event type, data)``; errors propagate.

    What the context window dropped is reported in the usage of ``message_start``
    and of ``message_delta``.
    """
    report = dropped_fields(dropped)
    start = Message(
        id=new_message_id(),
        model=model,
        content=[],
        usage=Usage(input_tokens=input_tokens, output_tokens=0, **report),
    )
    yield _event("message_start", message=start.model_dump())
    yield _event("ping")
    index, open_kind = -1, None
    async for e in events:
        parts = [("thinking", e.reasoning)] if thinking and e.reasoning else []
        parts += [("text", e.content)] if e.content else []
        for kind, text in parts:
            if kind != open_kind:
                if open_kind is not None:
                    yield _event("content_block_stop", index=index)
                index, open_kind = index + 1, kind
                block = TextBlock(text="") if kind == "text" else ThinkingBlock(thinking="")
                yield _event("content_block_start", index=index, content_block=block.model_dump())
            delta = (
                {"type": "text_delta", "text": text}
                if kind == "text"
                else {"type": "thinking_delta", "thinking": text}
            )
            yield _event("content_block_delta", index=index, delta=delta)
        for call in e.tool_calls:
            if open_kind is not None:
                yield _event("content_block_stop", index=index)
            index, open_kind = index + 1, None
            block = ToolUseBlock(id=tool_use_id(call.id), name=call.name, input={})
            yield _event("content_block_start", index=index, content_block=block.model_dump())
            yield _event(
                "content_block_delta",
                index=index,
                delta={"type": "input_json_delta", "partial_json": call.arguments},
            )
            yield _event("content_block_stop", index=index)
        if e.finish_reason is not None:
            if open_kind is not None:
                yield _event("content_block_stop", index=index)
            reason, sequence = stop_reason(e)
            yield _event(
                "message_delta",
                delta={"stop_reason": reason, "stop_sequence": sequence},
                usage={"output_tokens": e.delta.completion_tokens, **report},
            )
            yield _event("message_stop")


async def message_stream(
    events: AsyncIterator[Event],
    *,
    model: str,
    input_tokens: int,
    thinking: bool = True,
    dropped: Optional[Dropped] = None,
) -> AsyncIterator[dict]:
    """The streamed answer as server-sent events (``event`` and ``data``).

    A failure after the stream has started (a queue timeout included) arrives
    as an ``error`` event.
    """
    try:
        async for kind, data in _message_events(
            events, model=model, input_tokens=input_tokens, thinking=thinking, dropped=dropped
        ):
            yield {"event": kind, "data": json.dumps(data, ensure_ascii=False)}
    except Exception as exc:
        log.error("stream failed: %s", exc)
        yield {"event": "error", "data": json.dumps(anthropic_error_body(exc))}


async def message_fold(
    events: AsyncIterator[Event],
    *,
    model: str,
    input_tokens: int,
    thinking: bool = True,
    dropped: Optional[Dropped] = None,
) -> Message:
    """A non-streamed answer: the fold of the stream's events, as a client accumulates them."""
    message: dict = {}
    partial_json: dict[int, str] = {}
    async for kind, data in _message_events(
        events, model=model, input_tokens=input_tokens, thinking=thinking, dropped=dropped
    ):
        if kind == "message_start":
            message = data["message"]
        elif kind == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "input_json_delta":
                partial_json[data["index"]] = (
                    partial_json.get(data["index"], "") + delta["partial_json"]
                )
            else:
                field = "text" if delta["type"] == "text_delta" else "thinking"
                block[field] += delta[field]
        elif kind == "content_block_stop" and data["index"] in partial_json:
            message["content"][data["index"]]["input"] = json.loads(partial_json[data["index"]])
        elif kind == "message_delta":
            message.update(data["delta"])
            message["usage"]["output_tokens"] = data["usage"]["output_tokens"]
    return Message.model_validate(message)
