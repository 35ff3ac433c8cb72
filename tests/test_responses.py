"""/v1/responses over real HTTP with the openai SDK's responses client, on the trained model."""

import json
import threading
import time

import httpx
import openai
import pytest

from tests.test_concurrency import stream_first_chunks
from tests.test_errors import assert_envelope


def flat(tool: dict) -> dict:
    """A chat completions tool in the Responses API's flat shape."""
    return {"type": "function", **tool["function"]}


def weather_tools(examples) -> list[dict]:
    return [flat(t) for t in examples["tool_call"]["tools"]]


def weather_result(examples) -> str:
    return examples["tool_result"]["messages"][-1]["content"]


def prompt_of(example) -> str:
    return example["messages"][-1]["content"]


def raw_stream(server, body) -> list[tuple[str, dict]]:
    """(event name, data) pairs of an SSE response, as sent."""
    pairs, name = [], None
    with (
        server.http() as http,
        http.stream("POST", "/v1/responses", json={**body, "stream": True}) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                pairs.append((name, json.loads(line[len("data: ") :])))
                name = None
    return pairs


def test_trained_answer_non_stream(server, engine, examples):
    short = examples["short"]
    r = server.openai().responses.create(model="m", input=prompt_of(short))
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.model == "test-model"
    assert r.output_text == short["completion"]
    [message] = r.output
    assert (
        message.type == "message" and message.role == "assistant" and message.status == "completed"
    )
    assert [c.type for c in message.content] == ["output_text"]
    prompt = engine.tokenizer.apply_chat_template(short["messages"], add_generation_prompt=True)
    answer = engine.tokenizer.encode(short["completion"], add_special_tokens=False)
    assert r.usage.input_tokens == len(prompt)
    assert r.usage.output_tokens == len(answer) + 1  # the end-of-turn token counts
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.incomplete_details is None and r.error is None


def test_stream_helper_reassembles_the_answer(server, examples):
    short = examples["short"]
    client = server.openai()
    with client.responses.stream(model="m", input=prompt_of(short)) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 3 and "".join(deltas) == short["completion"]
    assert final.output_text == short["completion"] and final.status == "completed"
    assert final.usage.output_tokens > len(deltas) - 1
    # the stored response is the one that streamed
    assert client.responses.retrieve(final.id).output_text == short["completion"]


def test_stream_wire_format(server, examples):
    pairs = raw_stream(server, {"input": prompt_of(examples["short"])})
    assert all(name == data["type"] for name, data in pairs), "every event is named by its type"
    assert [data["sequence_number"] for _, data in pairs] == list(range(len(pairs)))
    names = [name for name, _ in pairs]
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(names[4:-4]) == {"response.output_text.delta"}
    created, completed = pairs[0][1]["response"], pairs[-1][1]["response"]
    assert created["status"] == "in_progress" and created["id"] == completed["id"]
    assert completed["output"][0]["content"][0]["text"] == examples["short"]["completion"]


def test_stream_and_non_stream_agree(server, examples):
    client = server.openai()
    example = examples["think"]
    plain = client.responses.create(model="m", input=prompt_of(example))
    with client.responses.stream(model="m", input=prompt_of(example)) as stream:
        streamed = stream.get_final_response()
    strip = lambda r: [
        {k: v for k, v in o.model_dump(exclude_none=True).items() if k != "id"} for o in r.output
    ]  # noqa: E731
    assert strip(plain) == strip(streamed)
    assert plain.usage == streamed.usage


def test_function_call_round_trip_resending_the_conversation(server, examples):
    client = server.openai()
    tools = weather_tools(examples)
    question = [{"role": "user", "content": prompt_of(examples["tool_call"])}]
    first = client.responses.create(model="m", input=question, tools=tools, store=False)
    [call] = first.output
    assert call.type == "function_call" and call.status == "completed"
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert first.output_text == ""
    result = {
        "type": "function_call_output",
        "call_id": call.call_id,
        "output": weather_result(examples),
    }
    second = client.responses.create(
        model="m",
        input=question + [call.model_dump(exclude_none=True), result],
        tools=tools,
        store=False,
    )
    assert second.output_text == examples["tool_result"]["completion"]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)  # store=False keeps nothing


