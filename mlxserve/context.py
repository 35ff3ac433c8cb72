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


def count_cut(n: int, max_messages: int) -> int:
    """How many of ``n`` non-system messages the ``--max-context`` window drops.

    None while ``n <= max_messages``; beyond it, a multiple of half the window,
    so that the cut (and with it the start of the prompt, which the prompt
    cache reuses) moves once every ``max_messages / 2`` new messages rather than
    every turn. Between half the window and all of it is kept.
    """
    if max_messages <= 0 or n <= max_messages:
        return 0
    block = max(1, max_messages // 2)
    return -(-(n - max_messages) // block) * block


def fit_window(
    messages: Sequence[dict],
    *,
    render: Render,
    max_messages: int,
    context_tokens: int,
    completion_tokens: int,
) -> Window:
    """Apply the message window, then drop the oldest messages until the prompt fits.

    Messages are dropped in blocks, so that successive turns of a conversation
    keep the same start and the prompt cache keeps hitting: the message window
    cuts at multiples of half its size (:func:`count_cut`), and the token
    window cuts where the dropped messages reach a multiple of half the prompt
    budget, which leaves between half the budget and all of it. Both cuts
    depend only on the oldest messages, which do not change as a chat grows.

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
    head, rest = split_leading_system(messages)
    most = _protected_start(rest)
    first = min(count_cut(len(rest), max_messages), most)

    def attempt(drop: int) -> tuple[list[dict], list[int]]:
        kept = head + drop_orphan_tool_results(rest[drop:])
        return kept, render(kept)

    def fits(tokens: list[int]) -> bool:
        return len(tokens) + completion_tokens <= context_tokens

    kept, tokens = attempt(first)
    if not fits(tokens):
        kept, tokens = attempt(most)
        if not fits(tokens):
            raise ContextLengthExceededError(context_tokens, len(tokens), completion_tokens)
        # Prompt length falls as more is dropped: binary-search the fewest drops that fit.
        lo, hi = first + 1, most
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(attempt(mid)[1]):
                hi = mid
            else:
                lo = mid + 1
        step = max(1, (context_tokens - completion_tokens) // 2)
        kept, tokens = attempt(_block_cut(head, rest, lo, most, step, render))
    return Window(messages=kept, prompt_tokens=tokens, dropped=len(messages) - len(kept))


def _block_cut(head: list[dict], rest: list[dict], fewest: int, most: int, step: int, render: Render) -> int:
    """The first cut at or after ``fewest`` where the dropped messages reach a multiple of ``step`` tokens.

    ``dropped(d)``, the length of the oldest ``d`` messages rendered, grows with
    ``d`` and depends only on them; so the cuts it defines stay where they are
    as the conversation grows. Falls back to ``fewest`` where no such cut
    exists before ``most`` or the template will not render a part of the chat.
    """

    def dropped(d: int) -> int:
        return len(render(head + rest[:d])) if d > 0 else 0

    try:
        target = (dropped(fewest - 1) // step + 1) * step
        if dropped(most) < target:
            return fewest
        lo, hi = fewest, most
        while lo < hi:
            mid = (lo + hi) // 2
            if dropped(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo
    except MLXServeError:
        return fewest


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


def dropped_fields(dropped: Optional[Dropped]) -> dict:
    """The usage extension that reports ``dropped``, as every protocol names it.

    Empty when nothing was dropped: the fields' absence means the whole
    conversation was seen. The token count is left out when it is unknown.
    """
    if dropped is None:
        return {}
    fields = {"context_dropped_messages": dropped.messages, "context_dropped_tokens": dropped.tokens}
    return {k: v for k, v in fields.items() if v is not None}


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
