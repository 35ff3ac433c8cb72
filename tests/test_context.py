"""The sliding-window context: pure functions, tested with a fake token renderer."""

import pytest

from mlxserve.context import count_cut, drop_orphan_tool_results, fit_window, window_by_count
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
    # Full chat: 4 + 4 + 5 * 3 = 23 tokens; 25 - 8 leaves 17: the fewest drops would be two,
    # the block cut (half the 17-token budget) drops three.
    w = fit_window(CHAT, render=render_words, max_messages=0, context_tokens=25, completion_tokens=8)
    assert [m["content"] for m in w.messages] == ["be brief", "no emojis", "four", "five"]
    assert len(w.prompt_tokens) == 14
    assert w.dropped == 3


def test_fit_window_fits_and_keeps_at_least_half_the_budget():
    chat = [msg("system", "be brief")] + [
        msg("user" if i % 2 == 0 else "assistant", "w " * (1 + i % 3)) for i in range(40)
    ]
    for budget in range(40, 140):
        w = fit_window(chat, render=render_words, max_messages=0, context_tokens=budget, completion_tokens=5)
        used = len(w.prompt_tokens) + 5
        assert used <= budget
        # Half the budget, less one message (the cut falls between messages).
        assert w.dropped == 0 or used >= budget // 2 - 5, (budget, used)


def simulate(turns: int, **window) -> list[int]:
    """A chat growing by a user and an assistant message per turn: each turn's drop count."""
    chat, drops = [msg("system", "you are a helpful assistant")], []
    for turn in range(turns):
        chat.append(msg("user", f"question {turn} " + "word " * (turn % 5)))
        w = fit_window(chat, render=render_words, **window)
        drops.append(w.dropped)
        chat.append(msg("assistant", "answer " * (3 + turn % 7)))
    return drops


def cut_kept(drops: list[int]) -> float:
    """The share of turns (after the first) whose prompt starts like the previous turn's."""
    return sum(a == b for a, b in zip(drops, drops[1:])) / (len(drops) - 1)


def test_token_window_cut_stays_put_over_a_long_chat():
    drops = simulate(50, max_messages=0, context_tokens=200, completion_tokens=20)
    assert max(drops) > 0  # the window did slide
    assert drops == sorted(drops)
    assert cut_kept(drops) >= 0.8, drops


def test_message_window_cut_stays_put_over_a_long_chat():
    drops = simulate(50, max_messages=20, context_tokens=10_000, completion_tokens=20)
    assert max(drops) > 0
    assert cut_kept(drops) >= 0.8, drops


@pytest.mark.parametrize(
    "n,window,cut",
    [(5, 0, 0), (5, 5, 0), (6, 5, 2), (7, 5, 2), (8, 5, 4), (21, 20, 10), (30, 20, 10), (31, 20, 20), (4, 1, 3)],
)
def test_count_cut_drops_in_blocks_of_half_the_window(n, window, cut):
    assert count_cut(n, window) == cut


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
