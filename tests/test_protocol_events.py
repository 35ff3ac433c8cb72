"""Protocol conformance: Anthropic's and Ollama's event sequences, as pure functions over events."""

import asyncio
import json

import pytest

from mlxserve import anthropic_format, ollama_format
from mlxserve.engine import Delta
from mlxserve.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelLoadingError,
    NotFoundError,
    PayloadTooLargeError,
    ServerBusyError,
)
from mlxserve.parsing import Event, ToolCall
from mlxserve.protocols import anthropic_error_body, as_error, error_body_for, ollama_error_body
from mlxserve.schemas.anthropic import MessageCreateParams
from mlxserve.schemas.ollama import ChatRequest, GenerateRequest

CALL = ToolCall("call_abc", "get_weather", '{"city": "Paris"}')


def ev(content="", reasoning="", calls=(), finish=None, n=1, stop=None) -> Event:
    return Event(
        Delta(content, finish, 7, n, stop_sequence=stop), content, reasoning, calls, finish
    )


async def _aiter(items):
    for item in items:
        yield item


async def _failing(items, exc):
    for item in items:
        yield item
    raise exc


def collect(agen) -> list:
    async def run():
        return [x async for x in agen]

    return asyncio.run(run())


def run(coro):
    return asyncio.run(coro)


# ---- Anthropic ----


def anthropic_events(events, thinking=True, source=None) -> list[tuple[str, dict]]:
    stream = anthropic_format.message_stream(
        source or _aiter(events), model="m", input_tokens=7, thinking=thinking
    )
    out = []
    for sse in collect(stream):
        data = json.loads(sse["data"])
        assert data["type"] == sse["event"], "each event's data names its own type"
        out.append((sse["event"], data))
    return out


def kinds(events) -> list[str]:
    out = []
    for kind, data in events:
        if kind == "content_block_start":
            kind += ":" + data["content_block"]["type"]
        elif kind == "content_block_delta":
            kind += ":" + data["delta"]["type"]
        out.append(kind)
    return out


def test_anthropic_text_answer_sequence():
    events = anthropic_events([ev("Hel"), ev("lo.", n=2), ev(finish="stop", n=3)])
    assert kinds(events) == [
        "message_start",
        "ping",
        "content_block_start:text",
        "content_block_delta:text_delta",
        "content_block_delta:text_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert start["id"].startswith("msg_")
    assert [d["delta"]["text"] for k, d in events if k == "content_block_delta"] == ["Hel", "lo."]
    assert all(d["index"] == 0 for k, d in events if k.startswith("content_block"))
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    }


def test_anthropic_thinking_then_text_are_two_blocks():
    events = anthropic_events([ev(reasoning="2 plus 3."), ev("It is 5.", finish="stop")])
    assert kinds(events)[2:-2] == [
        "content_block_start:thinking",
        "content_block_delta:thinking_delta",
        "content_block_stop",
        "content_block_start:text",
        "content_block_delta:text_delta",
        "content_block_stop",
    ]
    blocks = [d for k, d in events if k.startswith("content_block")]
    assert [b["index"] for b in blocks] == [0, 0, 0, 1, 1, 1]
    assert blocks[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}


def test_anthropic_thinking_disabled_leaves_reasoning_out():
    events = anthropic_events([ev(reasoning="hmm"), ev("Hi", finish="stop")], thinking=False)
    assert "content_block_start:thinking" not in kinds(events)
    assert events[2][1]["index"] == 0


def test_anthropic_tool_use_after_text():
    events = anthropic_events([ev("Let me look."), ev(calls=(CALL,), finish="tool_calls", n=9)])
    assert kinds(events)[2:] == [
        "content_block_start:text",
        "content_block_delta:text_delta",
        "content_block_stop",
        "content_block_start:tool_use",
        "content_block_delta:input_json_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[5][1]
    assert start["index"] == 1
    assert start["content_block"] == {
        "type": "tool_use",
        "id": "toolu_abc",
        "name": "get_weather",
        "input": {},
    }
    assert json.loads(events[6][1]["delta"]["partial_json"]) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    "last, reason, sequence",
    [
        (ev(finish="stop"), "end_turn", None),
        (ev(finish="length"), "max_tokens", None),
        (ev(finish="stop", stop="###"), "stop_sequence", "###"),
        (ev(calls=(CALL,), finish="tool_calls"), "tool_use", None),
    ],
)
def test_anthropic_stop_reasons(last, reason, sequence):
    delta = anthropic_events([last])[-2][1]["delta"]
    assert delta == {"stop_reason": reason, "stop_sequence": sequence}


