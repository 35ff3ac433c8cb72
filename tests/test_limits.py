"""Request limits on every protocol: body size, JSON depth, messages, stop entries, tools."""

import asyncio
import time

import pytest

from mlxserve.engine import GenerationRequest, SamplingParams
from mlxserve.errors import GenerationError
from mlxserve.http import json_depth
from tests.test_errors import assert_envelope

HELLO = [{"role": "user", "content": "Say hello."}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "path, shape",
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"), ("/api/chat", "ollama")],
)
def test_oversized_body_is_413_in_each_protocols_shape(make_server, path, shape):
    server = make_server(max_body_bytes=2048)

    def chunks():  # chunked: no Content-Length to go by
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    with server.http() as http:
        declared = http.post(path, json={"messages": [{"role": "user", "content": "x" * 5000}]})
        streamed = http.post(path, content=chunks())
        assert http.post("/v1/chat/completions", json={"messages": HELLO}).status_code == 200
    for r in (declared, streamed):
        assert r.status_code == 413
        if shape == "openai":
            assert_envelope(r, 413, code="request_too_large")
        elif shape == "anthropic":
            assert r.json()["error"]["type"] == "request_too_large"
        else:
            assert "larger than" in r.json()["error"]


def test_deep_json_is_400_not_a_crash(server):
    with server.http() as http:
        within = http.post("/v1/chat/completions", json={"messages": HELLO, "metadata": {"a": [[[1]]]}})
        deep = http.post(
            "/v1/chat/completions",
            content='{"messages": ' + nested(100) + "}",
            headers={"content-type": "application/json"},
        )
        t0 = time.monotonic()
        huge = http.post("/v1/chat/completions", content=nested(1_000_000))
        took = time.monotonic() - t0
        ollama = http.post("/api/chat", content=nested(100))
    assert within.status_code == 200
    for r in (deep, huge):
        err = assert_envelope(r, 400, code="json_too_deep")
        assert "64 levels" in err["message"]
    assert took < 5
    assert ollama.status_code == 400 and "deeper" in ollama.json()["error"]


def test_json_depth_limit_is_a_setting(make_server):
    server = make_server(max_json_depth=3)
    with server.http() as http:
        ok = http.post("/v1/chat/completions", json={"messages": HELLO})  # depth 3
        deep = http.post("/v1/chat/completions", json={"messages": HELLO, "stop": ["x"], "x": {"y": [{}]}})
    assert ok.status_code == 200
    assert_envelope(deep, 400, code="json_too_deep")


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth(b'{"a": "[[[[{{{{", "b": ["\\"[["]}') == 2
    assert json_depth(b'"just a string"') == 0
    assert json_depth(nested(500).encode()) == 500


def test_too_many_messages_is_400_on_every_protocol(make_server):
    server = make_server(max_messages=3)
    many = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}] * 2
    with server.http() as http:
        openai_ = http.post("/v1/chat/completions", json={"messages": many})
        anthropic = http.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": many})
        ollama = http.post("/api/chat", json={"model": "m", "messages": many})
        responses = http.post("/v1/responses", json={"model": "m", "input": many})
        fits = http.post("/v1/chat/completions", json={"messages": many[:3], "max_tokens": 2})
    err = assert_envelope(openai_, 400, code="too_many_messages", param="messages")
    assert "4 messages" in err["message"] and "at most 3" in err["message"]
    assert anthropic.status_code == 400 and "at most 3" in anthropic.json()["error"]["message"]
    assert ollama.status_code == 400 and "at most 3" in ollama.json()["error"]
    assert_envelope(responses, 400, code="too_many_messages")
    assert fits.status_code == 200


def test_too_many_tools_is_400(make_server):
    server = make_server(max_tools=2)
    tools = [{**TOOL, "function": {**TOOL["function"], "name": f"f{i}"}} for i in range(3)]
    with server.http() as http:
        r = http.post("/v1/chat/completions", json={"messages": HELLO, "tools": tools})
        ok = http.post("/v1/chat/completions", json={"messages": HELLO, "tools": tools[:2], "max_tokens": 2})
    assert_envelope(r, 400, code="too_many_tools", param="tools")
    assert ok.status_code == 200


def test_too_many_stop_entries_is_400_on_every_protocol(server):
    stops = ["a", "b", "c", "d", "e"]
    with server.http() as http:
        openai_ = http.post("/v1/chat/completions", json={"messages": HELLO, "stop": stops})
        completion = http.post("/v1/completions", json={"prompt": "x", "stop": stops})
        ollama = http.post("/api/chat", json={"model": "m", "messages": HELLO, "options": {"stop": stops}})
    assert_envelope(openai_, 400, param="stop")
    assert_envelope(completion, 400, param="stop")
    assert ollama.status_code == 400 and "stop" in ollama.json()["error"]


@pytest.mark.parametrize(
    "content",
    [b'"\\ud800"', b'"a\\udc00b"', b'"\\ud83d then \\ude00"', b'"\xed\xa0\x80"'],
)
def test_lone_surrogates_are_400_not_a_tokenizer_crash(server, content):
    body = b'{"messages": [{"role": "user", "content": ' + content + b"}]}"
    with server.http() as http:
        r = http.post("/v1/chat/completions", content=body)
        pair = http.post(
            "/v1/chat/completions",
            content=b'{"max_tokens": 2, "messages": [{"role": "user", "content": "\\ud83d\\ude00 \\\\ud800"}]}',
        )
    assert_envelope(r, 400, code="invalid_unicode")
    assert pair.status_code == 200  # a real pair, and an escaped backslash before "ud800"


def test_found_by_fuzzing_orphan_tool_message_and_unpathable_model_name(server):
    with server.http() as http:
        orphan = http.post("/v1/chat/completions", json={"messages": [{"role": "tool", "content": "x"}]})
        long_name = http.post("/v1/chat/completions", json={"model": "x" * 5000, "messages": HELLO, "max_tokens": 2})
    assert_envelope(orphan, 400, param="messages")
    assert long_name.status_code == 200  # an unknown name: the loaded model answers


def test_found_by_schemathesis_top_k_above_the_vocabulary_means_no_top_k(server):
    with server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            json={"messages": HELLO, "top_k": 100_000, "temperature": 1, "max_tokens": 3},
        )
    assert r.status_code == 200, r.text


def test_a_failed_sampler_does_not_break_later_sampled_generations(engine):
    """mlx-lm's compiled sampler left the random state broken when it raised."""
    prompt = engine.tokenizer.encode("Say hello.")

    async def run(sampling):
        request = GenerationRequest(prompt=prompt, max_tokens=3, sampling=sampling)
        return [d async for d in engine.generate(request)]

    with pytest.raises(GenerationError):
        asyncio.run(run(SamplingParams(temperature=1.0, top_k=engine.vocab_size + 10)))
    deltas = asyncio.run(run(SamplingParams(temperature=1.0)))
    assert deltas[-1].finish_reason is not None
