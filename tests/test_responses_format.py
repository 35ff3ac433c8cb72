"""The Responses API translation as pure functions: request -> chat request, events -> events."""

import pytest

from mlxserve.engine import Delta
from mlxserve.errors import InvalidRequestError, NotFoundError, ServiceUnavailableError
from mlxserve.parsing import Event, ToolCall
from mlxserve.responses_format import ResponseBuilder, new_response
from mlxserve.responses_request import chat_request, input_items, stored_items
from mlxserve.responses_store import ResponseStore, input_item_page
from mlxserve.schemas.responses import ResponsesRequest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def events(*steps, finish="stop", prompt=10):
    """Events as the parser yields them: (content, reasoning, calls) steps, one token each."""
    out = []
    for i, (content, reasoning, calls) in enumerate(steps, 1):
        last = i == len(steps)
        out.append(
            Event(
                Delta("", finish if last else None, prompt, i),
                content=content,
                reasoning=reasoning,
                tool_calls=tuple(calls),
                finish_reason=finish if last else None,
            )
        )
    return out


def words(text: str) -> int:
    return len(text.split())


def run(evts, summary=False, **request):
    response = new_response(ResponsesRequest(input="hi", **request), "m")
    builder = ResponseBuilder(response, count_tokens=words, summary=summary)
    out = builder.start()
    for e in evts:
        out += builder.feed(e)
    return out, builder.response


def types(out):
    return [e["type"] for e in out]


def test_text_answer_event_sequence():
    out, response = run(events(("Hel", "", ()), ("lo.", "", ())))
    assert types(out) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert out[0]["response"]["status"] == "in_progress" and out[0]["response"]["output"] == []
    item_id = out[2]["item"]["id"]
    assert item_id.startswith("msg_") and out[2]["item"]["status"] == "in_progress"
    assert all(e["item_id"] == item_id and e["output_index"] == 0 for e in out[3:8])
    assert out[6]["text"] == "Hello." and out[7]["part"]["text"] == "Hello."
    final = out[-1]["response"]
    assert final["status"] == "completed" and final["incomplete_details"] is None
    [message] = final["output"]
    assert message == {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Hello.", "annotations": [], "logprobs": []}],
    }
    assert final["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12,
    }
    assert response.model_dump(mode="json") == final


def test_reasoning_then_answer_makes_two_items():
    out, response = run(events(("", "2 plus", ()), ("", " 3.", ()), ("Five.", "", ())))
    assert types(out)[2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [c.text for c in reasoning.content] == ["2 plus 3."] and reasoning.summary == []
    assert message.content[0].text == "Five."
    assert out[2]["output_index"] == 0 and out[9]["output_index"] == 1
    assert response.usage.output_tokens_details.reasoning_tokens == 3  # "2 plus 3." in words


def test_reasoning_summary_streams_as_summary_text():
    out, response = run(events(("", "Think.", ()), ("Done.", "", ())), summary=True)
    assert types(out)[2:8] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    assert out[4]["summary_index"] == 0 and out[5]["text"] == "Think."
    assert [s.text for s in response.output[0].summary] == ["Think."]


def test_tool_call_items():
    call = ToolCall("call_abc", "get_weather", '{"city": "Paris"}')
    out, response = run(events(("", "", [call]), finish="tool_calls"), tools=[WEATHER])
    assert types(out)[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, delta, done, item_done = out[2:6]
    assert added["item"]["arguments"] == "" and added["item"]["status"] == "in_progress"
    assert (
        delta["delta"] == done["arguments"] == '{"city": "Paris"}' and done["name"] == "get_weather"
    )
    assert item_done["item"] == {
        "id": added["item"]["id"],
        "type": "function_call",
        "call_id": "call_abc",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
        "status": "completed",
    }
    assert response.status == "completed" and response.tools[0]["name"] == "get_weather"


def test_text_then_two_calls():
    calls = [ToolCall("call_1", "a", "{}"), ToolCall("call_2", "b", "{}")]
    out, response = run(events(("Let me check.", "", ()), ("", "", calls), finish="tool_calls"))
    assert [o.type for o in response.output] == ["message", "function_call", "function_call"]
    assert [e["output_index"] for e in out if e["type"] == "response.output_item.done"] == [0, 1, 2]


def test_length_is_incomplete():
    out, response = run(
        events(("Once", "", ()), (" upon", "", ()), finish="length"), max_output_tokens=2
    )
    assert types(out)[-1] == "response.incomplete"
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert (
        response.output[0].status == "incomplete"
        and response.output[0].content[0].text == "Once upon"
    )
    assert response.max_output_tokens == 2


def test_empty_answer_is_an_empty_message():
    out, response = run(events(("", "", ())))
    assert [o.type for o in response.output] == ["message"]
    assert response.output[0].content[0].text == ""
    assert types(out)[-2:] == ["response.output_item.done", "response.completed"]


def test_failure_after_start_is_error_then_failed():
    builder = ResponseBuilder(new_response(ResponsesRequest(input="hi"), "m"), count_tokens=words)
    out = builder.start() + builder.feed(events(("Hi", "", ()), ("!", "", ()))[0])
    out += builder.fail(
        ServiceUnavailableError("The server is shutting down.", code="shutting_down")
    )
    assert types(out)[-2:] == ["error", "response.failed"]
    error, failed = out[-2:]
    assert error["code"] == "shutting_down" and "shutting down" in error["message"]
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["message"] == error["message"]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))


