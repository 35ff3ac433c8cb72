"""Ollama <-> the internal chat and completion paths.

:func:`chat_request`, :func:`generate_request` and :func:`raw_request` translate
Ollama requests (``options`` included) into the internal requests;
:func:`ndjson` streams the answer's chunks, one JSON object per line, and
:func:`fold` (``stream: false``) is the fold of those same chunks. The last
chunk carries ``done_reason`` and Ollama's counts and durations, measured here.
"""

import json
import logging
import time
from datetime import datetime, timezone
from typing import AsyncIterator, Callable, Literal, Optional

from mlxserve.context import Dropped, dropped_fields
from mlxserve.engine import Delta
from mlxserve.errors import InvalidRequestError
from mlxserve.model_card import ModelCard, parameter_size
from mlxserve.parsing import Event
from mlxserve.protocols import ollama_error_body, translated
from mlxserve.schemas.ollama import (
    ChatRequest,
    ChatResponse,
    GenerateRequest,
    GenerateResponse,
    ListedModel,
    ModelDetails,
    Options,
    ResponseMessage,
    ResponseToolCall,
    RunningModel,
    Timings,
    ToolCallFunction,
)
from mlxserve.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

log = logging.getLogger("mlxserve.ollama")

# The Ollama release whose API these routes follow; clients gate features (tools,
# thinking) on the version /api/version reports.
OLLAMA_API_VERSION = "0.12.0"
# A loaded model stays loaded while the server runs.
NEVER_EXPIRES = "9999-12-31T23:59:59Z"

Shape = Literal["chat", "generate"]


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _sampling(options: Optional[Options], max_tokens_cap: int) -> dict:
    """Internal sampling fields for Ollama ``options``."""
    if options is None:
        return {}
    out = {
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "min_p": options.min_p,
        "seed": options.seed,
        "stop": options.stop,
        "repetition_penalty": options.repeat_penalty,
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
    }
    if options.num_predict is not None:
        out["max_tokens"] = options.num_predict if options.num_predict > 0 else max_tokens_cap
    return {k: v for k, v in out.items() if v is not None}


def _response_format(fmt) -> Optional[dict]:
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    return None


def _chat_fields(body, messages: list[dict], max_tokens_cap: int) -> dict:
    data = {"model": body.model, "messages": messages, **_sampling(body.options, max_tokens_cap)}
    response_format = _response_format(body.format)
    if response_format is not None:
        data["response_format"] = response_format
    return data


def chat_request(body: ChatRequest, max_tokens_cap: int) -> ChatCompletionRequest:
    """The internal chat request for ``/api/chat``.

    Args:
        body: The Ollama request (with at least one message).
        max_tokens_cap: The server's cap, which ``num_predict`` -1 or -2 asks for.
    """
    messages = []
    for m in body.messages:
        message: dict = {"role": m.role, "content": m.content}
        if m.tool_calls:
            message["tool_calls"] = [
                {
                    "type": "function",
                    "function": {
                        "name": c.function.name,
                        "arguments": json.dumps(c.function.arguments),
                    },
                }
                for c in m.tool_calls
            ]
        if m.role == "tool" and m.tool_name:
            message["name"] = m.tool_name
        messages.append(message)
    data = _chat_fields(body, messages, max_tokens_cap)
    if body.tools:
        data["tools"] = [t.model_dump(exclude_none=True) for t in body.tools]
    return translated(ChatCompletionRequest, data)


def generate_request(body: GenerateRequest, max_tokens_cap: int) -> ChatCompletionRequest:
    """The internal chat request for ``/api/generate``: the prompt as a user message, templated."""
    messages = [{"role": "system", "content": body.system}] if body.system else []
    messages.append({"role": "user", "content": body.prompt})
    return translated(ChatCompletionRequest, _chat_fields(body, messages, max_tokens_cap))


def embedding_request(model: Optional[str], inputs, dimensions=None) -> EmbeddingRequest:
    """The internal embedding request for ``/api/embed`` or ``/api/embeddings``."""
    return translated(EmbeddingRequest, {"model": model, "input": inputs, "dimensions": dimensions})


def raw_request(body: GenerateRequest, max_tokens_cap: int) -> CompletionRequest:
    """The internal completion request for ``/api/generate`` with ``raw: true`` (no template)."""
    if _response_format(body.format) is not None:
        raise InvalidRequestError(
            "format needs the chat template: it cannot be used with raw: true.", param="format"
        )
    data = {"model": body.model, "prompt": body.prompt, **_sampling(body.options, max_tokens_cap)}
    return translated(CompletionRequest, data)


async def raw_events(deltas: AsyncIterator[Delta]) -> AsyncIterator[Event]:
    """A raw generation's deltas as events: all of the text is the answer."""
    async for d in deltas:
        yield Event(d, content=d.text, finish_reason=d.finish_reason)


class Timer:
    """Measures one request for Ollama's durations (nanoseconds).

    ``load_duration`` runs from the request's arrival to its admission (chat
    template, window, waiting for a slot); ``prompt_eval_duration`` from then to
    the first token; ``eval_duration`` from the first token to the last.
    """

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns):
        self.clock = clock
        self.started = clock()
        self.admitted = self.started

    def admit(self) -> None:
        self.admitted = self.clock()

    def timings(self, first: int, last: int, delta: Delta) -> Timings:
        return Timings(
            total_duration=last - self.started,
            load_duration=self.admitted - self.started,
            prompt_eval_count=delta.prompt_tokens,
            prompt_eval_duration=first - self.admitted,
            eval_count=delta.completion_tokens,
            eval_duration=last - first,
        )


