"""Hundreds of malformed chat bodies against the real server: no 5xx, every 4xx in the envelope.

The bodies are made, not sampled: every field of a chat request gets every
wrong type, plus huge strings, deep nesting, bad unicode, invalid roles and
broken JSON. The last request must still be answered at once.
"""

import json
import random

import httpx
import pytest

from tests.conftest import sse_events

HELLO = {"role": "user", "content": "Say hello."}
BASE = {"model": "m", "messages": [HELLO], "max_tokens": 3}

FIELDS = [
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "seed", "stop", "n",
    "logit_bias", "logprobs", "top_logprobs", "stream", "stream_options", "tools", "tool_choice",
    "response_format", "parallel_tool_calls", "user", "metadata",
]


def _deep(depth: int):
    value = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


WRONG_VALUES = [
    None, True, False, 0, -1, 2**31, 10**30, 1e308, -1e-308, 0.5, "", "x", "\ud800", "\x00",
    "x" * 100_000, [], [None], [1, "a", {}], {}, {"a": 1}, {"type": "nope"}, _deep(40),
]

MESSAGE_MUTATIONS = [
    {"role": "wizard", "content": "x"}, {"role": "", "content": "x"}, {"role": None, "content": "x"},
    {"role": 5, "content": "x"}, {"role": "USER", "content": "x"}, {"role": "user"},
    {"content": "x"}, {"role": "user", "content": None}, {"role": "user", "content": 12},
    {"role": "user", "content": {"text": "x"}}, {"role": "user", "content": [{"type": "text"}]},
    {"role": "user", "content": [{"type": "text", "text": 5}]}, {"role": "user", "content": [1, 2]},
    {"role": "user", "content": [{"type": "audio", "audio": "x"}]},
    {"role": "user", "content": "\ud83d\ude00 lone: \udc00 \ud800"},
    {"role": "user", "content": "\u202e\u0000\uffff\U0010ffff"},
    {"role": "assistant", "content": None, "tool_calls": "nope"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": 1}]},
    {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]},
    {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": None}]},
    {"role": "tool", "content": "x"}, {"role": "tool", "tool_call_id": 5, "content": "x"},
    {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    {"role": "user", "content": "x", "name": {"a": 1}}, {"role": "user", "content": "x" * 200_000},
    "just a string", 42, None, [], [HELLO],
]

RAW_BODIES = [
    b"", b"null", b"[]", b"42", b'"str"', b"{", b'{"messages": [', b'{"messages": [{"role": "user"',
    b"\xff\xfe\x00garbage", b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}',
    b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', b"\xef\xbb\xbf" + json.dumps(BASE).encode(),
    b'{"messages": NaN}', b'{"max_tokens": Infinity, "messages": []}', b'{"a": 1, "a": 2}',
    b'{"messages": [' + b"{}," * 5000 + b"{}]}", b"[" * 70 + b"]" * 70, b"{" * 200_000,
    b'{"' + b"k" * 300_000 + b'": 1}', b'{"messages": "\\ud800\\udbff"}', b"\x00" * 1000,
    json.dumps({**BASE, "stop": ["a"] * 1000}).encode(),
    json.dumps({**BASE, "messages": [HELLO] * 3000}).encode(),
    json.dumps({**BASE, "tools": [{"type": "function", "function": {"name": "f"}}] * 500}).encode(),
]


def bodies() -> list[bytes]:
    out = []
    for field in FIELDS:
        for wrong in WRONG_VALUES:
            out.append(json.dumps({**BASE, field: wrong}).encode())
    for message in MESSAGE_MUTATIONS:
        out.append(json.dumps({**BASE, "messages": [message]}).encode())
        out.append(json.dumps({**BASE, "messages": [HELLO, message], "stream": True}).encode())
    rng = random.Random(6)  # a fixed seed: the same bodies every run
    for _ in range(60):  # several faults at once
        body = dict(BASE)
        for field in rng.sample(FIELDS, 3):
            body[field] = rng.choice(WRONG_VALUES)
        out.append(json.dumps(body).encode())
    return out + RAW_BODIES


def check(r: httpx.Response, body: bytes) -> None:
    assert r.status_code < 500, (body[:100], r.text[:300])
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["message"]


def test_malformed_chat_bodies_never_5xx(make_server):
    server = make_server(max_tokens=8)
    cases = bodies()
    assert len(cases) > 600
    statuses = []
    with server.http() as http:
        for body in cases:
            with http.stream(
                "POST", "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            ) as r:
                statuses.append(r.status_code)
                if r.headers.get("content-type", "").startswith("text/event-stream"):
                    events = [e for e in sse_events(r) if isinstance(e, dict)]
                    for e in events:
                        if "error" in e:
                            assert set(e["error"]) == {"message", "type", "param", "code"}
                    continue
                r.read()
                check(r, body)
        assert statuses.count(400) > len(cases) // 2  # most are refused, as they should be
        server.wait_idle()
        good = http.post("/v1/chat/completions", json=BASE, timeout=10)
    assert good.status_code == 200


@pytest.mark.parametrize(
    "path, is_error",
    [
        ("/v1/messages", lambda b: b.get("type") == "error" and b["error"]["message"]),
        ("/api/chat", lambda b: isinstance(b.get("error"), str) and b["error"]),
        ("/v1/responses", lambda b: set(b.get("error", {})) == {"message", "type", "param", "code"}),
    ],
)
def test_malformed_bodies_on_other_protocols_keep_their_error_shape(make_server, path, is_error):
    server = make_server(max_tokens=8)
    cases = RAW_BODIES + [
        json.dumps({"model": "m", "max_tokens": 3, "messages": [m]}).encode() for m in MESSAGE_MUTATIONS
    ] + [json.dumps({"model": "m", "max_tokens": 3, "input": w}).encode() for w in WRONG_VALUES]
    with server.http() as http:
        for body in cases:
            r = http.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code < 500, (body[:100], r.text[:300])
            if r.status_code >= 400:
                assert is_error(r.json()), r.text[:300]
        server.wait_idle()
        assert http.get("/healthz").status_code == 200
