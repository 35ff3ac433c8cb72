"""The Anthropic Messages API over real HTTP, with the official anthropic SDK as the client."""

import json

import anthropic
import httpx
import pytest


def client(server, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-local", max_retries=0, **kwargs)


def tools_of(example) -> list[dict]:
    """The example's OpenAI tools as Anthropic tools."""
    return [
        {
            "name": t["function"]["name"],
            "description": t["function"]["description"],
            "input_schema": t["function"]["parameters"],
        }
        for t in example["tools"] or []
    ]


def ask(server, example, **kwargs):
    tools = {"tools": tools_of(example)} if example["tools"] else {}
    kwargs.setdefault("max_tokens", 200)
    return client(server).messages.create(
        model="claude-any", messages=example["messages"], **tools, **kwargs
    )


def blocks(message) -> list[dict]:
    """A message's content blocks as plain data (the stream helper's own classes aside)."""
    return [b.model_dump(exclude={"parsed_output"}) for b in message.content]


def sse_named_events(response: httpx.Response) -> list[tuple[str, str]]:
    """(event name, data) pairs of an SSE body."""
    out, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            out.append((name, line[len("data: ") :]))
            name = None
    return out


def test_create_answers_with_a_text_block_and_exact_usage(server, examples):
    message = ask(server, examples["short"])
    assert (
        message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    )
    assert message.model == "test-model"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == examples["short"]["completion"]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    # The same prompt on the OpenAI route: the same template, the same tokens.
    reply = server.openai().chat.completions.create(
        model="m", messages=examples["short"]["messages"]
    )
    assert message.usage.input_tokens == reply.usage.prompt_tokens
    assert message.usage.output_tokens == reply.usage.completion_tokens


def test_system_prompt_as_string_and_as_blocks_render_alike(server, examples):
    as_string = ask(server, examples["short"], system="You are terse.")
    as_blocks = ask(server, examples["short"], system=[{"type": "text", "text": "You are terse."}])
    plain = ask(server, examples["short"])
    assert as_string.usage.input_tokens == as_blocks.usage.input_tokens > plain.usage.input_tokens


def test_stream_helper_text_and_final_message(server, examples):
    with client(server).messages.stream(
        model="m", max_tokens=200, messages=examples["short"]["messages"]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == examples["short"]["completion"]
    created = ask(server, examples["short"])
    assert blocks(final) == blocks(created)
    assert (final.stop_reason, final.usage) == (created.stop_reason, created.usage)


def test_stream_event_sequence_over_http(server, examples):
    body = {
        "model": "m",
        "max_tokens": 200,
        "stream": True,
        "messages": examples["short"]["messages"],
    }
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "anything"}
    with (
        server.http() as http,
        http.stream("POST", "/v1/messages", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_named_events(r)
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert set(names[3:-3]) == {"content_block_delta"}


def test_tool_use_round_trip(server, examples):
    first = ask(server, examples["tool_call"])
    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert call.type == "tool_use" and call.id.startswith("toolu_")
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    weather = examples["tool_result"]["messages"][-1]["content"]
    second = client(server).messages.create(
        model="m",
        max_tokens=200,
        tools=tools_of(examples["tool_call"]),
        messages=examples["tool_call"]["messages"]
        + [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": weather}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == examples["tool_result"]["completion"]


def test_streamed_tool_use_arrives_as_input_json(server, examples):
    example = examples["add_tool"]
    with client(server).messages.stream(
        model="m", max_tokens=200, messages=example["messages"], tools=tools_of(example)
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    [call] = final.content
    assert (call.name, call.input) == ("add", {"a": 2, "b": 3})
    assert final.stop_reason == "tool_use"


def test_tool_choice_none_offers_no_tools(server, examples):
    with_tools = ask(server, examples["tool_call"])
    without = ask(server, examples["tool_call"], tool_choice={"type": "none"})
    assert without.usage.input_tokens < with_tools.usage.input_tokens
    assert all(b.type == "text" for b in without.content)


def test_thinking_block_then_text(server, examples):
    message = ask(server, examples["think"])
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "2 plus 3 makes 5."
    assert message.content[1].text == "The answer is 5."
    with client(server).messages.stream(
        model="m", max_tokens=200, messages=examples["think"]["messages"]
    ) as stream:
        thinking = "".join(e.thinking for e in stream if e.type == "thinking")
        final = stream.get_final_message()
    assert thinking == "2 plus 3 makes 5."
    assert blocks(final) == blocks(message)


def test_thinking_disabled_leaves_the_reasoning_out(server, examples):
    message = ask(server, examples["think"], thinking={"type": "disabled"})
    assert [(b.type, b.text) for b in message.content] == [("text", "The answer is 5.")]


def test_stop_sequence_is_named(server, examples):
    message = ask(server, examples["short"], stop_sequences=["nothing", "tiny"])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "tiny"
    assert message.content[0].text == "Hello! I am a "


def test_max_tokens_stop_reason(server, examples):
    message = ask(server, examples["long"], max_tokens=3)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3


@pytest.mark.parametrize("name", ["short", "tool_call"])
def test_count_tokens_is_the_generations_prompt(server, examples, name):
    example = examples[name]
    tools = {"tools": tools_of(example)} if example["tools"] else {}
    counted = client(server).messages.count_tokens(
        model="m", messages=example["messages"], system="Be brief.", **tools
    )
    created = ask(server, example, system="Be brief.")
    assert counted.input_tokens == created.usage.input_tokens


def test_invalid_request_is_bad_request_error(server, examples):
    with pytest.raises(anthropic.BadRequestError) as info:
        # This SDK has no sampling parameters of its own; older ones and other clients send them.
        ask(server, examples["short"], extra_body={"temperature": 1.5})
    assert info.value.status_code == 400
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in info.value.body["error"]["message"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "messages"),
        (
            {
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            },
            "image",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tool_choice": {"type": "any"},
            },
            "tools",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "stop_sequences": [""],
            },
            "stop",
        ),
    ],
)
def test_bad_bodies_get_anthropics_error_shape(server, body, words):
    with server.http() as http:
        r = http.post("/v1/messages", json=body)
    assert r.status_code == 400
    assert r.json()["type"] == "error" and set(r.json()["error"]) == {"type", "message"}
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert words in r.json()["error"]["message"]


def test_unknown_path_is_not_found_error(server):
    with server.http() as http:
        r = http.post("/v1/messages/batches", json={})
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


def test_api_key_errors_are_authentication_errors(make_server, examples):
    server = make_server(api_key="sk-right")
    good = anthropic.Anthropic(base_url=server.url, api_key="sk-right", max_retries=0)
    reply = good.messages.create(model="m", max_tokens=50, messages=examples["short"]["messages"])
    assert reply.content[0].text == examples["short"]["completion"]
    with pytest.raises(anthropic.AuthenticationError) as info:
        client(server).messages.create(
            model="m", max_tokens=50, messages=examples["short"]["messages"]
        )
    assert info.value.body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
def test_any_or_named_tool_choice_forces_a_call(server, examples, choice):
    message = ask(
        server, {**examples["short"], "tools": examples["tool_call"]["tools"]}, tool_choice=choice
    )
    assert message.stop_reason == "tool_use"
    assert [b.name for b in message.content if b.type == "tool_use"] == ["get_weather"]


def test_keepalive_is_a_ping_event(make_server):
    """A long prompt takes a while to prefill: the stream sends ping events meanwhile."""
    server = make_server(keepalive_interval=0.01)
    body = {
        "max_tokens": 3,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story. " * 250}],
    }
    with server.http() as http, http.stream("POST", "/v1/messages", json=body) as r:
        events = sse_named_events(r)
    pings = [data for name, data in events if name == "ping"]
    assert len(pings) > 1 and all(json.loads(d) == {"type": "ping"} for d in pings)
    # Pings may come anywhere in Anthropic's streams (a 10 ms interval can land one after the
    # last event, before the response ends); the other events frame the message.
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start" and names[-1] == "message_stop"
