"""Parsed answers as Responses API output: the event sequence, and the response as its fold.

The parsed :class:`~mlxserve.parsing.Event` stream becomes the Responses event
sequence (:class:`ResponseBuilder`); a non-streamed response is the fold of
that same sequence, so both agree item for item.
"""

import json
import logging
import time
from typing import AsyncIterator, Callable, Optional

from mlxserve.context import Dropped, dropped_fields
from mlxserve.errors import InternalError, MLXServeError
from mlxserve.parsing import Event, ToolCall
from mlxserve.responses_request import new_id
from mlxserve.schemas.responses import (
    FunctionCallOutput,
    IncompleteDetails,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ReasoningOutput,
    ReasoningText,
    Response,
    ResponseError,
    ResponsesRequest,
    ResponseUsage,
    SummaryText,
)

log = logging.getLogger("mlxserve.responses")


def new_response(body: ResponsesRequest, model: str) -> Response:
    """The in-progress response for ``body``: its id and the request settings it echoes."""
    choice = body.tool_choice or "auto"
    return Response(
        id=new_id("resp"),
        created_at=int(time.time()),
        status="in_progress",
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        model=model,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        reasoning=(
            body.reasoning.model_dump() if body.reasoning else {"effort": None, "summary": None}
        ),
        store=body.store is not False,
        temperature=body.temperature,
        text=(
            {"format": (body.text.format.model_dump(exclude_none=True, by_alias=True))}
            if body.text and body.text.format
            else {"format": {"type": "text"}}
        ),
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(exclude_none=True),
        tools=[t.model_dump(exclude_none=True) for t in body.tools or []],
        top_p=body.top_p,
        user=body.user,
        metadata=body.metadata or {},
    )


