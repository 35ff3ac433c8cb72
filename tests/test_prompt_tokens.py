"""Prompt tokenization that reuses an earlier prompt's tokens (mlxserve.prompt_tokens)."""

import logging
import re

import httpx
import pytest
from mlx_lm.utils import load_tokenizer

from mlxserve.prompt_tokens import PromptTokens, common_prefix

WORDS = (
    "Once upon a time in a small village at the edge of a great forest there lived an old "
    "clockmaker who had repaired every clock in the valley"
).split()


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return load_tokenizer(model_dir)


def conversation(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "You are a storyteller."}]
    for t in range(turns):
        words = WORDS[t % 7 :] + WORDS[: t % 7]
        messages.append({"role": "user", "content": f"Turn {t}. " + " ".join(words)})
        messages.append({"role": "assistant", "content": " ".join(reversed(words))})
    return messages


def render(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_common_prefix():
    assert common_prefix("", "abc") == 0
    assert common_prefix("abc", "abd") == 2
    assert common_prefix("abc", "abc") == 3
    assert common_prefix("abcdef", "abc") == 3


def test_a_growing_chat_reuses_tokens_and_matches_the_template(tokenizer):
    encoder = PromptTokens(tokenizer, min_chars=200)
    assert encoder.enabled
    for turns in range(1, 25):
        messages = conversation(turns)[:-1]  # ends with the user's turn
        text = render(tokenizer, messages)
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        assert encoder.encode(text) == expected, turns
    # Every turn after the first few reused nearly all of the previous prompt.
    assert encoder.reused_chars > 0.8 * sum(
        len(render(tokenizer, conversation(t)[:-1])) for t in range(5, 25)
    )
    assert encoder.enabled  # the checks of the first reuses passed


def test_edited_history_and_other_chats_still_match(tokenizer):
    encoder = PromptTokens(tokenizer, min_chars=200)
    chat = conversation(12)[:-1]
    encoder.encode(render(tokenizer, chat))
    edited = [dict(m) for m in chat]
    edited[5]["content"] = edited[5]["content"][:20] + " (edited) " + edited[5]["content"][20:]
    other = [{"role": "system", "content": "You are terse."}] + chat[1:]
    # The same text cut inside a special token's neighbourhood: the last message
    # loses its end, so the shared start ends in the middle of the final turn.
    truncated = render(tokenizer, chat)[:-7]
    for text in (render(tokenizer, edited), render(tokenizer, other), truncated):
        assert encoder.encode(text) == tokenizer.encode(text, add_special_tokens=False)


def test_a_reused_prompt_keeps_its_earlier_cuts(tokenizer):
    """An edit early in a chat still reuses the start of a prompt that was itself reused."""
    encoder = PromptTokens(tokenizer, min_chars=200, entries=1)
    chat = conversation(12)[:-1]
    encoder.encode(render(tokenizer, chat))
    encoder.encode(render(tokenizer, conversation(13)[:-1]))  # reused; the only entry now
    edited = [dict(m) for m in chat]
    edited[6]["content"] = "(edited) " + edited[6]["content"]
    text = render(tokenizer, edited)
    before = encoder.reused_chars
    assert encoder.encode(text) == tokenizer.encode(text, add_special_tokens=False)
    assert encoder.reused_chars > before


def test_short_prompts_are_tokenized_whole_and_not_kept(tokenizer):
    encoder = PromptTokens(tokenizer, min_chars=10_000)
    text = render(tokenizer, conversation(3))
    assert encoder.encode(text) == tokenizer.encode(text, add_special_tokens=False)
    assert encoder.encode(text + "more") == tokenizer.encode(text + "more", add_special_tokens=False)
    assert encoder.reused_chars == 0


class ToyTokenizer:
    """A fast-tokenizer stand-in: one token per character, except the special token
    ``<s>`` and the pair ``b<`` (a merge across what could look like a cut).
    ``contextual``: every token depends on the text's first character, so cutting
    anywhere is wrong, which the checks of the first reuses must catch."""

    is_fast = True

    class Added:
        special = True
        content = "<s>"

    added_tokens_decoder = {0: Added()}

    def __init__(self, contextual: bool = False):
        self.contextual = contextual

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=True):
        ids, offsets, at = [], [], 0
        shift = 2 if self.contextual and text.startswith("x") else 1
        for part in re.split("(<s>)", text):  # special tokens first, as fast tokenizers do
            i = 0
            while i < len(part):
                size = 3 if part == "<s>" else 2 if part.startswith("b<", i) else 1
                piece = part[i : i + size]
                ids.append(0 if piece == "<s>" else sum(map(ord, piece)) * size * shift)
                offsets.append((at + i, at + i + size))
                i += size
            at += len(part)
        return {"input_ids": ids, "offset_mapping": offsets}