def test_anthropic_empty_answer_has_no_blocks():
    assert kinds(anthropic_events([ev(finish="length")])) == [
        "message_start",
        "ping",
        "message_delta",
        "message_stop",
    ]


def test_anthropic_error_mid_stream_is_an_error_event():
    source = _failing([ev("Hi")], ServerBusyError("busy"))
    events = anthropic_events([], source=source)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "busy"}},
    )


def test_anthropic_fold_is_the_accumulated_stream():
    events = [
        ev(reasoning="think"),
        ev("Hi "),
        ev("there", n=4),
        ev(calls=(CALL,), finish="tool_calls", n=9),
    ]
    message = run(anthropic_format.message_fold(_aiter(events), model="m", input_tokens=7))
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "think"
    assert message.content[1].text == "Hi there"
    assert message.content[2].input == {"city": "Paris"} and message.content[2].id == "toolu_abc"
    assert message.stop_reason == "tool_use" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 9)


def test_anthropic_fold_raises_the_error():
    with pytest.raises(ServerBusyError):
        run(
            anthropic_format.message_fold(
                _failing([ev("x")], ServerBusyError("busy")), model="m", input_tokens=1
            )
        )


def test_anthropic_request_translation():
    body = MessageCreateParams.model_validate(
        {
            "model": "claude",
            "max_tokens": 50,
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "call it", "signature": "x"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "w",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "sunny"}],
                        },
                        {"type": "text", "text": "Thanks."},
                    ],
                },
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_k": 3,
        }
    )
    req = anthropic_format.chat_request(body)
    assert [m.to_template() for m in req.messages] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1"},
        {"role": "user", "content": "Thanks."},
    ]
    assert req.tool_choice == "required"
    assert req.offered_tools() == [
        {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
    ]
    assert (req.max_tokens, req.temperature, req.top_k, req.stop_list()) == (50, 0.5, 3, ("END",))


@pytest.mark.parametrize(
    "choice, expected",
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "w"}, {"type": "function", "function": {"name": "w"}}),
    ],
)
def test_anthropic_tool_choice_translation(choice, expected):
    body = MessageCreateParams.model_validate(
        {
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": choice,
        }
    )
    got = anthropic_format.chat_request(body).tool_choice
    assert (got if isinstance(got, str) else got.model_dump()) == expected


# ---- Ollama ----


def fake_clock(*stamps):
    it = iter(stamps)
    return lambda: next(it)


def ollama_chunks(events, shape="chat", think=True, source=None, clock=None) -> list[dict]:
    timer = ollama_format.Timer(clock or fake_clock(0, 100, *range(1000, 100000, 1000)))
    timer.admit()
    lines = collect(
        ollama_format.ndjson(
            source or _aiter(events), shape=shape, model="m", timer=timer, think=think
        )
    )
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    return [json.loads(line) for line in lines]


def test_ollama_chat_stream_and_timings():
    chunks = ollama_chunks([ev("Hel"), ev("lo", n=2), ev(finish="stop", n=3)])
    assert [c["message"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"role": "assistant", "content": "lo"},
        {"role": "assistant", "content": ""},
    ]
    assert [c["done"] for c in chunks] == [False, False, True]
    assert all(c["model"] == "m" and c["created_at"].endswith("Z") for c in chunks)
    assert "done_reason" not in chunks[0]
    last = chunks[-1]
    # started 0, admitted 100, events at 1000, 2000, 3000
    assert {k: v for k, v in last.items() if k.endswith(("duration", "count"))} == {
        "total_duration": 3000,
        "load_duration": 100,
        "prompt_eval_count": 7,
        "prompt_eval_duration": 900,
        "eval_count": 3,
        "eval_duration": 2000,
    }
    assert last["done_reason"] == "stop"


