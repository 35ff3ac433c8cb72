"""The gate and cancellation over real HTTP: ordering, 429/503, disconnects, timeouts."""

import threading
import time

import httpx
import openai
import pytest

from tests.conftest import sse_events


def chat_body(example, **extra):
    return {"model": "x", "messages": example["messages"], **extra}


def stream_first_chunks(server, body, n):
    """Open a stream, read ``n`` content chunks, then drop the connection."""
    client = httpx.Client(base_url=server.url, timeout=30)
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                seen += 1
                if seen == n:
                    break
    client.close()


def test_two_concurrent_requests_are_served_one_after_the_other(make_server, examples, monkeypatch):
    server = make_server(max_requests=1)
    svc = server.service
    # The slot's timeline, seen by the server itself: client threads on a loaded
    # machine can read their streams late, so their clocks cannot show the order.
    timeline = []
    start = svc._start

    def logged_start(plan):
        generation = start(plan)
        timeline.append("start")
        release = generation._release

        def logged_release():
            timeline.append("end")
            release()

        generation._release = logged_release
        return generation

    monkeypatch.setattr(svc, "_start", logged_start)
    results = {}

    def run(name, delay):
        time.sleep(delay)
        stream = server.openai().chat.completions.create(
            stream=True, max_tokens=60, **chat_body(examples["long"])
        )
        results[name] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=run, args=("a", 0)), threading.Thread(target=run, args=("b", 0.05))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Both got the full trained start of the story, and one generation ran at a time.
    assert results["a"] == results["b"] and len(results["a"]) > 100
    assert examples["long"]["completion"].startswith(results["a"])
    assert timeline == ["start", "end", "start", "end"]
    server.wait_idle()


def test_queue_full_is_429_with_retry_after(make_server, examples):
    server = make_server(max_requests=1, queue_size=0, timeout=10)
    holder = threading.Thread(
        target=stream_first_chunks, args=(server, chat_body(examples["long"], max_tokens=2000), 10**6)
    )
    holder.start()
    deadline = time.monotonic() + 10
    while server.service.gate.active == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(openai.RateLimitError) as info:
        server.openai().chat.completions.create(**chat_body(examples["short"]))
    assert info.value.status_code == 429
    assert info.value.body["code"] == "server_busy"
    assert int(info.value.response.headers["Retry-After"]) >= 1
    holder.join(30)
    server.wait_idle()


def test_queue_timeout_is_503_with_retry_after(make_server, examples):
    server = make_server(max_requests=1, queue_size=4, queue_timeout=0.3, timeout=3)
    holder = threading.Thread(
        target=stream_first_chunks, args=(server, chat_body(examples["long"], max_tokens=2000), 10**6)
    )
    holder.start()
    while server.service.gate.active == 0:
        time.sleep(0.01)
    with server.http() as http:
        r = http.post("/v1/chat/completions", json=chat_body(examples["short"]))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "queue_timeout"
    assert int(r.headers["Retry-After"]) >= 1
    assert server.service.gate.queued == 0
    holder.join(30)
    server.wait_idle()


def test_disconnect_mid_stream_frees_the_slot_and_stops_generation(make_server, engine, examples):
    server = make_server(max_requests=1)
    before = engine.tokens_generated
    stream_first_chunks(server, chat_body(examples["long"], max_tokens=2000), 3)
    waited = server.wait_idle(timeout=2)
    assert waited < 1.0
    # Cancelled within a few tokens, far short of the story (hundreds of tokens).
    assert engine.tokens_generated - before < 40
    resp = server.openai().chat.completions.create(**chat_body(examples["short"]))
    assert resp.choices[0].message.content == examples["short"]["completion"]


def test_disconnect_while_non_streaming_frees_the_slot(make_server, engine, examples):
    server = make_server(max_requests=1)
    # With end-of-turn banned the model would run all 2000 tokens if not cancelled.
    no_eos = {str(t): -100 for t in engine.tokenizer.eos_token_ids}
    before = engine.tokens_generated
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url + "/v1/chat/completions",
            json=chat_body(examples["long"], max_tokens=2000, logit_bias=no_eos),
            timeout=0.3,
        )
    server.wait_idle(timeout=3)
    assert engine.tokens_generated - before < 1000


def test_disconnect_while_queued_leaves_the_queue(make_server, examples):
    server = make_server(max_requests=1, queue_size=4, timeout=3)
    holder = threading.Thread(
        target=stream_first_chunks, args=(server, chat_body(examples["long"], max_tokens=2000), 10**6)
    )
    holder.start()
    while server.service.gate.active == 0:
        time.sleep(0.01)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=chat_body(examples["short"]), timeout=0.3)
    deadline = time.monotonic() + 2
    while server.service.gate.queued:
        assert time.monotonic() < deadline, "queued request stayed after disconnect"
        time.sleep(0.01)
    holder.join(30)
    server.wait_idle()


def test_timeout_ends_with_length_and_frees_the_slot(make_server, examples):
    server = make_server(timeout=0.2)
    t0 = time.monotonic()
    resp = server.openai().chat.completions.create(**chat_body(examples["long"], max_tokens=2000))
    assert time.monotonic() - t0 < 5
    assert resp.choices[0].finish_reason == "length"
    assert 0 < resp.usage.completion_tokens < 2000
    assert examples["long"]["completion"].startswith(resp.choices[0].message.content)
    server.wait_idle()


def test_keepalive_comments_while_waiting_for_tokens(make_server, examples):
    """A long prompt takes a while to prefill: the stream sends SSE comments meanwhile."""
    server = make_server(keepalive_interval=0.01)
    body = {
        "prompt": "Tell me a long story. " * 250,
        "max_tokens": 3,
        "stream": True,
    }
    with server.http() as http, http.stream("POST", "/v1/completions", json=body) as r:
        events = sse_events(r)
    comments = [e for e in events if isinstance(e, str) and e.startswith(":")]
    assert comments
    # A comment may also land after the last event (a 10 ms interval); clients skip comments.
    assert [e for e in events if e not in comments][-1] == "[DONE]"


def test_many_disconnects_leak_nothing(make_server, examples):
    server = make_server(max_requests=1, queue_size=8)
    threads = [
        threading.Thread(
            target=stream_first_chunks, args=(server, chat_body(examples["long"], max_tokens=500), 2)
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    server.wait_idle(timeout=5)
    resp = server.openai().chat.completions.create(**chat_body(examples["short"]))
    assert resp.choices[0].message.content == examples["short"]["completion"]