def test_no_cut_at_a_special_token_the_prompts_share_only_in_part():
    toy = ToyTokenizer()
    encoder = PromptTokens(toy, min_chars=4)
    encoder.encode("x a<s> b<s> c")
    # The shared start ends inside the second <s>: the new text has no special token
    # there, and its "b<" merges; cutting before "<s" would split that merge.
    text = "x a<s> b<sX d"
    assert encoder.encode(text) == toy(text)["input_ids"]
    assert encoder.enabled and encoder.reused_chars == 3  # cut at the first <s>


def test_a_tokenizer_that_cannot_be_cut_gets_no_reuse(caplog):
    toy = ToyTokenizer(contextual=True)
    encoder = PromptTokens(toy, min_chars=4)
    encoder.encode("x ab <s> cd")
    with caplog.at_level(logging.WARNING, logger="mlxserve.prompt_tokens"):
        ids = encoder.encode("x ab <s> cd <s> ef")
    assert ids == toy("x ab <s> cd <s> ef")["input_ids"]
    assert not encoder.enabled
    assert "reuse is off" in caplog.text


def test_the_chat_route_reuses_the_previous_turns_tokens(server, engine, tokenizer):
    """A growing chat over HTTP: the prompt the model sees is the template's, token for token."""
    for turns in (10, 11, 12):
        messages = conversation(turns)[:-1]
        r = httpx.post(
            server.url + "/v1/chat/completions",
            json={"messages": messages, "max_tokens": 1},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        assert r.json()["usage"]["prompt_tokens"] == len(expected)
    assert server.service.prompt_tokens(engine).reused_chars > 0


def test_short_prompts_are_tokenized_on_the_event_loop_long_ones_in_a_worker():
    import asyncio
    import threading

    from mlxserve.service import INLINE_CHARS, off_loop

    async def scenario():
        loop_thread = threading.get_ident()
        short = await off_loop(INLINE_CHARS, threading.get_ident)
        long = await off_loop(INLINE_CHARS + 1, threading.get_ident)
        return short == loop_thread, long == loop_thread

    assert asyncio.run(scenario()) == (True, False)


def test_long_tool_call_arguments_send_the_template_to_a_worker():
    """The text a chat renders includes the arguments of earlier tool calls."""
    import json

    from mlxserve.schemas.openai import ChatCompletionRequest
    from mlxserve.service import INLINE_CHARS, _template_chars

    call = {"id": "c1", "type": "function",
            "function": {"name": "write_file", "arguments": json.dumps({"text": "x" * INLINE_CHARS})}}
    body = ChatCompletionRequest(messages=[
        {"role": "user", "content": "Save it."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "saved"},
    ])
    messages = [m.to_template() for m in body.messages]
    assert _template_chars(body, messages, tools=None) > INLINE_CHARS
    short = ChatCompletionRequest(messages=body.messages[:1])
    assert _template_chars(short, messages[:1], tools=None) <= INLINE_CHARS
    assert _template_chars(short, messages[:1], tools=[{}]) > INLINE_CHARS
