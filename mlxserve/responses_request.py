"""Responses API requests as chat completions requests.

Input items (messages, function calls and their outputs) become chat messages,
``tools`` / ``tool_choice`` / ``text.format`` their chat completions forms, so a
Responses request runs on the one chat path, gate and window.
"""

import uuid

from pydantic import TypeAdapter, ValidationError

from mlxserve.errors import InvalidRequestError
from mlxserve.schemas.openai import ChatCompletionRequest
from mlxserve.schemas.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    MessageItem,
    ResponsesRequest,
)

input_items = TypeAdapter(list[InputItem])


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def to_messages(items: list) -> list[dict]:
    """Input items as chat messages: consecutive function calls join one assistant turn.

    Reasoning items are left out: chat templates drop earlier turns' reasoning.
    """
    out: list[dict] = []
    for item in items:
        if isinstance(item, MessageItem):
            out.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
    return out


def stored_items(items: list) -> list[dict]:
    """Input items as the store keeps and lists them: wire dicts with an id, text as parts."""
    out = []
    for item in items:
        data = item.model_dump(exclude_none=True)
        if isinstance(item, MessageItem):
            kind = "output_text" if item.role == "assistant" else "input_text"
            data["content"] = [{"type": kind, "text": item.text()}]
            data["status"] = "completed"
        data.setdefault("id", new_id("msg" if isinstance(item, MessageItem) else "item"))
        out.append(data)
    return out


# Where a chat completions field came from, for error messages.
_PARAMS = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
}


def chat_request(body: ResponsesRequest, history: list) -> ChatCompletionRequest:
    """The chat completions request that answers ``body``.

    Args:
        body: The Responses request.
        history: Earlier items (from ``previous_response_id``), before ``body``'s input.

    Raises:
        InvalidRequestError: The translated request is invalid (named by the
            Responses parameter).
    """
    messages = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    messages += to_messages(history + body.items())
    data: dict = {
        "model": body.model,
        "messages": messages,
        "max_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "parallel_tool_calls": body.parallel_tool_calls,
        "reasoning_effort": body.reasoning.effort if body.reasoning else None,
    }
    if body.tools:
        data["tools"] = [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
            for t in body.tools
        ]
    choice = body.tool_choice
    if choice is not None and not isinstance(choice, str):
        data["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice == "required" or (choice and body.tools):
        # "auto" and "none" without tools mean nothing: OpenAI accepts them.
        data["tool_choice"] = choice
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.type == "json_object":
        data["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema = fmt.model_dump(exclude={"type"}, exclude_none=True, by_alias=True)
        data["response_format"] = {"type": "json_schema", "json_schema": schema}
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first.get("loc") else "input"
        param = _PARAMS.get(field, field)
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidRequestError(f"Invalid value for '{param}': {message}", param=param) from None
