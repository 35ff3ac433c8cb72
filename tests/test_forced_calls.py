"""Forced tool calls in every mlx-lm tool-parser family.

For each family a model directory is built from the test model's tokenizer with
the family's markers added as special tokens and ``tool_parser_type`` set, so
mlx-lm loads it with that family's parser. The grammar is checked on its own
(it accepts the family's sample call and rejects wrong ones), then end to end:
random weights generate under it through the server, and the family's parser
must read back a valid call.
"""

import json
import re
import shutil

import jsonschema
import mlx.core as mx
import pytest
from mlx.utils import tree_flatten
from mlx_lm.chat_templates.muse_spark import RESPONSE_FORMAT as MUSE_SPARK_FORMAT
from mlx_lm.models import qwen3
from mlx_lm.tokenizer_utils import load as load_tokenizer

from mlxserve.config import DEMO_MODEL_PATH
from mlxserve.constraints import Grammars
from mlxserve.engine import Engine
from mlxserve.errors import InvalidRequestError
from tests.test_errors import assert_envelope
from tests.test_tool_parsers import FAMILIES, TOOLS

# One sample per parser module, in the layout the grammar writes.
SAMPLES = {f.tokenizer.parser: f for f in FAMILIES if f.id == f.tokenizer.parser}

# The markers each family's tokenizer has as special tokens.
SPECIAL_TOKENS = {
    "json_tools": [],
    "qwen3_coder": [],
    "glm47": ["<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"],
    "laguna": [],
    "longcat": ["<longcat_tool_call>", "</longcat_tool_call>"],
    "minimax_m2": ["<minimax:tool_call>", "</minimax:tool_call>"],
    "kimi_k2": [
        "<|tool_calls_section_begin|>",
        "<|tool_calls_section_end|>",
        "<|tool_call_begin|>",
        "<|tool_call_argument_begin|>",
        "<|tool_call_end|>",
    ],
    "kimi_k3": ["<|open|>", "<|close|>", "<|sep|>"],
    "gemma4": ["<|tool_call>", "<tool_call|>", '<|"|>'],
    "function_gemma": ["<start_function_call>", "<end_function_call>", "<escape>"],
    "mistral": ["[TOOL_CALLS]", "[ARGS]"],
    "pythonic": ["<|tool_call_start|>", "<|tool_call_end|>"],
    "minicpm5": [],
    "muse_spark": ["<|message|>"],
}

# The weather call with "days" as text: arguments that violate the schema.
WRONG_DAYS = {
    "json_tools": ('"days": 3', '"days": "3"'),
    "qwen3_coder": ("\n3\n", "\nthree\n"),
    "glm47": (">3<", ">three<"),
    "laguna": (">3<", ">three<"),
    "longcat": (">3<", ">three<"),
    "minimax_m2": (">3<", ">three<"),
    "kimi_k2": ('"days": 3', '"days": "3"'),
    "kimi_k3": ('type="integer"<|sep|>3', 'type="string"<|sep|>three'),
    "gemma4": ("days:3", 'days:<|"|>three<|"|>'),
    "function_gemma": ("days:3", "days:<escape>three<escape>"),
    "mistral": ('"days": 3', '"days": "3"'),
    "pythonic": ("days=3", 'days="3"'),
    "minicpm5": (">3<", ">three<"),
    "muse_spark": (">3<", '>"3"<'),
}

# Every value bounded, so random weights still have to finish the call.
BOUNDED_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "set_mode",
            "parameters": {
                "type": "object",
                "properties": {
                    "mode": {"type": "string", "enum": ["on", "off"]},
                    "level": {"type": "integer", "minimum": 1, "maximum": 5},
                    "label": {"type": "string", "minLength": 1, "maxLength": 6},
                    "fast": {"type": "boolean"},
                },
                "required": ["mode", "level", "label"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
    },
]


# A value that may be text or a number: formats that type values by the schema cannot say which.
MIXED = {"type": "object", "properties": {"x": {"type": ["string", "integer"]}}}


def make_family_model(root, parser: str, *, weights: bool):
    """The test model's tokenizer (and random weights) as a model of ``parser``'s family."""
    out = root / parser
    out.mkdir()
    shutil.copy(DEMO_MODEL_PATH / "tokenizer.json", out / "tokenizer.json")
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    config = json.loads((DEMO_MODEL_PATH / "tokenizer_config.json").read_text())
    next_id = max(a["id"] for a in tokenizer["added_tokens"]) + 1
    for i, content in enumerate(SPECIAL_TOKENS[parser]):
        entry = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        tokenizer["added_tokens"].append({"id": next_id + i, **entry})
        config["added_tokens_decoder"][str(next_id + i)] = entry
    config["tool_parser_type"] = parser
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    model_config = json.loads((DEMO_MODEL_PATH / "config.json").read_text())
    model_config["vocab_size"] = next_id + len(SPECIAL_TOKENS[parser])
    (out / "config.json").write_text(json.dumps(model_config))
    if weights:
        mx.random.seed(3)
        model = qwen3.Model(qwen3.ModelArgs.from_dict(model_config))
        mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return out


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    """Each family's tokenizer (no weights), by parser name."""
    root = tmp_path_factory.mktemp("family-tokenizers")
    return {p: make_family_model(root, p, weights=False) for p in SAMPLES}