def test_request_echo():
    response = new_response(
        ResponsesRequest(
            input="hi",
            instructions="Be brief.",
            temperature=0.5,
            tool_choice={"type": "function", "name": "get_weather"},
            tools=[WEATHER],
            text={"format": {"type": "json_object"}},
            reasoning={"effort": "low"},
            metadata={"k": "v"},
            store=False,
        ),
        "m",
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.instructions == "Be brief." and response.temperature == 0.5
    assert response.tool_choice == {"type": "function", "name": "get_weather"}
    assert response.text == {"format": {"type": "json_object"}}
    assert response.reasoning == {"effort": "low", "summary": None}
    assert response.metadata == {"k": "v"} and response.store is False


# ---- request -> chat request ----


def chat(history=(), **request):
    return chat_request(ResponsesRequest(**request), input_items.validate_python(list(history)))


def test_string_input_and_instructions():
    req = chat(input="Say hello.", instructions="Be brief.", max_output_tokens=7, temperature=0)
    assert [m.model_dump(exclude_none=True) for m in req.messages] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert req.max_tokens == 7 and req.temperature == 0


def test_items_become_messages():
    req = chat(
        input=[
            {"role": "developer", "content": "Rules."},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Weather?"}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking."}],
            },
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {
                "type": "function_call",
                "call_id": "c2",
                "name": "get_weather",
                "arguments": '{"city": "Rome"}',
            },
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "rain"}],
            },
        ],
        tools=[WEATHER],
    )
    messages = [m.to_template() for m in req.messages]
    assert [m["role"] for m in messages] == ["developer", "user", "assistant", "tool", "tool"]
    assistant = messages[2]
    assert assistant["content"] == "Checking."
    assert [(c["id"], c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        ("c1", {"city": "Paris"}),
        ("c2", {"city": "Rome"}),
    ]
    assert [(m["tool_call_id"], m["content"]) for m in messages[3:]] == [
        ("c1", "sunny"),
        ("c2", "rain"),
    ]


def test_history_comes_first():
    history = [
        {"role": "user", "content": "Weather?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather"},
    ]
    req = chat(
        history,
        input=[{"type": "function_call_output", "call_id": "c1", "output": "sunny"}],
        tools=[WEATHER],
    )
    assert [m.role for m in req.messages] == ["user", "assistant", "tool"]


def test_tools_and_choices_translate():
    req = chat(
        input="x",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    assert req.tools[0].function.name == "get_weather"
    assert req.tools[0].function.parameters == WEATHER["parameters"]
    assert req.tool_choice.function.name == "get_weather" and req.parallel_tool_calls is False
    assert chat(input="x", tools=[WEATHER], tool_choice="required").tool_choice == "required"
    assert chat(input="x", tool_choice="auto").tool_choice is None


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True},
            {
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True},
            },
        ),
    ],
)
def test_text_format_is_response_format(fmt, expected):
    req = chat(input="x", text={"format": fmt})
    got = (
        req.response_format.model_dump(exclude_none=True, by_alias=True)
        if req.response_format
        else None
    )
    assert got == expected


