"""One gate, one window, one set of errors: Anthropic and Ollama routes behave as OpenAI ones."""

import json
import threading
import time

import anthropic
import httpx
import ollama
import pytest
from pydantic import ValidationError

from mlxserve.config import Settings
from mlxserve.engine import Engine
from tests.test_concurrency import chat_body, stream_first_chunks


def anthropic_client(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-local", max_retries=0)


def hold_the_slot(server, examples) -> threading.Thread:
    """Start a long OpenAI stream that holds the only slot until its client goes away."""
    holder = threading.Thread(
        target=stream_first_chunks,
        args=(server, chat_body(examples["long"], max_tokens=2000), 10**6),
    )
    holder.start()
    deadline = time.monotonic() + 10
    while server.service.gate.active == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return holder


def test_queue_full_is_429_on_both(make_server, examples):
    server = make_server(max_requests=1, queue_size=0, timeout=5)
    holder = hold_the_slot(server, examples)
    with pytest.raises(anthropic.RateLimitError) as info:
        anthropic_client(server).messages.create(
            model="m", max_tokens=20, messages=examples["short"]["messages"]
        )
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert int(info.value.response.headers["Retry-After"]) >= 1
    with pytest.raises(ollama.ResponseError) as oinfo:
        ollama.Client(host=server.url).chat(model="m", messages=examples["short"]["messages"])
    assert oinfo.value.status_code == 429 and oinfo.value.error
    holder.join(30)
    server.wait_idle()


def test_loading_is_503_on_both(make_server, held_engine, examples):
    engine, release = held_engine
    server = make_server(engine_=engine)
    try:
        with pytest.raises(anthropic.APIStatusError) as info:
            anthropic_client(server).messages.create(
                model="m", max_tokens=20, messages=examples["short"]["messages"]
            )
        assert info.value.status_code == 503
        assert info.value.body["error"]["type"] == "overloaded_error"
        assert int(info.value.response.headers["Retry-After"]) >= 1
        with pytest.raises(ollama.ResponseError) as oinfo:
            ollama.Client(host=server.url).chat(model="m", messages=examples["short"]["messages"])
        assert oinfo.value.status_code == 503 and "loading" in oinfo.value.error
        assert ollama.Client(host=server.url).list().models == []
    finally:
        release.set()
    assert engine.ready.wait(60) and engine.state == "ready"


def test_context_length_exceeded_is_400_on_both(make_server, examples):
    server = make_server(max_context_tokens=30)
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client(server).messages.create(
            model="m", max_tokens=25, messages=examples["short"]["messages"]
        )
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "maximum context length is 30 tokens" in info.value.body["error"]["message"]
    with pytest.raises(ollama.ResponseError) as oinfo:
        ollama.Client(host=server.url).chat(
            model="m", messages=examples["short"]["messages"], options={"num_predict": 25}
        )
    assert oinfo.value.status_code == 400 and "maximum context length" in oinfo.value.error


def test_window_drops_oldest_on_both(make_server, engine, examples):
    question = examples["short"]["messages"]
    old = [
        {"role": "user", "content": "Tell me about the weather in a very long and winding way."},
        {"role": "assistant", "content": "It was a calm and quiet day with a light breeze."},
    ]
    server = make_server(max_context=1)
    reply = anthropic_client(server).messages.create(
        model="m", max_tokens=40, messages=old + question
    )
    alone = anthropic_client(server).messages.create(model="m", max_tokens=40, messages=question)
    assert reply.usage.input_tokens == alone.usage.input_tokens
    chat = ollama.Client(host=server.url).chat(model="m", messages=old + question)
    assert chat.prompt_eval_count == alone.usage.input_tokens


def read_a_little_then_hang_up(server, path, body, needle, n=3):
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream("POST", path, json=body) as r,
    ):
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            seen += needle in line
            if seen == n:
                break