def test_ollama_thinking_and_tool_calls():
    chunks = ollama_chunks([ev(reasoning="hmm"), ev(calls=(CALL,), finish="tool_calls")])
    assert chunks[0]["message"] == {"role": "assistant", "content": "", "thinking": "hmm"}
    assert chunks[1]["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert chunks[-1]["done_reason"] == "stop"


def test_ollama_think_false_drops_reasoning():
    chunks = ollama_chunks([ev(reasoning="hmm"), ev("5", finish="stop")], think=False)
    assert [c["message"] for c in chunks[:-1]] == [{"role": "assistant", "content": "5"}]


def test_ollama_generate_shape_and_length():
    chunks = ollama_chunks([ev("a", reasoning="r"), ev("b", finish="length")], shape="generate")
    assert [(c["response"], c.get("thinking")) for c in chunks] == [
        ("a", "r"),
        ("b", None),
        ("", None),
    ]
    assert "message" not in chunks[0]
    assert chunks[-1]["done_reason"] == "length"


def test_ollama_error_mid_stream_is_an_error_line():
    chunks = ollama_chunks([], source=_failing([ev("x")], ServerBusyError("busy")))
    assert chunks[-1] == {"error": "busy"}


def test_ollama_fold_merges_the_chunks():
    events = [
        ev("He", reasoning="r1"),
        ev("llo", reasoning="r2"),
        ev(calls=(CALL,), finish="tool_calls", n=5),
    ]
    timer = ollama_format.Timer(fake_clock(0, 10, 20, 30, 40))
    timer.admit()
    body = run(ollama_format.fold(_aiter(events), shape="chat", model="m", timer=timer))
    assert body["message"] == {
        "role": "assistant",
        "content": "Hello",
        "thinking": "r1r2",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }
    assert body["done"] is True and body["eval_count"] == 5 and body["total_duration"] == 40


def test_ollama_raw_events_carry_all_text():
    deltas = [Delta("<think>", None, 3, 1), Delta("x", "stop", 3, 2)]
    events = collect(ollama_format.raw_events(_aiter(deltas)))
    assert [(e.content, e.reasoning, e.finish_reason) for e in events] == [
        ("<think>", "", None),
        ("x", "", "stop"),
    ]


def test_ollama_chat_translation():
    body = ChatRequest.model_validate(
        {
            "model": "llama3",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "w", "arguments": {"city": "Paris"}}}],
                },
                {"role": "tool", "content": "sunny", "tool_name": "w"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
            ],
            "format": "json",
            "options": {
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": 4,
                "num_predict": 12,
                "stop": ["\n\n"],
                "seed": 7,
                "repeat_penalty": 1.1,
                "num_ctx": 8192,
            },
        }
    )
    req = ollama_format.chat_request(body, max_tokens_cap=4096)
    templated = [m.to_template() for m in req.messages]
    assert templated[1]["tool_calls"][0]["function"] == {
        "name": "w",
        "arguments": {"city": "Paris"},
    }
    assert templated[2] == {"role": "tool", "content": "sunny", "name": "w"}
    assert req.response_format.type == "json_object"
    assert (req.temperature, req.top_p, req.top_k, req.max_tokens, req.seed) == (0.2, 0.9, 4, 12, 7)
    assert req.stop_list() == ("\n\n",) and req.repetition_penalty == 1.1
    assert req.offered_tools()[0]["function"]["name"] == "w"


@pytest.mark.parametrize("num_predict", [-1, -2])
def test_ollama_unlimited_num_predict_is_the_server_cap(num_predict):
    body = GenerateRequest(prompt="hi", options={"num_predict": num_predict})
    assert ollama_format.generate_request(body, max_tokens_cap=321).max_tokens == 321


def test_ollama_generate_translation_and_schema_format():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = GenerateRequest(prompt="Paris?", system="Answer in JSON.", format=schema)
    req = ollama_format.generate_request(body, max_tokens_cap=10)
    assert [m.to_template() for m in req.messages] == [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Paris?"},
    ]
    assert req.response_format.type == "json_schema"
    assert req.response_format.json_schema.schema_ == schema
    raw = ollama_format.raw_request(GenerateRequest(prompt="abc", raw=True), max_tokens_cap=10)
    assert raw.prompt == "abc"
    with pytest.raises(InvalidRequestError):
        ollama_format.raw_request(
            GenerateRequest(prompt="abc", raw=True, format="json"), max_tokens_cap=10
        )


# ---- error shapes ----


@pytest.mark.parametrize(
    "exc, status, kind",
    [
        (InvalidRequestError("bad"), 400, "invalid_request_error"),
        (ContextLengthExceededError(10, 8, 5), 400, "invalid_request_error"),
        (AuthenticationError("key"), 401, "authentication_error"),
        (NotFoundError("where"), 404, "not_found_error"),
        (PayloadTooLargeError("big"), 413, "request_too_large"),
        (ServerBusyError("busy"), 429, "rate_limit_error"),
        (ModelLoadingError("loading"), 503, "overloaded_error"),
        (RuntimeError("boom"), 500, "api_error"),
    ],
)
def test_error_shapes_per_protocol(exc, status, kind):
    err = as_error(exc)
    assert err.status_code == status
    assert anthropic_error_body(exc) == {
        "type": "error",
        "error": {"type": kind, "message": err.message},
    }
    assert ollama_error_body(exc) == {"error": err.message}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        assert error_body_for(path, err) == anthropic_error_body(exc)
    assert error_body_for("/api/chat", err) == {"error": err.message}
    assert set(error_body_for("/v1/chat/completions", err)["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