@pytest.mark.parametrize(
    "request_, param",
    [
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
        (
            {"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice",
        ),
        ({"input": "x", "tools": [WEATHER, WEATHER]}, "tools"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input"),
    ],
)
def test_invalid_translations_name_the_responses_param(request_, param):
    with pytest.raises(InvalidRequestError) as info:
        chat(**request_)
    assert info.value.param == param


# ---- the store ----


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def stored(store, n):
    response = new_response(ResponsesRequest(input=f"q{n}"), "m")
    store.put(response, [{"id": f"i{n}"}], [{"id": f"i{n}"}])
    return response.id


def test_store_keeps_the_newest():
    store = ResponseStore(2, 60)
    ids = [stored(store, n) for n in range(3)]
    with pytest.raises(NotFoundError):
        store.get(ids[0])
    assert store.get(ids[2]).input == [{"id": "i2"}] and len(store) == 2


def test_store_forgets_after_ttl():
    clock = Clock()
    store = ResponseStore(10, 60, clock)
    old = stored(store, 0)
    clock.now = 30
    new = stored(store, 1)
    clock.now = 61
    with pytest.raises(NotFoundError) as info:
        store.get(old, param="previous_response_id")
    assert info.value.param == "previous_response_id" and info.value.status_code == 404
    assert store.get(new) is not None


def test_store_delete_and_size_zero():
    store = ResponseStore(10, 60)
    rid = stored(store, 0)
    store.delete(rid)
    with pytest.raises(NotFoundError):
        store.delete(rid)
    off = ResponseStore(0, 60)
    with pytest.raises(NotFoundError):
        off.get(stored(off, 1))


def test_stored_items_have_ids_and_text_parts():
    body = ResponsesRequest(
        input=[
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "get_weather"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ]
    )
    message, call, output = stored_items(body.items())
    assert message["content"] == [{"type": "input_text", "text": "Weather?"}] and message[
        "id"
    ].startswith("msg_")
    assert call["id"] == "fc_1" and call["call_id"] == "c1"
    assert output["id"].startswith("item_") and output["output"] == "sunny"
    # what the store keeps reads back as the same conversation
    again = chat_request(
        ResponsesRequest(input="Next?"), input_items.validate_python([message, call, output])
    )
    assert [m.role for m in again.messages] == ["user", "assistant", "tool", "user"]


def test_input_item_pages():
    items = [{"id": f"i{n}"} for n in range(5)]
    page = input_item_page(items, limit=2, order="desc", after=None)
    assert [i["id"] for i in page.data] == ["i4", "i3"] and page.has_more
    assert (page.first_id, page.last_id) == ("i4", "i3")
    page = input_item_page(items, limit=2, order="desc", after="i1")
    assert [i["id"] for i in page.data] == ["i0"] and not page.has_more
    page = input_item_page(items, limit=20, order="asc", after="i2")
    assert [i["id"] for i in page.data] == ["i3", "i4"]
    with pytest.raises(InvalidRequestError) as info:
        input_item_page(items, limit=2, order="asc", after="nope")
    assert info.value.param == "after"