def _chunk(
    shape: Shape,
    model: str,
    content: str = "",
    thinking: str = "",
    calls=(),
    *,
    done_reason: Optional[str] = None,
    timings: Optional[Timings] = None,
    dropped: Optional[Dropped] = None,
) -> dict:
    common = dict(
        model=model,
        created_at=now_rfc3339(),
        done=done_reason is not None,
        done_reason=done_reason,
        **(timings.model_dump() if timings else {}),
        **dropped_fields(dropped),
    )
    if shape == "generate":
        return GenerateResponse(response=content, thinking=thinking or None, **common).model_dump(
            exclude_none=True
        )
    message = ResponseMessage(
        content=content,
        thinking=thinking or None,
        tool_calls=[
            ResponseToolCall(
                function=ToolCallFunction(name=c.name, arguments=json.loads(c.arguments))
            )
            for c in calls
        ]
        or None,
    )
    return ChatResponse(message=message, **common).model_dump(exclude_none=True)


def load_response(shape: Shape, model: str) -> dict:
    """The answer to a request with nothing to generate: the model is loaded."""
    return _chunk(shape, model, done_reason="load")


async def _chunks(
    events: AsyncIterator[Event],
    *,
    shape: Shape,
    model: str,
    timer: Timer,
    think: bool,
    dropped: Optional[Dropped],
) -> AsyncIterator[dict]:
    """The answer's chunks; errors propagate.

    The last has ``done``, the reason, the timings and what the context window
    dropped (``context_dropped_messages`` and ``context_dropped_tokens``, only
    when it dropped something).
    """
    first = None
    async for e in events:
        now = timer.clock()
        if first is None:
            first = now
        thinking = e.reasoning if think else ""
        if e.content or thinking or e.tool_calls:
            yield _chunk(shape, model, e.content, thinking, e.tool_calls)
        if e.finish_reason is not None:
            timings = timer.timings(first, max(now, first + 1), e.delta)
            reason = "length" if e.finish_reason == "length" else "stop"
            yield _chunk(shape, model, done_reason=reason, timings=timings, dropped=dropped)


async def ndjson(
    events: AsyncIterator[Event],
    *,
    shape: Shape,
    model: str,
    timer: Timer,
    think: bool = True,
    dropped: Optional[Dropped] = None,
) -> AsyncIterator[str]:
    """The streamed answer: one JSON object per line; a failure is an ``{"error"}`` line."""
    chunks = _chunks(events, shape=shape, model=model, timer=timer, think=think, dropped=dropped)
    try:
        async for chunk in chunks:
            yield json.dumps(chunk, ensure_ascii=False) + "\n"
    except Exception as exc:
        log.error("stream failed: %s", exc)
        yield json.dumps(ollama_error_body(exc)) + "\n"


async def fold(
    events: AsyncIterator[Event],
    *,
    shape: Shape,
    model: str,
    timer: Timer,
    think: bool = True,
    dropped: Optional[Dropped] = None,
) -> dict:
    """The non-streamed answer: the stream's chunks merged into the last one."""
    content, thinking, calls, last = [], [], [], {}
    chunks = _chunks(events, shape=shape, model=model, timer=timer, think=think, dropped=dropped)
    async for chunk in chunks:
        part = chunk.get("message", chunk)
        content.append(part.get("content", part.get("response", "")))
        thinking.append(part.get("thinking", ""))
        calls += part.get("tool_calls", [])
        last = chunk
    text, reasoning = "".join(content), "".join(thinking)
    if shape == "chat":
        last["message"] = {"role": "assistant", "content": text}
        if reasoning:
            last["message"]["thinking"] = reasoning
        if calls:
            last["message"]["tool_calls"] = calls
    else:
        last["response"] = text
        if reasoning:
            last["thinking"] = reasoning
    return last


def _details(card: ModelCard) -> ModelDetails:
    return ModelDetails(
        family=card.family,
        families=[card.family],
        parameter_size=parameter_size(card.parameters),
        quantization_level=card.quantization,
    )


def listed_model(name: str, card: ModelCard) -> ListedModel:
    return ListedModel(
        name=name,
        model=name,
        modified_at=card.modified_at,
        size=card.size,
        digest=card.digest,
        details=_details(card),
    )


def running_model(name: str, card: ModelCard, context_length: int) -> RunningModel:
    return RunningModel(
        **listed_model(name, card).model_dump(),
        expires_at=NEVER_EXPIRES,
        size_vram=card.size,
        context_length=context_length,
    )


def show(card: ModelCard, *, context_length: int) -> dict:
    """The ``/api/show`` body: details, the chat template, capabilities and ``model_info``."""
    return {
        "modelfile": "",
        "parameters": "\n".join(f"{k} {v}" for k, v in card.sampling.items()),
        "template": card.template,
        "details": _details(card).model_dump(),
        "model_info": {
            "general.architecture": card.family,
            "general.parameter_count": card.parameters,
            f"{card.family}.context_length": context_length,
        },
        "capabilities": list(card.capabilities),
        "modified_at": card.modified_at,
    }
