"""Sliding-window chat context: which messages reach the prompt.

Pure functions over OpenAI-style message dicts; no MLX, no HTTP. The token
budget is checked through a ``render`` callable (messages -> prompt token ids)
so the exact chat template decides what fits.
"""

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

from mlxserve.errors import ContextLengthExceededError, MLXServeError

SYSTEM_ROLES = ("system", "developer")

Render = Callable[[list[dict]], list[int]]


@dataclass(frozen=True)
class Window:
    """The messages kept for the prompt, and the prompt they render to.

    Attributes:
        messages: The kept messages, in order.
        prompt_tokens: The chat-templated prompt of ``messages``.
        dropped: How many of the request's messages were left out.
    """

    messages: list[dict]
    prompt_tokens: list[int]
    dropped: int


def split_leading_system(messages: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """Split off the leading run of system/developer messages."""
    n = 0
    while n < len(messages) and messages[n].get("role") in SYSTEM_ROLES:
        n += 1
    return list(messages[:n]), list(messages[n:])


def drop_orphan_tool_results(messages: list[dict]) -> list[dict]:
    """Drop ``tool`` messages at the head of a cut conversation.

    A tool result always follows the assistant message that called the tool, so
    after cutting the oldest messages only leading tool messages can have lost
    their call.
    """
    start = 0
    while start < len(messages) and messages[start].get("role") == "tool":
        start += 1
    return messages[start:]


def window_by_count(messages: Sequence[dict], max_messages: int) -> list[dict]:
    """Keep the leading system/developer messages plus the last ``max_messages`` others.

    ``max_messages == 0`` keeps everything.
    """
    if max_messages <= 0:
        return list(messages)
    head, rest = split_leading_system(messages)
    return head + drop_orphan_tool_results(rest[-max_messages:])


def _protected_start(rest: list[dict]) -> int:
    """Index in ``rest`` from which nothing may be dropped: the last user turn onwards."""
    for i in range(len(rest) - 1, -1, -1):
        if rest[i].get("role") == "user":
            return i
    return max(len(rest) - 1, 0)


def fit_window(
    messages: Sequence[dict],
    *,
    render: Render,
    max_messages: int,
    context_tokens: int,
    completion_tokens: int,
) -> Window:
    """Apply the message window, then drop the oldest messages until the prompt fits.

    Args:
        messages: The request's messages.
        render: Renders messages to prompt token ids (the chat template).
        max_messages: The ``--max-context`` window (0 = unlimited).
        context_tokens: The token budget for prompt + completion.
        completion_tokens: Tokens reserved for the completion (the request's max_tokens).

    Returns:
        The kept messages and their prompt.

    Raises:
        ContextLengthExceededError: When even the system messages plus the last
            user turn do not fit.
    """
    head, rest = split_leading_system(window_by_count(messages, max_messages))

    def attempt(drop: int) -> tuple[list[dict], list[int]]:
        kept = head + drop_orphan_tool_results(rest[drop:])
        return kept, render(kept)

    def fits(tokens: list[int]) -> bool:
        return len(tokens) + completion_tokens <= context_tokens

    kept, tokens = attempt(0)
    if not fits(tokens):
        # Prompt length falls as more is dropped: binary-search the fewest drops that fit.
        most = _protected_start(rest)
        kept, tokens = attempt(most)
        if not fits(tokens):
            raise ContextLengthExceededError(context_tokens, len(tokens), completion_tokens)
        lo, hi = 1, most
        while lo < hi:
            mid = (lo + hi) // 2
            candidate = attempt(mid)
            if fits(candidate[1]):
                hi = mid
                kept, tokens = candidate  # always attempt(hi)
            else:
                lo = mid + 1
    return Window(messages=kept, prompt_tokens=tokens, dropped=len(messages) - len(kept))


@dataclass(frozen=True)
class Dropped:
    """What the window left out of a conversation, as reported to the client.

    Attributes:
        messages: Messages left out.
        tokens: Prompt tokens they took: the whole conversation's prompt minus
            the kept one (``None`` when the chat template rejects the whole
            conversation, which it need not render any more).
    """

    messages: int
    tokens: Optional[int]


def window_chat(
    messages: Sequence[dict],
    *,
    render: Render,
    max_messages: int,
    context_tokens: int,
    completion_tokens: int,
    on_overflow: Literal["drop", "error"] = "drop",
) -> tuple[Window, Optional[Dropped]]:
    """:func:`fit_window`, with the ``--on-overflow`` choice and a report of what it dropped.

    Args:
        on_overflow: ``"drop"`` drops the oldest messages until the prompt fits;
            ``"error"`` refuses a conversation whose ``max_messages`` window does
            not fit ``context_tokens`` (the ``--max-context`` window still applies).
        (the others as for :func:`fit_window`)

    Returns:
        The window, and what it dropped (``None`` when it kept every message).

    Raises:
        ContextLengthExceededError: The prompt does not fit (and may not be cut).
    """
    if on_overflow == "error":
        tokens = render(window_by_count(messages, max_messages))
        if len(tokens) + completion_tokens > context_tokens:
            raise ContextLengthExceededError(context_tokens, len(tokens), completion_tokens)
    window = fit_window(
        messages,
        render=render,
        max_messages=max_messages,
        context_tokens=context_tokens,
        completion_tokens=completion_tokens,
    )
    if not window.dropped:
        return window, None
    try:
        whole = len(render(list(messages)))
    except MLXServeError:
        return window, Dropped(window.dropped, None)
    return window, Dropped(window.dropped, whole - len(window.prompt_tokens))
