"""Structured output and forced tool calls: grammar-constrained decoding on the real engine."""

import json
import shutil

import jsonschema
import mlx.core as mx
import openai
import pydantic
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models import qwen3

from mlxserve.config import DEMO_MODEL_PATH
from mlxserve.engine import Engine
from tests.test_errors import assert_envelope

HELLO = [{"role": "user", "content": "Say hello."}]

# Every value is bounded, so a model that writes at random still has to finish.
BOUNDED_SCHEMA = {
    "type": "object",
    "properties": {
        "mood": {"enum": ["happy", "sad", "calm"]},
        "ok": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 0, "maximum": 999},
        "name": {"type": "string", "maxLength": 12},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["mood", "ok", "count", "name", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def random_engine(tmp_path_factory):
    """The test model's architecture and tokenizer with untrained, random weights."""
    out = tmp_path_factory.mktemp("random-model")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO_MODEL_PATH / name, out / name)
    mx.random.seed(7)
    config = json.loads((DEMO_MODEL_PATH / "config.json").read_text())
    model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    engine = Engine(str(out))
    engine.start()
    assert engine.ready.wait(120) and engine.state == "ready", engine.error
    yield engine
    engine.stop()


def schema_format(schema, name="answer"):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def test_json_object_mode_answers_a_json_object(server, examples):
    reply = server.openai().chat.completions.create(
        model="m", messages=examples["json"]["messages"], response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content) == {"city": "Paris", "country": "France"}


def test_sdk_parse_helper_with_a_pydantic_model(server, examples):
    class City(pydantic.BaseModel):
        city: str
        country: str

    reply = server.openai().chat.completions.parse(
        model="m", messages=examples["json"]["messages"], response_format=City
    )
    assert reply.choices[0].message.parsed == City(city="Paris", country="France")


@pytest.mark.parametrize("stream", [False, True])
def test_random_weights_still_produce_schema_valid_json_that_ends(make_server, random_engine, stream):
    server = make_server(engine_=random_engine)
    client = server.openai()
    for seed in range(3):
        reply = client.chat.completions.create(
            model="m",
            messages=HELLO,
            response_format=schema_format(BOUNDED_SCHEMA),
            temperature=1.0,
            seed=seed,
            max_tokens=300,
            stream=stream,
        )
        if stream:
            chunks = list(reply)
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
        jsonschema.validate(json.loads(text), BOUNDED_SCHEMA)
        assert finish == "stop", "the grammar must end the answer before max_tokens"


def test_unconstrained_random_weights_do_not_produce_json(make_server, random_engine):
    """The control for the test above: without the grammar the same model writes noise."""
    server = make_server(engine_=random_engine)
    reply = server.openai().chat.completions.create(model="m", messages=HELLO, max_tokens=40, seed=0)
    with pytest.raises(ValueError):
        json.loads(reply.choices[0].message.content)


def weather_tools(examples):
    return examples["tool_call"]["tools"] + examples["add_tool"]["tools"]


def test_tool_choice_required_forces_a_valid_call(server, examples):
    # get_weather alone: on an untrained prompt the test model writes add's
    # integers without end, and a schema without bounds may run to max_tokens.
    tools = examples["tool_call"]["tools"]
    reply = server.openai().chat.completions.create(
        model="m", messages=HELLO, tools=tools, tool_choice="required"
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


@pytest.mark.parametrize("stream", [False, True])
def test_named_tool_choice_forces_that_function(server, examples, stream):
    # The add question would call add; the request forces get_weather.
    reply = server.openai().chat.completions.create(
        model="m",
        messages=examples["add_tool"]["messages"],
        tools=weather_tools(examples),
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=stream,
    )
    if stream:
        deltas = [d for c in reply for d in (c.choices[0].delta.tool_calls or [])]
        name = deltas[0].function.name
        arguments = "".join(d.function.arguments or "" for d in deltas)
    else:
        [call] = reply.choices[0].message.tool_calls
        name, arguments = call.function.name, call.function.arguments
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), examples["tool_call"]["tools"][0]["function"]["parameters"])


def test_forced_call_on_random_weights_is_valid(make_server, random_engine, examples):
    server = make_server(engine_=random_engine)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "set_mode",
                "parameters": {
                    "type": "object",
                    "properties": {"mode": {"enum": ["on", "off"]}, "level": {"type": "integer", "minimum": 1, "maximum": 5}},
                    "required": ["mode", "level"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    reply = server.openai().chat.completions.create(
        model="m", messages=HELLO, tools=tools, tool_choice="required", max_tokens=200, seed=1
    )
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "set_mode"
    jsonschema.validate(json.loads(call.function.arguments), tools[0]["function"]["parameters"])


@pytest.mark.parametrize(
    "response_format, words",
    [
        (schema_format({"type": "object", "if": {"required": ["a"]}, "then": {}}), ["if"]),
        (schema_format({"type": "string", "format": "not-a-format"}), ["not-a-format"]),
        (schema_format({"type": "string", "pattern": "(?<=a)b"}), ["look-around"]),
    ],
)
def test_unsupported_schema_features_are_400_naming_them(server, response_format, words):
    with server.http() as http:
        r = http.post(
            "/v1/chat/completions", json={"messages": HELLO, "response_format": response_format}
        )
    err = assert_envelope(r, 400, param="response_format")
    assert all(w in err["message"] for w in words), err["message"]


@pytest.mark.parametrize(
    "response_format, param",
    [
        ({"type": "json_schema"}, "response_format"),
        ({"type": "yaml"}, "response_format.type"),
        (schema_format({"type": "object", "properties": {"a": {"type": "strng"}}}), "response_format.json_schema.schema"),
    ],
)
def test_invalid_response_formats_are_400(server, response_format, param):
    with server.http() as http:
        r = http.post(
            "/v1/chat/completions", json={"messages": HELLO, "response_format": response_format}
        )
    assert_envelope(r, 400, param=param)


def test_constrained_requests_leave_the_slot_free(server, examples):
    client = server.openai()
    client.chat.completions.create(model="m", messages=HELLO, response_format={"type": "json_object"})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="m", messages=HELLO, response_format=schema_format({"type": "object", "if": {}})
        )
    server.wait_idle()