def test_previous_response_id_continues_with_only_the_tool_output(server, examples):
    client = server.openai()
    tools = weather_tools(examples)
    first = client.responses.create(model="m", input=prompt_of(examples["tool_call"]), tools=tools)
    [call] = first.output
    second = client.responses.create(
        model="m",
        previous_response_id=first.id,
        input=[
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": weather_result(examples),
            }
        ],
        tools=tools,
    )
    assert second.output_text == examples["tool_result"]["completion"]
    assert second.previous_response_id == first.id
    # The whole conversation was in the prompt: more input tokens than the first turn.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens - 5


def test_streamed_function_call(server, examples):
    example = examples["add_tool"]
    client = server.openai()
    tools = [flat(t) for t in example["tools"]]
    with client.responses.stream(model="m", input=prompt_of(example), tools=tools) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.output_text.delta" not in kinds, "no tool markup leaks into text"
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [json.loads(e.arguments) for e in done] == [{"a": 2, "b": 3}]
    [call] = final.output
    assert call.type == "function_call" and call.name == "add"
    assert json.loads(call.arguments) == {"a": 2, "b": 3}
    # ... and the stored streamed call continues the conversation
    reply = client.responses.create(
        model="m",
        previous_response_id=final.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "5"}],
        tools=tools,
    )
    assert reply.output_text == examples["add_result"]["completion"]


def test_reasoning_item(server, engine, examples):
    r = server.openai().responses.create(model="m", input=prompt_of(examples["think"]))
    reasoning, message = r.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [c.text for c in reasoning.content] == ["2 plus 3 makes 5."]
    assert r.output_text == "The answer is 5."
    thought = engine.tokenizer.encode("2 plus 3 makes 5.", add_special_tokens=False)
    assert r.usage.output_tokens_details.reasoning_tokens == len(thought) < r.usage.output_tokens


def test_reasoning_summary_stream(server, examples):
    with server.openai().responses.stream(
        model="m",
        input=prompt_of(examples["think"]),
        reasoning={"effort": "low", "summary": "auto"},
    ) as stream:
        summary = "".join(
            e.delta for e in stream if e.type == "response.reasoning_summary_text.delta"
        )
        final = stream.get_final_response()
    assert summary == "2 plus 3 makes 5."
    assert [s.text for s in final.output[0].summary] == [summary]
    assert final.reasoning.effort == "low"


def test_max_output_tokens_is_incomplete(server, examples):
    long = examples["long"]
    r = server.openai().responses.create(model="m", input=prompt_of(long), max_output_tokens=5)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5 and long["completion"].startswith(r.output_text)
    assert r.output[0].status == "incomplete"
    pairs = raw_stream(server, {"input": prompt_of(long), "max_output_tokens": 5})
    assert pairs[-1][0] == "response.incomplete"
    assert pairs[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "json_object"},
        {
            "type": "json_schema",
            "name": "city",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                "required": ["city", "country"],
                "additionalProperties": False,
            },
        },
    ],
)
def test_text_format_gives_json(server, examples, fmt):
    r = server.openai().responses.create(
        model="m", input=prompt_of(examples["json"]), text={"format": fmt}
    )
    assert json.loads(r.output_text) == json.loads(examples["json"]["completion"])
    assert r.text.format.type == fmt["type"]


def test_parse_with_a_pydantic_model(server, examples):
    from pydantic import BaseModel

    class City(BaseModel):
        city: str
        country: str

    r = server.openai().responses.parse(
        model="m", input=prompt_of(examples["json"]), text_format=City
    )
    assert r.output_parsed == City(city="Paris", country="France")


def test_required_tool_choice_forces_a_call(server, examples):
    tools = weather_tools(examples)
    r = server.openai().responses.create(
        model="m", input=prompt_of(examples["tool_call"]), tools=tools, tool_choice="required"
    )
    [call] = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert r.tool_choice == "required" and r.tools[0].name == "get_weather"


def test_instructions_are_a_system_message(server, engine, examples):
    short = examples["short"]
    client = server.openai()
    plain = client.responses.create(model="m", input=prompt_of(short), max_output_tokens=1)
    told = client.responses.create(
        model="m", input=prompt_of(short), instructions="Be brief.", max_output_tokens=1
    )
    messages = [{"role": "system", "content": "Be brief."}] + short["messages"]
    prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert told.usage.input_tokens == len(prompt) > plain.usage.input_tokens
    assert told.instructions == "Be brief."


