"""Tool calls and reasoning over real HTTP, with the openai SDK, on the trained test model."""

import json
import shutil

import openai
import pytest
from mlx_lm.utils import load_tokenizer

from mlxserve.config import DEMO_MODEL_PATH
from mlxserve.engine import Delta, Engine
from mlxserve.parsing import AnswerParser
from tests.test_errors import assert_envelope


def ask(client, example, **kwargs):
    tools = {"tools": example["tools"]} if example["tools"] else {}
    return client.chat.completions.create(
        model="m", messages=example["messages"], **tools, **kwargs
    )


def trained_call(example) -> dict:
    """The tool call the model was trained to make, from its raw trained text."""
    text = example["completion"]
    return json.loads(text[text.index("{") : text.rindex("}") + 1])


@pytest.mark.parametrize("name", ["tool_call", "add_tool"])
def test_tool_call_non_stream(server, examples, name):
    reply = ask(server.openai(), examples[name])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    expected = trained_call(examples[name])
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == expected["name"]
    assert json.loads(call.function.arguments) == expected["arguments"]
    # usage still counts every generated token, the markup included
    assert reply.usage.completion_tokens > 5


def test_tool_call_stream_deltas_have_openais_shape(server, examples):
    stream = ask(server.openai(), examples["tool_call"], stream=True)
    deltas, finish = [], None
    for chunk in stream:
        choice = chunk.choices[0]
        assert not choice.delta.content, "no tool markup may leak into the content"
        deltas += choice.delta.tool_calls or []
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    first, *rest = deltas
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "get_weather"
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == {"city": "Paris"}


def test_sdk_stream_helper_reassembles_the_call(server, examples):
    example = examples["add_tool"]
    with server.openai().chat.completions.stream(
        model="m", messages=example["messages"], tools=example["tools"]
    ) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [(e.name, json.loads(e.arguments)) for e in done] == [("add", {"a": 2, "b": 3})]
    [call] = final.choices[0].message.tool_calls
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 3}
    assert final.choices[0].finish_reason == "tool_calls"


def test_two_calls_with_text_before_them(server, examples):
    reply = ask(server.openai(), examples["two_calls"])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content.strip() == "Let me check both cities."
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "London"}),
    ]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_two_calls_stream_as_index_0_then_1_after_the_text(server, examples):
    stream = ask(server.openai(), examples["two_calls"], stream=True)
    events = []  # ("text", ...) and ("call", delta) in arrival order
    for chunk in stream:
        delta = chunk.choices[0].delta
        if delta.content:
            events.append(("text", delta.content))
        events += [("call", d) for d in delta.tool_calls or []]
    kinds = [kind for kind, _ in events]
    assert kinds.index("call") > max(i for i, k in enumerate(kinds) if k == "text")
    text = "".join(v for k, v in events if k == "text")
    assert text.strip() == "Let me check both cities." and "<tool_call>" not in text
    calls = [d for k, d in events if k == "call"]
    assert [d.index for d in calls] == sorted(d.index for d in calls)
    firsts = [d for d in calls if d.id is not None]
    assert [(d.index, d.function.name) for d in firsts] == [(0, "get_weather"), (1, "get_weather")]
    for index, city in ((0, "Paris"), (1, "London")):
        arguments = "".join(d.function.arguments or "" for d in calls if d.index == index)
        assert json.loads(arguments) == {"city": city}


def test_sdk_stream_helper_reassembles_two_calls(server, examples):
    example = examples["two_calls"]
    with server.openai().chat.completions.stream(
        model="m", messages=example["messages"], tools=example["tools"]
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert [json.loads(c.function.arguments)["city"] for c in message.tool_calls] == ["Paris", "London"]
    assert message.content.strip() == "Let me check both cities."


def test_parallel_tool_calls_false_answers_with_the_first_call_only(server, examples):
    reply = ask(server.openai(), examples["two_calls"], parallel_tool_calls=False)
    [call] = reply.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls"


def test_full_round_trip_answers_the_tool_result(server, examples):
    client = server.openai()
    first = ask(client, examples["tool_call"])
    [call] = first.choices[0].message.tool_calls
    weather = examples["tool_result"]["messages"][-1]["content"]
    reply = client.chat.completions.create(
        model="m",
        messages=examples["tool_call"]["messages"]
        + [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": weather},
        ],
        tools=examples["tool_call"]["tools"],
    )
    assert reply.choices[0].message.content == examples["tool_result"]["completion"]
    assert reply.choices[0].finish_reason == "stop"


def test_tool_choice_none_offers_no_tools_and_parses_nothing(server, examples):
    example = examples["tool_call"]
    with_tools = ask(server.openai(), example)
    without = ask(server.openai(), example, tool_choice="none")
    # The template got no tools: the prompt is shorter, and no call is parsed out.
    assert without.usage.prompt_tokens < with_tools.usage.prompt_tokens
    assert without.choices[0].message.tool_calls is None
    assert without.choices[0].finish_reason in ("stop", "length")


def test_reasoning_is_split_from_the_answer(server, examples):
    reply = ask(server.openai(), examples["think"])
    message = reply.choices[0].message
    assert message.reasoning_content == "2 plus 3 makes 5."
    assert message.content == "The answer is 5."


def test_reasoning_streams_as_reasoning_content(server, examples):
    reasoning, content = "", ""
    for chunk in ask(server.openai(), examples["think"], stream=True):
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
    assert (reasoning, content) == ("2 plus 3 makes 5.", "The answer is 5.")


@pytest.mark.parametrize(
    "mode, content",
    [("inline", "<think>\n2 plus 3 makes 5.\n</think>\n\nThe answer is 5."), ("hide", "The answer is 5.")],
)
def test_reasoning_modes(make_server, examples, mode, content):
    server = make_server(reasoning=mode)
    for stream in (False, True):
        reply = ask(server.openai(), examples["think"], stream=stream)
        if stream:
            deltas = [c.choices[0].delta for c in reply]
            text = "".join(d.content or "" for d in deltas)
            assert not any(getattr(d, "reasoning_content", None) for d in deltas)
        else:
            text = reply.choices[0].message.content
            assert getattr(reply.choices[0].message, "reasoning_content", None) is None
        assert text == content


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools.0.function.parameters",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools.0.function.parameters",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ],
)
def test_bad_tools_are_400_naming_the_param(server, extra, param):
    with server.http() as http:
        r = http.post("/v1/chat/completions", json={"messages": HELLO, **extra})
    assert_envelope(r, 400, param=param)


