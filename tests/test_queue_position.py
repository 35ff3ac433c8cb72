"""A stream waiting for a slot hears its place in line as SSE comments."""

import json
import threading
from contextlib import ExitStack
import time

import httpx

from tests.conftest import sse_events


def _story(engine, examples):
    """The long story with end-of-turn banned: it runs until cancelled or 1500 tokens."""
    no_eos = {str(t): -100 for t in engine.tokenizer.eos_token_ids}
    return {"messages": examples["long"]["messages"], "max_tokens": 1500, "logit_bias": no_eos}


class Holder:
    """Holds the only slot with a streamed story until released."""

    def __init__(self, server, body):
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(server, body))
        self.thread.start()
        deadline = time.monotonic() + 10
        while server.service.gate.active == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def _run(self, server, body):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                for _ in r.iter_lines():
                    if self.release.is_set():
                        break

    def done(self):
        self.release.set()
        self.thread.join(30)


def _next_comment(lines) -> str:
    seen = []
    for line in lines:
        seen.append(line)
        if line.startswith(":") and line != ": ping":
            return line
    raise AssertionError(f"the stream ended without a comment: {seen}")


def test_waiting_streams_hear_their_place_in_line(make_server, engine, examples):
    server = make_server(max_requests=1, queue_size=4, keepalive_interval=30)
    holder = Holder(server, _story(engine, examples))
    short = {"messages": examples["short"]["messages"], "stream": True}
    with server.http() as a_client, server.http() as b_client, ExitStack() as stack:
        a = stack.enter_context(a_client.stream("POST", "/v1/chat/completions", json=short))
        assert a.status_code == 200
        a_lines = a.iter_lines()
        assert _next_comment(a_lines) == ": queued position=1"
        with b_client.stream("POST", "/v1/chat/completions", json=short) as b:
            b_lines = b.iter_lines()
            assert _next_comment(b_lines) == ": queued position=2"
            assert server.service.health()["queued_requests"] == 2
            a.close()  # the one ahead gives up: b moves up
            assert _next_comment(b_lines) == ": queued position=1"
            holder.done()
            rest = list(b_lines)
    chunks = [json.loads(line[6:]) for line in rest if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == examples["short"]["completion"]
    assert [line for line in rest if line][-1] == "data: [DONE]"
    server.wait_idle()
    assert set(server.service.models.active.values()) <= {0}  # no request keeps a model resident


def test_a_stream_with_a_free_slot_gets_no_queue_comment(server, examples):
    body = {"messages": examples["short"]["messages"], "stream": True}
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        events = sse_events(r)
    assert not [e for e in events if isinstance(e, str) and e.startswith(": queued")]
    assert events[-1] == "[DONE]"


def test_queue_timeout_while_streaming_is_reported_in_band(make_server, engine, examples):
    server = make_server(max_requests=1, queue_size=4, queue_timeout=0.3, keepalive_interval=30)
    holder = Holder(server, _story(engine, examples))
    body = {"messages": examples["short"]["messages"], "stream": True}
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = sse_events(r)
    holder.done()
    assert events[0] == ": queued position=1"
    errors = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
    assert errors and errors[0]["code"] == "queue_timeout"
    assert events[-1] == "[DONE]"
    assert server.service.gate.queued == 0
    server.wait_idle()
    assert set(server.service.models.active.values()) <= {0}  # no request keeps a model resident


def test_full_queue_still_refuses_a_stream_with_429(make_server, engine, examples):
    server = make_server(max_requests=1, queue_size=0)
    holder = Holder(server, _story(engine, examples))
    body = {"messages": examples["short"]["messages"], "stream": True}
    with server.http() as http:
        r = http.post("/v1/chat/completions", json=body)
    holder.done()
    assert r.status_code == 429 and r.json()["error"]["code"] == "server_busy"
    server.wait_idle()
    assert set(server.service.models.active.values()) <= {0}  # no request keeps a model resident