def test_retrieve_delete_and_input_items(server, examples):
    client = server.openai()
    r = client.responses.create(
        model="m", input=prompt_of(examples["short"]), metadata={"who": "test"}
    )
    got = client.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump() and got.metadata == {"who": "test"}
    items = client.responses.input_items.list(r.id, limit=5, order="asc")
    [item] = items.data
    assert items.has_more is False and items.first_id == item.id
    assert item.type == "message" and item.role == "user" and item.id
    assert [(c.type, c.text) for c in item.content] == [
        ("input_text", prompt_of(examples["short"]))
    ]
    with server.http() as http:
        assert_envelope(http.get(f"/v1/responses/{r.id}/input_items?limit=0"), 400)
        assert_envelope(http.get(f"/v1/responses/{r.id}/input_items?after=x"), 400, param="after")
        deleted = http.delete(f"/v1/responses/{r.id}")
        assert deleted.json() == {"id": r.id, "object": "response", "deleted": True}
        assert_envelope(http.get(f"/v1/responses/{r.id}"), 404, param="response_id")
        assert_envelope(http.delete(f"/v1/responses/{r.id}"), 404)


def test_unknown_previous_response_is_404(server):
    with pytest.raises(openai.NotFoundError) as info:
        server.openai().responses.create(model="m", input="hi", previous_response_id="resp_nope")
    assert info.value.body["param"] == "previous_response_id"
    assert "resp_nope" in info.value.body["message"]


def test_store_size_zero_keeps_nothing(make_server, examples):
    server = make_server(response_store_size=0)
    client = server.openai()
    r = client.responses.create(model="m", input=prompt_of(examples["short"]), max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


GOOD = "Say hello."


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({}, "input", []),
        ({"input": ""}, "input", []),
        ({"input": []}, "input", []),
        ({"input": GOOD, "tools": [{"type": "web_search"}]}, "tools.0", ["web_search"]),
        (
            {"input": GOOD, "tools": [{"type": "file_search", "vector_store_ids": []}]},
            "tools.0",
            ["file_search"],
        ),
        ({"input": GOOD, "tools": [{"type": "function"}]}, "tools.0", ["name"]),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input.0.content.0",
            ["input_image"],
        ),
        ({"input": [{"type": "computer_call", "call_id": "x"}]}, "input.0", ["not supported"]),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input.0.role", []),
        ({"input": GOOD, "tool_choice": "required"}, "tool_choice", []),
        ({"input": GOOD, "tool_choice": {"type": "web_search_preview"}}, "tool_choice", []),
        ({"input": GOOD, "max_output_tokens": 0}, "max_output_tokens", []),
        ({"input": GOOD, "temperature": 3}, "temperature", []),
        (
            {"input": GOOD, "text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format",
            ["schema"],
        ),
        ({"input": GOOD, "text": {"format": {"type": "xml"}}}, "text.format.type", []),
        ({"input": GOOD, "background": True}, "background", ["background"]),
        ({"input": GOOD, "conversation": "conv_1"}, "conversation", ["conversation"]),
        ({"input": GOOD, "prompt": {"id": "pmpt_1"}}, "prompt", ["prompt"]),
    ],
)
def test_invalid_requests_are_400(server, body, param, words):
    with server.http() as http:
        err = assert_envelope(http.post("/v1/responses", json=body), 400)
    assert err["type"] == "invalid_request_error"
    assert (err["param"] or "").startswith(param), err
    for word in words:
        assert word in err["message"], err
    server.wait_idle()


def test_context_length_exceeded(make_server, engine, examples):
    short = examples["short"]
    prompt = engine.tokenizer.apply_chat_template(short["messages"], add_generation_prompt=True)
    server = make_server(max_context_tokens=len(prompt) + 5)
    with pytest.raises(openai.BadRequestError) as info:
        server.openai().responses.create(model="m", input=prompt_of(short), max_output_tokens=10)
    assert info.value.body["code"] == "context_length_exceeded"


def test_busy_is_429(make_server, examples):
    server = make_server(max_requests=1, queue_size=0, timeout=10)
    long = {"model": "x", "messages": examples["long"]["messages"], "max_tokens": 2000}
    holder = threading.Thread(target=stream_first_chunks, args=(server, long, 10**6))
    holder.start()
    deadline = time.monotonic() + 10
    while server.service.gate.active == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(openai.RateLimitError) as info:
        server.openai().responses.create(model="m", input=prompt_of(examples["short"]))
    assert info.value.body["code"] == "server_busy"
    holder.join(30)
    server.wait_idle()


