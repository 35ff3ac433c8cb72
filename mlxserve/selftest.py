"""Startup self-test: does this model's tool-call and reasoning format survive a round trip?

After load, a chat with one tool call and one thinking turn is rendered through
the model's own chat template, and the answer parts the template writes are
parsed back with the same parsers that serve requests (:class:`AnswerParser`:
mlx-lm's markers and ``tokenizer.tool_parser``). Each feature is then

- ``ok``: the parser reads back exactly what the template wrote;
- ``unsupported``: the model has no such format (no tool parser, a template that
  ignores tools, no think markers);
- ``broken``: the model claims the format, but the template fails on it or the
  parser cannot read the template's own output, so clients would fail.

Tokenizer work only, no generation.
"""

import json
import logging
from dataclasses import dataclass
from typing import Literal

from mlxserve.engine import Delta
from mlxserve.parsing import AnswerParser, initial_state

log = logging.getLogger("mlxserve.selftest")

Status = Literal["ok", "unsupported", "broken"]

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
ARGUMENTS = {"city": "Paris"}
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ARGUMENTS},
        }
    ],
}
TOOL_RESULT = {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'}
THOUGHT = "The user asks for a sum. 2 plus 3 makes 5."
ANSWER = "The answer is 5."


@dataclass(frozen=True)
class SelfTest:
    """What the self-test found for each feature, with a line saying why."""

    tool_calling: Status
    tool_calling_detail: str
    reasoning: Status
    reasoning_detail: str


def run_selftest(tokenizer) -> SelfTest:
    """Test ``tokenizer``'s (mlx-lm's wrapper) tool-call and reasoning round trips; never raises."""
    tools, tools_detail = _guarded(check_tool_calling, tokenizer)
    thinking, thinking_detail = _guarded(check_reasoning, tokenizer)
    result = SelfTest(tools, tools_detail, thinking, thinking_detail)
    for name, status, detail in (
        ("tool calling", tools, tools_detail),
        ("reasoning", thinking, thinking_detail),
    ):
        level = logging.WARNING if status == "broken" else logging.INFO
        log.log(level, "self-test: %s %s: %s", name, status, detail)
    return result


def _guarded(check, tokenizer) -> tuple[Status, str]:
    try:
        return check(tokenizer)
    except Exception as exc:  # a template or parser can fail in any way
        return "broken", f"{type(exc).__name__}: {exc}"


def _render(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def _parse(tokenizer, prompt: str, answer: str, tools=None):
    """``answer`` read by the serving parser after ``prompt``, as one finished delta."""
    parser = AnswerParser(tokenizer, tokenizer.encode(prompt, add_special_tokens=False), tools=tools)
    return parser.feed(Delta(answer, "stop", 0, 0))


def check_tool_calling(tokenizer) -> tuple[Status, str]:
    """Render a tool call with the template, then parse it back with the model's tool parser."""
    if tokenizer.tool_parser is None:
        return "unsupported", "mlx-lm knows no tool-call format for this model's chat template"
    tools = [TOOL]
    prompt = _render(tokenizer, [QUESTION], tools=tools, add_generation_prompt=True)
    if "get_weather" not in prompt:
        return "unsupported", "the chat template leaves the tools out of the prompt"
    chat = _render(tokenizer, [QUESTION, CALL, TOOL_RESULT], tools=tools)
    start, end = tokenizer.tool_call_start, tokenizer.tool_call_end
    after_question = chat.index(QUESTION["content"]) + len(QUESTION["content"])
    first = chat.find(start, after_question)
    if first < 0:
        return "broken", f"the template writes no {start!r} for an assistant's tool call"
    # The call as the model would generate it: from its start marker to its end marker.
    stop = chat.find(end, first + len(start)) if end else -1
    sample = chat[first : stop + len(end)] if stop >= 0 else chat[first:]
    event = _parse(tokenizer, prompt, sample, tools=tools)
    calls = [(c.name, json.loads(c.arguments)) for c in event.tool_calls]
    if calls != [("get_weather", ARGUMENTS)]:
        return "broken", f"the tool parser read {calls or 'no call'} from the template's {sample!r}"
    return "ok", f"{start!r}...{end!r} round-trips through {tokenizer.tool_parser.__module__}"


def check_reasoning(tokenizer) -> tuple[Status, str]:
    """Render a thinking turn with the template, then split a think block off an answer."""
    if not tokenizer.has_thinking:
        return "unsupported", "the model has no think markers"
    start, end = tokenizer.think_start, tokenizer.think_end
    thinking_turn = {
        "role": "assistant",
        "content": f"{start}\n{THOUGHT}\n{end}\n\n{ANSWER}",
        "reasoning_content": THOUGHT,
    }
    question = {"role": "user", "content": "What is 2+3?"}
    _render(tokenizer, [question, thinking_turn, question], add_generation_prompt=True)
    prompt = _render(tokenizer, [question], add_generation_prompt=True)
    # A template may open the think block itself (the prompt ends inside it).
    prompt_tokens = tokenizer.encode(prompt, add_special_tokens=False)
    opened = initial_state(tokenizer, prompt_tokens) == "reasoning"
    sample = f"{THOUGHT}\n{end}\n\n{ANSWER}" if opened else f"{start}\n{THOUGHT}\n{end}\n\n{ANSWER}"
    event = _parse(tokenizer, prompt, sample)
    if (event.reasoning, event.content) != (THOUGHT, ANSWER):
        return "broken", (
            f"{start!r}...{end!r} split {sample!r} into reasoning {event.reasoning!r} "
            f"and content {event.content!r}"
        )
    return "ok", f"{start!r}...{end!r} split off the answer"
