"""What the context window dropped, told to the client; --on-overflow error refuses instead."""

import json

import anthropic
import ollama
import openai
import pytest

from mlxserve.context import Dropped, dropped_fields, window_chat
from mlxserve.errors import ContextLengthExceededError
from tests.conftest import sse_events
from tests.test_chat import prompt_len
from tests.test_context import CHAT, render_words

OLD = [
    {"role": "user", "content": "Tell me about the weather in a very long and winding way."},
    {"role": "assistant", "content": "It was a calm and quiet day with a light breeze."},
]


def test_window_chat_reports_dropped_messages_and_their_tokens():
    window, dropped = window_chat(
        CHAT, render=render_words, max_messages=0, context_tokens=25, completion_tokens=8
    )
    # The window cuts in blocks of half the prompt budget (the prompt cache keeps its start).
    assert dropped == Dropped(3, len(render_words(CHAT)) - len(window.prompt_tokens))
    assert dropped.tokens == 9  # "one", "two" and "three": 3 tokens each


def test_window_chat_reports_nothing_when_all_fits():
    _, dropped = window_chat(
        CHAT, render=render_words, max_messages=0, context_tokens=100, completion_tokens=8
    )
    assert dropped is None


def test_the_usage_extension_leaves_out_what_is_unknown():
    assert dropped_fields(None) == {}
    both = {"context_dropped_messages": 3, "context_dropped_tokens": 9}
    assert dropped_fields(Dropped(3, 9)) == both
    # The template rejected the whole conversation: its token count is unknown.
    assert dropped_fields(Dropped(3, None)) == {"context_dropped_messages": 3}


def test_on_overflow_error_refuses_instead_of_dropping():
    with pytest.raises(ContextLengthExceededError) as info:
        window_chat(
            CHAT,
            render=render_words,
            max_messages=0,
            context_tokens=25,
            completion_tokens=8,
            on_overflow="error",
        )
    assert info.value.message.startswith("This model's maximum context length is 25 tokens.")
    assert "resulted in 31 tokens (23 in the messages, 8 in the completion)" in info.value.message


def test_on_overflow_error_still_applies_the_message_window():
    window, dropped = window_chat(
        CHAT,
        render=render_words,
        max_messages=1,
        context_tokens=25,
        completion_tokens=8,
        on_overflow="error",
    )
    assert [m["content"] for m in window.messages] == ["be brief", "no emojis", "five"]
    assert dropped.messages == 4


def _budget(engine, examples):
    return prompt_len(engine, examples["short"]["messages"]) + 40


def test_dropped_messages_in_header_and_usage(make_server, engine, examples):
    question = examples["short"]["messages"]
    server = make_server(max_context_tokens=_budget(engine, examples))
    raw = server.openai().chat.completions.with_raw_response.create(
        model="x", messages=OLD + question, max_tokens=40
    )
    resp = raw.parse()
    assert raw.headers["X-MLXServe-Context-Dropped"] == "2"
    assert resp.usage.context_dropped_messages == 2
    dropped_tokens = prompt_len(engine, OLD + question) - prompt_len(engine, question)
    assert resp.usage.context_dropped_tokens == dropped_tokens
    assert resp.usage.prompt_tokens == prompt_len(engine, question)


def test_dropped_messages_in_a_stream(make_server, engine, examples):
    question = examples["short"]["messages"]
    server = make_server(max_context_tokens=_budget(engine, examples))
    body = {
        "messages": OLD + question,
        "max_tokens": 40,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["X-MLXServe-Context-Dropped"] == "2"
        events = sse_events(r)
    usage = [e["usage"] for e in events if isinstance(e, dict) and e.get("usage")]
    assert usage[0]["context_dropped_messages"] == 2
    assert usage[0]["context_dropped_tokens"] > 0


def test_nothing_dropped_means_no_header_and_plain_usage(server, examples):
    raw = server.openai().chat.completions.with_raw_response.create(
        model="x", messages=OLD + examples["short"]["messages"], max_tokens=40
    )
    assert "X-MLXServe-Context-Dropped" not in raw.headers
    usage = raw.parse().usage
    assert usage.model_extra == {}
    assert set(usage.model_dump(exclude_none=True)) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
    }