def test_disconnect_mid_stream_frees_the_slot(make_server, engine, examples):
    server = make_server(max_requests=1)
    before = engine.tokens_generated
    body = {"input": prompt_of(examples["long"]), "max_output_tokens": 2000, "stream": True}
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream("POST", "/v1/responses", json=body) as r,
    ):
        deltas = 0
        for line in r.iter_lines():
            deltas += line == "event: response.output_text.delta"
            if deltas == 3:
                break
    assert server.wait_idle(timeout=2) < 1.0
    assert engine.tokens_generated - before < 40
    r = server.openai().responses.create(model="m", input=prompt_of(examples["short"]))
    assert r.output_text == examples["short"]["completion"]


def test_loading_model_is_503(make_server, held_engine):
    engine, release = held_engine
    server = make_server(engine_=engine)
    try:
        with server.http() as http:
            err = assert_envelope(
                http.post("/v1/responses", json={"input": GOOD}), 503, code="model_loading"
            )
        assert err["type"] == "server_error"
    finally:
        release.set()
        assert engine.ready.wait(60)


def test_failure_mid_stream_is_an_error_event_then_failed(make_server, model_dir, examples):
    from mlxserve.engine import Engine

    engine = Engine(str(model_dir))
    engine.start()
    assert engine.ready.wait(60)
    server = make_server(engine_=engine)
    body = {"input": prompt_of(examples["long"]), "max_output_tokens": 2000, "stream": True}
    names, data = [], []
    with server.http() as http, http.stream("POST", "/v1/responses", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
                if len(names) == 10:
                    engine.stop()
            elif line.startswith("data: "):
                data.append(json.loads(line[6:]))
    assert names[-2:] == ["error", "response.failed"]
    assert "shutting down" in data[-2]["message"]
    assert data[-1]["response"]["status"] == "failed"
    assert data[-1]["response"]["error"]["message"] == data[-2]["message"]
    server.wait_idle()


def test_a_coding_agent_shaped_conversation(server, examples):
    """The request shape Codex CLI sends: stateless (store false), history resent, items as parts.

    (Without its instructions and strict flags: the test model answers only its trained prompts.)
    """
    common = {
        "model": "m",
        "tools": weather_tools(examples),
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "text": {"verbosity": "medium"},
    }
    user = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": prompt_of(examples["tool_call"])}],
    }
    first = raw_stream(server, {**common, "input": [user]})
    done = [data["item"] for name, data in first if name == "response.output_item.done"]
    [call] = done
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert first[-1][0] == "response.completed"
    history = [
        user,
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": None},
        call,
        {
            "type": "function_call_output",
            "call_id": call["call_id"],
            "output": weather_result(examples),
        },
    ]
    second = raw_stream(server, {**common, "input": history})
    text = "".join(data["delta"] for name, data in second if name == "response.output_text.delta")
    assert text == examples["tool_result"]["completion"]


def test_window_drops_the_oldest_turns_of_a_continued_conversation(make_server, examples):
    server = make_server(max_context=1)
    short = examples["short"]
    with server.http() as http:
        first = http.post("/v1/responses", json={"input": prompt_of(short)}).json()
        r = http.post(
            "/v1/responses", json={"input": prompt_of(short), "previous_response_id": first["id"]}
        )
    assert r.headers["X-MLXServe-Context-Dropped"] == "2"
    assert r.json()["output"][0]["content"][0]["text"] == short["completion"]


def test_served_with_the_openai_protocol_only(make_server):
    server = make_server(protocols="anthropic")
    with server.http() as http:
        assert http.post("/v1/responses", json={"input": GOOD}).status_code == 404


def test_queue_timeout_while_streaming_is_an_error_event(make_server, engine, examples):
    from tests.test_queue_position import Holder, _story

    server = make_server(max_requests=1, queue_size=4, queue_timeout=0.3, keepalive_interval=30)
    holder = Holder(server, _story(engine, examples))
    body = {"input": prompt_of(examples["short"]), "stream": True}
    lines = []
    with server.http() as http, http.stream("POST", "/v1/responses", json=body) as r:
        assert r.status_code == 200
        lines = list(r.iter_lines())
    holder.done()
    assert lines[0] == ": queued position=1"
    names = [line[7:] for line in lines if line.startswith("event: ")]
    assert names == ["response.created", "response.in_progress", "error", "response.failed"]
    error = json.loads([line for line in lines if line.startswith("data: ")][2][6:])
    assert error["code"] == "queue_timeout" and error["sequence_number"] == 2
    server.wait_idle()