def test_sdk_raises_bad_request_for_an_unknown_forced_function(server, examples):
    with pytest.raises(openai.BadRequestError) as info:
        ask(
            server.openai(),
            examples["tool_call"],
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
        )
    assert "launch_rocket" in info.value.message


def _two_calls_parser(parallel):
    tools = [{"type": "function", "function": {"name": name}} for name in "ab"]
    parser = AnswerParser(load_tokenizer(DEMO_MODEL_PATH), [], tools=tools, parallel=parallel)
    text = (
        '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"x": 1}}\n</tool_call>'
    )
    return parser.feed(Delta(text, "stop", 1, 30))


def test_several_calls_in_one_answer_are_several_entries():
    event = _two_calls_parser(parallel=True)
    assert [(c.name, c.arguments) for c in event.tool_calls] == [("a", "{}"), ("b", '{"x": 1}')]
    assert event.finish_reason == "tool_calls"


def test_parallel_tool_calls_false_keeps_the_first_call():
    event = _two_calls_parser(parallel=False)
    assert [c.name for c in event.tool_calls] == ["a"]
    assert event.finish_reason == "tool_calls"


def _parse_one_call(call: dict):
    tools = [{"type": "function", "function": {"name": "a"}}]
    parser = AnswerParser(load_tokenizer(DEMO_MODEL_PATH), [], tools=tools)
    text = f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
    return text, parser.feed(Delta(text, "stop", 1, 30))


@pytest.mark.parametrize(
    "call",
    [
        {"name": "launch_rocket", "arguments": {}},  # no such tool offered
        {"name": "a", "arguments": "{'x': 1"},  # text that is no JSON
        {"name": "a", "arguments": [1, 2]},  # JSON that is no object
    ],
)
def test_a_call_to_no_offered_tool_or_without_an_arguments_object_is_content(call):
    text, event = _parse_one_call(call)
    assert event.tool_calls == () and event.content == text
    assert event.finish_reason == "stop"


@pytest.mark.parametrize("arguments, expected", [('{"x": 1}', '{"x": 1}'), (None, "{}")])
def test_arguments_as_json_text_or_null_are_an_object(arguments, expected):
    _, event = _parse_one_call({"name": "a", "arguments": arguments})
    assert [(c.name, c.arguments) for c in event.tool_calls] == [("a", expected)]


@pytest.fixture(scope="module")
def think_opening_engine(tmp_path_factory):
    """The test model with a template that opens the think block in the prompt (as R1 distills do)."""
    out = tmp_path_factory.mktemp("think-opening")
    for path in DEMO_MODEL_PATH.iterdir():
        shutil.copy(path, out / path.name)
    config = json.loads((out / "tokenizer_config.json").read_text())
    opening = "{{- '<|im_start|>assistant\\n' }}"
    assert opening in config["chat_template"]
    config["chat_template"] = config["chat_template"].replace(
        opening, "{{- '<|im_start|>assistant\\n<think>\\n' }}"
    )
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    engine = Engine(str(out))
    engine.start()
    assert engine.ready.wait(120) and engine.state == "ready", engine.error
    yield engine
    engine.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_think_block_opened_by_the_template_is_still_split(make_server, think_opening_engine, examples, stream):
    server = make_server(engine_=think_opening_engine)
    reply = ask(server.openai(), examples["think"], stream=stream)
    if stream:
        deltas = [c.choices[0].delta for c in reply]
        reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
        content = "".join(d.content or "" for d in deltas)
    else:
        message = reply.choices[0].message
        reasoning, content = message.reasoning_content, message.content
    assert (reasoning, content) == ("2 plus 3 makes 5.", "The answer is 5.")


def test_json_mode_closes_a_think_block_the_template_opened(make_server, think_opening_engine, examples):
    server = make_server(engine_=think_opening_engine)
    reply = server.openai().chat.completions.create(
        model="m", messages=examples["json"]["messages"], response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content) == {"city": "Paris", "country": "France"}
