"""An answer's parts: content, reasoning and tool calls, split out of the engine's text.

The engine yields plain text deltas. :class:`AnswerParser` runs them through
mlx-lm's own :func:`~mlx_lm.generate.make_text_state_machine` (the reasoning and
tool-call markers of the model's family) and its ``tokenizer.tool_parser``, and
yields :class:`Event` objects that every protocol formats in its own way.
"""

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Literal, Optional

from mlx_lm.generate import TextStateMachine, make_text_state_machine

from mlxserve.engine import Delta

log = logging.getLogger("mlxserve.parsing")

ReasoningMode = Literal["split", "inline", "hide"]


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call the model made.

    Attributes:
        id: ``call_`` and 24 hex digits, unique per call.
        name: The function's name.
        arguments: The arguments as a JSON object, as text (``"{}"`` when none).
    """

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Event:
    """One step of a parsed answer.

    Attributes:
        delta: The engine step behind this event: usage counts, logprobs and
            ``finish_reason`` as the engine reported them.
        content: New answer text.
        reasoning: New reasoning text (``split`` mode).
        tool_calls: Tool calls completed in this step.
        finish_reason: ``None`` until the last event; then ``"tool_calls"`` when
            the answer called a tool, else the engine's reason.
    """

    delta: Delta
    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: Optional[str] = None

    def then(self, later: "Event") -> "Event":
        """This event followed by ``later``, as one."""
        return Event(
            self.delta.then(later.delta),
            self.content + later.content,
            self.reasoning + later.reasoning,
            self.tool_calls + later.tool_calls,
            later.finish_reason,
        )


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def initial_state(tokenizer, prompt: list[int]) -> str:
    """Where the answer starts: inside a think block the prompt opened, or not.

    As mlx_lm.server decides it: a template may end the prompt with ``<think>``.
    """
    state = "normal"
    if tokenizer.has_thinking:
        if tokenizer.rfind_think_start(prompt) > tokenizer.rfind_think_end(prompt):
            state = "reasoning"
    return tokenizer.response_initial_state or state


class AnswerParser:
    """Splits one answer's text deltas into content, reasoning and tool calls.

    Args:
        tokenizer: mlx-lm's tokenizer wrapper (markers and tool parser).
        prompt: The prompt tokens (to see whether the template opened a think block).
        tools: The tools offered to the model (passed to parsers that need
            their schemas); ``None`` turns tool-call parsing off, so markup the
            model writes anyway stays in the content.
        reasoning: ``split`` (reasoning separate), ``inline`` (kept in the
            content with its markers) or ``hide`` (dropped).
        parallel: Whether several calls may be returned; ``False`` keeps the first.
    """

    def __init__(
        self,
        tokenizer,
        prompt: list[int],
        *,
        tools=None,
        reasoning: ReasoningMode = "split",
        parallel: bool = True,
    ):
        self.tokenizer = tokenizer
        self.tools = tools
        self.parallel = parallel
        self.parse_tools = tools is not None and tokenizer.tool_parser is not None
        self.reasoning = reasoning
        self.state = make_text_state_machine(tokenizer).make_state(initial_state(tokenizer, prompt))
        self.current = self.state[0]
        self.tool_text = ""
        self.called = False
        # Newlines that frame a think block ("<think>\n...\n</think>\n\n") are
        # layout, not text: dropped at the start of each part, held back at the end
        # of the reasoning until more reasoning follows.
        self.trim_start = True
        self.held_newlines = ""
        if self.current == "reasoning" and reasoning == "inline":
            self._pending_inline = tokenizer.think_start or ""
        else:
            self._pending_inline = ""

    def feed(self, delta: Delta) -> Event:
        """Parse the next engine delta."""
        if delta.finish_reason == "stop":
            # Whatever is held back at a natural end is a partial marker: drop it.
            self.state, segments = TextStateMachine.split(self.state, delta.text)
            self.state, _ = TextStateMachine.discard(self.state)
        else:
            self.state, segments = TextStateMachine.split(self.state, delta.text)
            if delta.finish_reason is not None:
                self.state, held, state = TextStateMachine.flush(self.state)
                segments.append((state, held))
        content, reasoning, calls = [self._pending_inline], [], []
        self._pending_inline = ""
        for state, text in segments:
            if state != self.current:
                self._transition(self.current, state, content, calls)
                self.current = state
            if state == "reasoning":
                if self.reasoning == "split":
                    reasoning.append(self._trimmed_reasoning(text))
                elif self.reasoning == "inline":
                    content.append(text)
            elif state == "tool":
                self.tool_text += text
            elif state == "normal":
                if self.trim_start and self.reasoning != "inline":
                    text = text.lstrip("\n")
                    self.trim_start = not text
                content.append(text)
            # Other states (a format's headers) carry no answer text.
        finish = delta.finish_reason
        if finish is not None:
            if self.current == "tool":  # a format with no end marker, or a cut-off call
                self._close_tool(content, calls, complete=finish == "stop")
            if self.current == "reasoning" and self.reasoning == "inline" and finish == "stop":
                content.append(self.tokenizer.think_end or "")
            if self.called and finish == "stop":
                finish = "tool_calls"
        return Event(delta, "".join(content), "".join(reasoning), tuple(calls), finish)

    def _trimmed_reasoning(self, text: str) -> str:
        if self.trim_start:
            text = text.lstrip("\n")
            self.trim_start = not text
        body = text.rstrip("\n")
        if not body:
            self.held_newlines += text
            return ""
        out = self.held_newlines + body
        self.held_newlines = text[len(body):]
        return out

    def _transition(self, old: str, new: str, content: list, calls: list) -> None:
        self.trim_start = True
        self.held_newlines = ""
        if self.reasoning == "inline":
            if new == "reasoning":
                content.append(self.tokenizer.think_start or "")
            elif old == "reasoning":
                content.append(self.tokenizer.think_end or "")
        if old == "tool":
            self._close_tool(content, calls, complete=True)

    def _close_tool(self, content: list, calls: list, *, complete: bool) -> None:
        """Turn the text of one tool block into calls, or give it back as content."""
        text, self.tool_text = self.tool_text, ""
        parsed = self._parse(text) if complete and self.parse_tools else None
        if parsed is None:
            tk = self.tokenizer
            end = tk.tool_call_end if complete else ""
            content.append(f"{tk.tool_call_start}{text}{end or ''}")
            return
        if not self.parallel:
            if self.called:
                log.info("dropped %d tool call(s): parallel_tool_calls is false", len(parsed))
                return
            parsed = parsed[:1]
        calls.extend(parsed)
        self.called = True

    def _parse(self, text: str) -> Optional[list[ToolCall]]:
        """The calls in one tool block, or ``None`` when it does not parse."""
        try:
            parsed = self.tokenizer.tool_parser(text, self.tools)
        except Exception as exc:  # every family's parser raises its own errors
            log.warning("the model's tool call did not parse (%s): %r", exc, text[:200])
            return None
        items = parsed if isinstance(parsed, list) else [parsed]
        # Some parsers fall back to a guess rather than raise: a name that is not
        # a tool offered, or arguments that are not an object, is not a call.
        offered = {tool.get("function", {}).get("name") for tool in self.tools}
        calls = []
        for item in items:
            if not isinstance(item, dict) or item.get("name") not in offered:
                log.warning("the model's tool call names no tool offered: %r", text[:200])
                return None
            arguments = _arguments_text(item.get("arguments"))
            if arguments is None:
                log.warning("the model's tool call arguments are not an object: %r", text[:200])
                return None
            calls.append(ToolCall(item.get("id") or new_call_id(), item["name"], arguments))
        return calls


def _arguments_text(arguments) -> Optional[str]:
    """A parsed call's arguments as JSON object text, or ``None`` when not an object."""
    if arguments is None or arguments == "":
        return "{}"
    if isinstance(arguments, str):  # some parsers keep the model's text when it is not JSON
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return json.dumps(arguments, ensure_ascii=False)