class ResponseBuilder:
    """Turns one answer's events into the Responses event sequence, building the response.

    Each method returns the events (dicts, each with its ``sequence_number``)
    that the step produces; :attr:`response` is the response so far. Items open
    as the answer moves to them (reasoning, message text, function calls) and
    close when it moves on or ends.

    Args:
        response: The in-progress response (:func:`new_response`).
        count_tokens: Tokens in a text (for ``reasoning_tokens``: counting the
            reasoning text itself does not depend on how the steps were batched).
        summary: Stream reasoning as summary text (``reasoning.summary`` was asked).
        dropped: What the context window left out (reported in ``usage``).
    """

    def __init__(
        self,
        response: Response,
        *,
        count_tokens: Callable[[str], int],
        summary: bool = False,
        dropped: Optional[Dropped] = None,
    ):
        self.response = response
        self.count_tokens = count_tokens
        self.summary = summary
        self.dropped = dropped
        self.sequence = 0
        self.current: Optional[OutputMessage | ReasoningOutput] = None
        self.pieces: list[str] = []  # the current item's text so far
        self.reasoning: list[str] = []  # every reasoning piece, for reasoning_tokens

    def _event(self, type: str, **fields) -> dict:
        event = {"type": type, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self) -> dict:
        return self.response.model_dump(mode="json")

    @property
    def _index(self) -> int:
        return len(self.response.output) - 1

    def start(self) -> list[dict]:
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def feed(self, event: Event) -> list[dict]:
        """The events for the next step of the answer (the last ones end the response)."""
        out = []
        if event.reasoning:
            out += self._text(ReasoningOutput, event.reasoning)
        if event.content:
            out += self._text(OutputMessage, event.content)
        for call in event.tool_calls:
            out += self._close() + self._call(call)
        if event.finish_reason is not None:
            out += self._finish(event)
        return out

    def fail(self, exc: BaseException) -> list[dict]:
        """The events for a failure once the stream started: ``error``, then ``response.failed``."""
        if not isinstance(exc, MLXServeError):
            log.error("response stream failed: %s", exc)
            exc = InternalError(f"The generation failed: {exc}")
        self.response.status = "failed"
        self.response.error = ResponseError(code="server_error", message=exc.message)
        return [
            self._event("error", code=exc.code, message=exc.message, param=exc.param),
            self._event("response.failed", response=self._snapshot()),
        ]

    def _text(self, kind, text: str) -> list[dict]:
        out = []
        if not isinstance(self.current, kind):
            out += self._close() + self._open(kind)
        self.pieces.append(text)
        if kind is ReasoningOutput:
            self.reasoning.append(text)
        where = dict(item_id=self.current.id, output_index=self._index)
        if kind is OutputMessage:
            out.append(
                self._event(
                    "response.output_text.delta", **where, content_index=0, delta=text, logprobs=[]
                )
            )
        elif self.summary:
            out.append(
                self._event(
                    "response.reasoning_summary_text.delta", **where, summary_index=0, delta=text
                )
            )
        else:
            out.append(
                self._event("response.reasoning_text.delta", **where, content_index=0, delta=text)
            )
        return out

    def _open(self, kind) -> list[dict]:
        if kind is OutputMessage:
            item = OutputMessage(id=new_id("msg"), status="in_progress", content=[])
        else:
            item = ReasoningOutput(id=new_id("rs"), status="in_progress", summary=[], content=[])
        self.response.output.append(item)
        self.current, self.pieces = item, []
        where = dict(item_id=item.id, output_index=self._index)
        out = [
            self._event(
                "response.output_item.added", output_index=self._index, item=item.model_dump()
            )
        ]
        if kind is OutputMessage:
            part = OutputText(text="").model_dump()
            out.append(
                self._event("response.content_part.added", **where, content_index=0, part=part)
            )
        elif self.summary:
            part = SummaryText(text="").model_dump()
            out.append(
                self._event(
                    "response.reasoning_summary_part.added", **where, summary_index=0, part=part
                )
            )
        else:
            part = ReasoningText(text="").model_dump()
            out.append(
                self._event("response.content_part.added", **where, content_index=0, part=part)
            )
        return out

    def _close(self, status: str = "completed") -> list[dict]:
        item, text = self.current, "".join(self.pieces)
        if item is None:
            return []
        self.current = None
        where = dict(item_id=item.id, output_index=self._index)
        item.status = status
        if isinstance(item, OutputMessage):
            part = OutputText(text=text)
            item.content = [part]
            out = [
                self._event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                ),
                self._event(
                    "response.content_part.done", **where, content_index=0, part=part.model_dump()
                ),
            ]
        else:
            item.content = [ReasoningText(text=text)]
            if self.summary:
                item.summary = [SummaryText(text=text)]
                out = [
                    self._event(
                        "response.reasoning_summary_text.done", **where, summary_index=0, text=text
                    ),
                    self._event(
                        "response.reasoning_summary_part.done",
                        **where,
                        summary_index=0,
                        part=item.summary[0].model_dump(),
                    ),
                ]
            else:
                out = [
                    self._event(
                        "response.reasoning_text.done", **where, content_index=0, text=text
                    ),
                    self._event(
                        "response.content_part.done",
                        **where,
                        content_index=0,
                        part=item.content[0].model_dump(),
                    ),
                ]
        return out + [
            self._event(
                "response.output_item.done", output_index=self._index, item=item.model_dump()
            )
        ]

    def _call(self, call: ToolCall) -> list[dict]:
        item = FunctionCallOutput(
            id=new_id("fc"), call_id=call.id, name=call.name, arguments="", status="in_progress"
        )
        self.response.output.append(item)
        where = dict(item_id=item.id, output_index=self._index)
        added = self._event(
            "response.output_item.added", output_index=self._index, item=item.model_dump()
        )
        item.arguments, item.status = call.arguments, "completed"
        return [
            added,
            self._event("response.function_call_arguments.delta", **where, delta=call.arguments),
            self._event(
                "response.function_call_arguments.done",
                **where,
                name=call.name,
                arguments=call.arguments,
            ),
            self._event(
                "response.output_item.done", output_index=self._index, item=item.model_dump()
            ),
        ]

    def _finish(self, event: Event) -> list[dict]:
        truncated = event.finish_reason == "length"
        out = []
        if not self.response.output:  # an empty answer is still a message
            out += self._open(OutputMessage)
        out += self._close("incomplete" if truncated else "completed")
        response = self.response
        response.status = "incomplete" if truncated else "completed"
        response.incomplete_details = (
            IncompleteDetails(reason="max_output_tokens") if truncated else None
        )
        response.completed_at = int(time.time())
        prompt, completion = event.delta.prompt_tokens, event.delta.completion_tokens
        response.usage = ResponseUsage(
            input_tokens=prompt,
            output_tokens=completion,
            total_tokens=prompt + completion,
            output_tokens_details=OutputTokensDetails(
                reasoning_tokens=self.count_tokens("".join(self.reasoning)) if self.reasoning else 0
            ),
            **dropped_fields(self.dropped),
        )
        kind = "response.incomplete" if truncated else "response.completed"
        return out + [self._event(kind, response=self._snapshot())]


def sse(event: dict) -> dict:
    """One event as SSE, named by its type as OpenAI sends it."""
    return {"event": event["type"], "data": json.dumps(event, ensure_ascii=False)}


async def response_stream(
    events: AsyncIterator[Event], builder: ResponseBuilder, *, on_done: Callable[[Response], None]
) -> AsyncIterator[dict]:
    """The SSE events of a streamed response; ``on_done`` gets the finished response."""
    try:
        for event in builder.start():
            yield sse(event)
        async for e in events:
            for event in builder.feed(e):
                yield sse(event)
    except Exception as exc:
        for event in builder.fail(exc):
            yield sse(event)
        return
    on_done(builder.response)


async def response_fold(events: AsyncIterator[Event], builder: ResponseBuilder) -> Response:
    """A non-streamed response: the fold of the same event sequence."""
    builder.start()
    async for e in events:
        builder.feed(e)
    return builder.response
