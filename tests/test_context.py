"""The sliding-window context: pure functions, tested with a fake token renderer."""

import pytest

from mlxserve.context import drop_orphan_tool_results, fit_window, window_by_count
from mlxserve.errors import ContextLengthExceededError


def msg(role, content="x", **extra):
    return {"role": role, "content": content, **extra}


def render_words(messages):
    """One token per word plus two per message: deterministic and monotone."""
    return [0] * sum(2 + len(m["content"].split()) for m in messages)


CHAT = [
    msg("system", "be brief"),
    msg("developer", "no emojis"),
    msg("user", "one"),
    msg("assistant", "two"),
    msg("user", "three"),
    msg("assistant", "four"),
    msg("user", "five"),
]


def test_count_window_keeps_leading_system_and_last_n():
    kept = window_by_count(CHAT, 3)
    assert [m["content"] for m in kept] == ["be brief", "no emojis", "three", "four", "five"]


def test_count_window_zero_keeps_everything():
    assert window_by_count(CHAT, 0) == CHAT


def test_count_window_never_keeps_orphaned_tool_results():
    chat = [
        msg("user", "weather?"),
        msg("assistant", "", tool_calls=[{"id": "c1"}]),
        msg("tool", "sunny", tool_call_id="c1"),
        msg("tool", "22C", tool_call_id="c1"),
        msg("user", "thanks"),
    ]
    # The last 3 would start with a tool result whose call was dropped.
    assert [m["content"] for m in window_by_count(chat, 3)] == ["thanks"]
    # With the call kept, its results stay.
    assert [m["role"] for m in window_by_count(chat, 4)] == ["assistant", "tool", "tool", "user"]


def test_drop_orphans_only_touches_the_head():
    chat = [msg("tool"), msg("user"), msg("assistant"), msg("tool")]
    assert drop_orphan_tool_results(chat) == chat[1:]


def test_fit_window_keeps_all_when_it_fits():
    w = fit_window(CHAT, render=render_words, max_messages=0, context_tokens=100, completion_tokens=10)
    assert w.messages == CHAT and w.dropped == 0
    assert len(w.prompt_tokens) == len(render_words(CHAT))


def test_fit_window_drops_oldest_non_system_until_prompt_plus_completion_fits():
    # Full chat: 4 + 4 + 5 * 3 = 23 tokens; 25 - 8 leaves 17, reached by dropping two.
    w = fit_window(CHAT, render=render_words, max_messages=0, context_tokens=25, completion_tokens=8)
    assert [m["content"] for m in w.messages] == ["be brief", "no emojis", "three", "four", "five"]
    assert len(w.prompt_tokens) == 17
    assert w.dropped == 2


def test_fit_window_drops_the_fewest_messages():
    for budget in range(14, 40):
        w = fit_window(CHAT, render=render_words, max_messages=0, context_tokens=budget, completion_tokens=0)
        assert len(w.prompt_tokens) <= budget
        # Keeping one more message would not fit.
        head = w.messages[:2]
        dropped_tail = CHAT[2:][: len(CHAT) - len(w.messages)]
        if dropped_tail:
            bigger = head + [dropped_tail[-1]] + w.messages[2:]
            assert len(render_words(bigger)) > budget


def test_fit_window_applies_count_window_first():
    w = fit_window(CHAT, render=render_words, max_messages=1, context_tokens=100, completion_tokens=0)
    assert [m["content"] for m in w.messages] == ["be brief", "no emojis", "five"]
    assert w.dropped == 4


def test_fit_window_last_user_message_too_long_is_an_openai_style_error():
    chat = [msg("system", "sys"), msg("user", "word " * 50)]
    with pytest.raises(ContextLengthExceededError) as info:
        fit_window(chat, render=render_words, max_messages=0, context_tokens=40, completion_tokens=10)
    err = info.value
    assert err.code == "context_length_exceeded" and err.param == "messages"
    assert err.status_code == 400
    assert err.message.startswith(
        "This model's maximum context length is 40 tokens. However, your messages resulted in 65 tokens"
    )


def test_fit_window_keeps_the_turn_after_the_last_user_message():
    chat = [
        msg("user", "old " * 20),
        msg("user", "weather?"),
        msg("assistant", "", tool_calls=[{"id": "c1"}]),
        msg("tool", "sunny", tool_call_id="c1"),
    ]
    w = fit_window(chat, render=render_words, max_messages=0, context_tokens=12, completion_tokens=0)
    assert [m["role"] for m in w.messages] == ["user", "assistant", "tool"]