def test_on_overflow_error_is_a_400_like_openai(make_server, engine, examples):
    question = examples["short"]["messages"]
    budget = _budget(engine, examples)
    server = make_server(max_context_tokens=budget, on_overflow="error")
    with pytest.raises(openai.BadRequestError) as info:
        server.openai().chat.completions.create(model="x", messages=OLD + question, max_tokens=40)
    err = info.value.body
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    total = prompt_len(engine, OLD + question) + 40
    assert err["message"].startswith(
        f"This model's maximum context length is {budget} tokens. "
        f"However, your messages resulted in {total} tokens"
    )
    # What fits is answered as usual.
    resp = server.openai().chat.completions.create(model="x", messages=question, max_tokens=40)
    assert resp.choices[0].message.content == examples["short"]["completion"]


# Every protocol that windows the conversation reports it the same way: the header on every
# answer, streamed or not, and the two fields in the protocol's own usage (Ollama: the last chunk).

HEADER = "X-MLXServe-Context-Dropped"


def _report(usage) -> tuple:
    return usage["context_dropped_messages"], usage["context_dropped_tokens"]


@pytest.fixture
def windowed(make_server, engine, examples):
    """A server whose token budget fits the short question with 40 tokens, not OLD too."""
    question = examples["short"]["messages"]
    server = make_server(max_context_tokens=_budget(engine, examples))
    tokens = prompt_len(engine, OLD + question) - prompt_len(engine, question)
    return server, OLD + question, (2, tokens)


def test_anthropic_reports_dropped_messages(windowed, examples):
    server, messages, expected = windowed
    client = anthropic.Anthropic(base_url=server.url, api_key="sk-local", max_retries=0)
    raw = client.messages.with_raw_response.create(model="m", max_tokens=40, messages=messages)
    message = raw.parse()
    assert raw.headers[HEADER] == "2"
    assert message.content[0].text == examples["short"]["completion"]
    assert _report(message.usage.model_dump()) == expected
    with client.messages.stream(model="m", max_tokens=40, messages=messages) as stream:
        assert stream.response.headers[HEADER] == "2"
        final = stream.get_final_message()
    assert _report(final.usage.model_dump()) == expected
    # Without drops, Anthropic's usage is exactly Anthropic's.
    alone = client.messages.create(model="m", max_tokens=40, messages=messages[-1:])
    assert "context_dropped_messages" not in alone.usage.model_dump()


def test_anthropic_stream_reports_in_message_start_and_message_delta(windowed):
    server, messages, expected = windowed
    body = {"model": "m", "max_tokens": 40, "messages": messages, "stream": True}
    with server.http() as http, http.stream("POST", "/v1/messages", json=body) as r:
        assert r.headers[HEADER] == "2"
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    start = next(e for e in events if e["type"] == "message_start")
    delta = next(e for e in events if e["type"] == "message_delta")
    assert _report(start["message"]["usage"]) == _report(delta["usage"]) == expected


def test_responses_report_dropped_messages(windowed, examples):
    server, messages, expected = windowed
    client = server.openai()
    raw = client.responses.with_raw_response.create(
        model="m", input=messages, max_output_tokens=40
    )
    assert raw.headers[HEADER] == "2"
    response = raw.parse()
    assert response.output_text == examples["short"]["completion"]
    assert _report(response.usage.model_dump()) == expected
    stream = client.responses.create(model="m", input=messages, max_output_tokens=40, stream=True)
    assert stream.response.headers[HEADER] == "2"
    completed = [e for e in stream if e.type == "response.completed"]
    assert _report(completed[0].response.usage.model_dump()) == expected
    alone = client.responses.create(model="m", input=messages[-1:], max_output_tokens=40)
    assert "context_dropped_messages" not in alone.usage.model_dump()


@pytest.mark.parametrize("stream", [True, False])
def test_ollama_reports_dropped_messages_on_the_last_chunk(windowed, examples, stream):
    server, messages, expected = windowed
    body = {"model": "m", "messages": messages, "stream": stream, "options": {"num_predict": 40}}
    with server.http() as http, http.stream("POST", "/api/chat", json=body) as r:
        assert r.headers[HEADER] == "2"
        chunks = [json.loads(line) for line in r.iter_lines() if line]
    assert _report(chunks[-1]) == expected
    assert all("context_dropped_messages" not in c for c in chunks[:-1])
    # The ollama client reads the answer as usual.
    reply = ollama.Client(host=server.url).chat(
        model="m", messages=messages, stream=False, options={"num_predict": 40}
    )
    assert reply.message.content == examples["short"]["completion"]


def test_ollama_without_drops_has_no_report(server, examples):
    body = {"model": "m", "messages": examples["short"]["messages"], "stream": False}
    with server.http() as http:
        r = http.post("/api/chat", json=body)
    assert HEADER not in r.headers and "context_dropped_messages" not in r.json()
