"""Queued streams on the Anthropic and Ollama routes: one gate, each protocol's own shape.

Anthropic streams wait as OpenAI streams do (headers at once, ``: queued position=N``
comments, ``ping`` events, the queue timeout as an ``error`` event). Ollama's NDJSON has
no comments: its streams wait before the response starts, bounded by the queue timeout.
"""

import json
import time

import anthropic
import httpx
import ollama
import pytest

from tests.test_queue_position import Holder, _next_comment, _story

# The holder's story may run past the model's context: it must not end (and free the slot)
# before a slow client on a loaded machine has queued behind it.
LONG = dict(max_tokens=100_000, max_context_tokens=110_000)


def _long_story(engine, examples) -> dict:
    """The story with end-of-turn banned, for as long as the test needs the slot."""
    return {**_story(engine, examples), "max_tokens": LONG["max_tokens"]}


def anthropic_client(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-local", max_retries=0)


@pytest.fixture
def hold(make_server, engine, examples):
    """Hold a server's only slot with the long story; released at the latest when the test ends."""
    holders = []

    def start(server) -> Holder:
        holders.append(Holder(server, _long_story(engine, examples)))
        return holders[-1]

    yield start
    for holder in holders:  # before the servers stop: a story left running would hold the engine
        holder.done()


def _message(examples, **extra) -> dict:
    return {"model": "m", "max_tokens": 50, "messages": examples["short"]["messages"], **extra}


def _wait_until(check, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_waiting_anthropic_stream_hears_its_place_and_pings(make_server, hold, examples):
    server = make_server(**LONG, max_requests=1, queue_size=4, keepalive_interval=0.2)
    holder = hold(server)
    with server.http() as http, http.stream(
        "POST", "/v1/messages", json=_message(examples, stream=True)
    ) as r:
        assert r.status_code == 200  # headers at once, before any slot
        lines = r.iter_lines()
        assert _next_comment(lines) == ": queued position=1"
        waited = []
        for line in lines:
            waited.append(line)
            if line == "event: ping":
                break
        holder.done()
        rest = list(lines)
    # Anthropic's keep-alive while it waits, in Anthropic's shape, before the message starts.
    assert "event: message_start" not in waited
    events = [(a[7:], json.loads(b[6:])) for a, b in zip(rest, rest[1:]) if a.startswith("event: ")]
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == examples["short"]["completion"]
    server.wait_idle()
    assert set(server.service.models.active.values()) <= {0}


def test_the_anthropic_sdk_reads_a_queued_stream(make_server, hold, examples):
    server = make_server(**LONG, max_requests=1, queue_size=4, keepalive_interval=0.05)
    holder = hold(server)
    body = _message(examples)
    with anthropic_client(server).messages.stream(**body) as stream:
        _wait_until(lambda: server.service.gate.queued == 1, "the stream did not queue")
        time.sleep(0.2)  # a few comments and pings go by
        holder.done()
        message = stream.get_final_message()
    assert message.content[0].text == examples["short"]["completion"]
    assert message.stop_reason == "end_turn"


def test_anthropic_queue_timeout_is_an_error_event(make_server, hold, examples):
    server = make_server(
        **LONG, max_requests=1, queue_size=4, queue_timeout=0.3, keepalive_interval=30
    )
    holder = hold(server)
    with server.http() as http, http.stream(
        "POST", "/v1/messages", json=_message(examples, stream=True)
    ) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[0] == ": queued position=1"
    assert lines[-2:] == ["event: error", lines[-1]]
    error = json.loads(lines[-1].removeprefix("data: "))
    assert error == {
        "type": "error",
        "error": {
            "type": "overloaded_error",
            "message": "No generation slot became free within 0.3 seconds.",
        },
    }
    # The SDK raises it, with Anthropic's error type.
    with pytest.raises(anthropic.APIStatusError) as info:
        with anthropic_client(server).messages.stream(**_message(examples)) as stream:
            stream.get_final_message()
    assert info.value.body["error"]["type"] == "overloaded_error"
    holder.done()
    assert server.service.gate.queued == 0
    server.wait_idle()
    assert set(server.service.models.active.values()) <= {0}


def test_a_queued_anthropic_stream_leaves_the_queue_on_disconnect(make_server, hold, examples):
    server = make_server(**LONG, max_requests=1, queue_size=4, keepalive_interval=30)
    holder = hold(server)
    with server.http() as http, http.stream(
        "POST", "/v1/messages", json=_message(examples, stream=True)
    ) as r:
        assert _next_comment(r.iter_lines()) == ": queued position=1"
    _wait_until(lambda: server.service.gate.queued == 0, "the stream stayed in the queue")
    holder.done()
    server.wait_idle()
    assert set(server.service.models.active.values()) <= {0}


def test_a_full_queue_refuses_an_anthropic_stream_with_429(make_server, hold, examples):
    server = make_server(**LONG, max_requests=1, queue_size=0)
    holder = hold(server)
    with pytest.raises(anthropic.RateLimitError) as info:
        with anthropic_client(server).messages.stream(**_message(examples)) as stream:
            stream.get_final_message()
    holder.done()
    assert info.value.body["error"]["type"] == "rate_limit_error"
    server.wait_idle()


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_ollama_queue_timeout_refuses_a_stream_before_it_starts(make_server, hold, examples, path):
    server = make_server(**LONG, max_requests=1, queue_size=4, queue_timeout=0.3)
    holder = hold(server)
    body = {"model": "m", "messages": examples["short"]["messages"], "prompt": "Say hello."}
    with server.http() as http, http.stream("POST", path, json=body) as r:
        r.read()
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert r.json() == {"error": "No generation slot became free within 0.3 seconds."}
    with pytest.raises(ollama.ResponseError) as info:
        list(ollama.Client(host=server.url).chat(model="m", messages=body["messages"], stream=True))
    assert info.value.status_code == 503
    holder.done()
    assert server.service.gate.queued == 0
    server.wait_idle()
    assert set(server.service.models.active.values()) <= {0}


def test_a_queued_ollama_stream_leaves_the_queue_on_disconnect(make_server, hold, examples):
    server = make_server(**LONG, max_requests=1, queue_size=4)
    holder = hold(server)
    body = {"model": "m", "messages": examples["short"]["messages"]}  # streams by default
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=0.5) as r:
            r.read()
    _wait_until(lambda: server.service.gate.queued == 0, "the stream stayed in the queue")
    holder.done()
    server.wait_idle()
    # The next stream gets the slot and its answer.
    client = ollama.Client(host=server.url)
    parts = list(client.chat(model="m", messages=body["messages"], stream=True))
    assert "".join(p.message.content for p in parts) == examples["short"]["completion"]