@pytest.mark.parametrize(
    "path, body, needle",
    [
        ("/v1/messages", {"max_tokens": 2000, "stream": True}, "text_delta"),
        ("/api/chat", {"options": {"num_predict": 2000}}, '"done": false'),
    ],
)
def test_disconnect_mid_stream_frees_the_slot(make_server, engine, examples, path, body, needle):
    server = make_server(max_requests=1)
    before = engine.tokens_generated
    body = {"model": "m", "messages": examples["long"]["messages"], **body}
    read_a_little_then_hang_up(server, path, body, needle)
    assert server.wait_idle(timeout=2) < 1.0
    assert engine.tokens_generated - before < 40
    reply = ollama.Client(host=server.url).chat(model="m", messages=examples["short"]["messages"])
    assert reply.message.content == examples["short"]["completion"]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/messages", {"max_tokens": 2000}),
        ("/api/chat", {"stream": False, "options": {"num_predict": 2000}}),
    ],
)
def test_disconnect_while_waiting_frees_the_slot(make_server, examples, path, body):
    server = make_server(max_requests=1, queue_size=4, timeout=5)
    holder = hold_the_slot(server, examples)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url + path,
            json={"model": "m", "messages": examples["short"]["messages"], **body},
            timeout=0.3,
        )
    deadline = time.monotonic() + 2
    while server.service.gate.queued:
        assert time.monotonic() < deadline, "queued request stayed after disconnect"
        time.sleep(0.01)
    holder.join(30)
    server.wait_idle()


def test_error_after_the_stream_started_is_in_band(make_server, model_dir, examples):
    """A generation cut by the engine's shutdown ends each stream in its protocol's error shape."""
    engine = Engine(str(model_dir), warmup=False)
    server = make_server(engine_=engine, max_requests=2)
    assert engine.ready.wait(60)
    results = {}

    def read(path, body, key):
        with (
            httpx.Client(base_url=server.url, timeout=30) as http,
            http.stream("POST", path, json=body) as r,
        ):
            results[key] = list(r.iter_lines())

    bodies = {
        "anthropic": ("/v1/messages", {"max_tokens": 2000, "stream": True}),
        "ollama": ("/api/chat", {"options": {"num_predict": 2000}}),
    }
    threads = [
        threading.Thread(
            target=read,
            args=(path, {"model": "m", "messages": examples["long"]["messages"], **extra}, key),
        )
        for key, (path, extra) in bodies.items()
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while engine.active_runs < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    engine.stop()
    for t in threads:
        t.join(30)
    anthropic_lines = [line for line in results["anthropic"] if line]
    assert anthropic_lines[-2:] == ["event: error", anthropic_lines[-1]]
    error = json.loads(anthropic_lines[-1].removeprefix("data: "))
    assert error == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "The server is shutting down."},
    }
    assert json.loads(results["ollama"][-1]) == {"error": "The server is shutting down."}


def test_protocols_setting_picks_the_routers(make_server, examples):
    openai_only = make_server(protocols="openai")
    with openai_only.http() as http:
        assert http.post("/v1/messages", json={}).status_code == 404
        assert http.get("/api/tags").status_code == 404
        assert http.get("/healthz").status_code == 200
    reply = openai_only.openai().chat.completions.create(
        model="m", messages=examples["short"]["messages"]
    )
    assert reply.choices[0].message.content == examples["short"]["completion"]
    others = make_server(protocols="anthropic,ollama")
    with others.http() as http:
        assert http.post("/v1/chat/completions", json={}).status_code == 404
        assert http.get("/api/version").status_code == 200
        assert http.get("/healthz").status_code == 200
    message = anthropic_client(others).messages.create(
        model="m", max_tokens=50, messages=examples["short"]["messages"]
    )
    assert message.content[0].text == examples["short"]["completion"]


def test_protocols_setting_is_checked():
    assert Settings(protocols=" ollama , openai").protocol_names == {"ollama", "openai"}
    for bad in ("grpc", "openai,grpc", " , "):
        with pytest.raises(ValidationError, match="protocol"):
            Settings(protocols=bad)


def test_middleware_errors_keep_each_protocols_shape(make_server):
    server = make_server(max_body_bytes=1024)
    big = {"messages": [{"role": "user", "content": "x" * 2000}], "max_tokens": 5}
    with server.http() as http:
        r = http.post("/v1/messages", json=big)
        assert r.status_code == 413
        assert r.json() == {
            "type": "error",
            "error": {"type": "request_too_large", "message": r.json()["error"]["message"]},
        }
        r = http.post("/api/chat", json=big)
        assert r.status_code == 413 and set(r.json()) == {"error"}
        r = http.post("/v1/chat/completions", json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