@pytest.fixture(scope="module")
def grammars(tokenizer_dirs):
    """Grammars over each family's tokenizer, by parser name."""
    return {p: Grammars(load_tokenizer(path)) for p, path in tokenizer_dirs.items()}


def matches(grammars: Grammars, tools, text: str) -> bool:
    """Whether ``text`` is a complete answer under the forced-call grammar for ``tools``."""
    matcher = grammars.tool_call(tools, param="tool_choice").matcher
    tokens = grammars.tokenizer._tokenizer.encode(text, add_special_tokens=False)
    return matcher.consume_tokens(tokens) and matcher.is_accepting() and not matcher.is_error()


def sample_call(parser: str) -> str:
    return SAMPLES[parser].weather


def test_every_parser_has_a_grammar():
    assert set(SAMPLES) == set(SPECIAL_TOKENS) == set(WRONG_DAYS)


@pytest.mark.parametrize("parser", sorted(SAMPLES))
def test_the_grammar_accepts_the_family_sample(grammars, parser):
    assert matches(grammars[parser], TOOLS, sample_call(parser))
    assert matches(grammars[parser], TOOLS[:1], sample_call(parser))


@pytest.mark.parametrize("parser", sorted(SAMPLES))
def test_the_grammar_rejects_a_tool_not_forced(grammars, parser):
    assert not matches(grammars[parser], TOOLS[1:], sample_call(parser))


@pytest.mark.parametrize("parser", sorted(SAMPLES))
def test_the_grammar_rejects_arguments_against_the_schema(grammars, parser):
    old, new = WRONG_DAYS[parser]
    text = sample_call(parser)
    assert old in text
    assert not matches(grammars[parser], TOOLS, text.replace(old, new))


@pytest.mark.parametrize("parser", ["qwen3_coder", "glm47", "minimax_m2", "minicpm5", "kimi_k3"])
def test_text_values_cannot_hold_the_closing_tag(grammars, parser):
    text = sample_call(parser)
    closer = (
        re.search(r"Paris(<[^>]*>)", text).group(1) if parser != "qwen3_coder" else "</parameter>"
    )
    assert not matches(grammars[parser], TOOLS, text.replace("Paris", "Par" + closer + "is", 1))


def test_muse_spark_writes_the_message_header_its_response_format_reads(tokenizer_dirs):
    tokenizer = load_tokenizer(tokenizer_dirs["muse_spark"])
    tokenizer._response_format = MUSE_SPARK_FORMAT
    headed = Grammars(tokenizer)
    family = SAMPLES["muse_spark"]
    # The generation prompt ends with the assistant's "<|start|>assistant " header.
    assert matches(
        headed, TOOLS, family.header.removeprefix("<|start|>assistant ") + family.weather
    )
    assert not matches(headed, TOOLS, family.weather)


def test_a_schema_the_format_cannot_carry_is_a_400(grammars):
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"x": {"type": ["string", "integer"]}}},
        },
    }
    with pytest.raises(InvalidRequestError, match="'x'") as exc:
        grammars["minimax_m2"].tool_call([tool], param="tool_choice")
    assert exc.value.param == "tool_choice"
    nested = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"x": {"type": "array"}}},
        },
    }
    with pytest.raises(InvalidRequestError, match="objects and arrays"):
        grammars["function_gemma"].tool_call([nested], param="tool_choice")


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    """Random-weight models of each family, by parser name."""
    root = tmp_path_factory.mktemp("family-models")
    return {p: make_family_model(root, p, weights=True) for p in SAMPLES}


@pytest.fixture
def family_server(make_server, family_models):
    """Start a live server over a random-weight model of the given family."""
    engines = []

    def start(parser: str):
        engine = Engine(str(family_models[parser]), warmup=False)
        engines.append(engine)
        engine.start()
        assert engine.ready.wait(60) and engine.state == "ready", engine.error
        return make_server(engine_=engine)

    yield start
    for engine in engines:
        engine.stop()


@pytest.mark.parametrize("parser", sorted(SAMPLES))
def test_random_weights_make_a_valid_forced_call(family_server, parser):
    client = family_server(parser).openai()
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in BOUNDED_TOOLS}
    for choice in ("required", {"type": "function", "function": {"name": "set_mode"}}):
        reply = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Set it."}],
            tools=BOUNDED_TOOLS,
            tool_choice=choice,
            temperature=1.0,
            seed=0,
            max_tokens=400,
        )
        answer = reply.choices[0]
        assert answer.finish_reason == "tool_calls", answer.message.content
        [call] = answer.message.tool_calls
        if choice != "required":
            assert call.function.name == "set_mode"
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


def test_a_schema_the_format_cannot_carry_is_a_400_over_http(family_server):
    server = family_server("minimax_m2")
    tool = {"type": "function", "function": {"name": "f", "parameters": MIXED}}
    with server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [tool],
                "tool_choice": "required",
            },
        )
    err = assert_envelope(r, 400, param="tool_choice")
    assert "'x'" in err["message"]
    server.wait_idle()
