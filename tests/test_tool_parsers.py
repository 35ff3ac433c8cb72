"""Every mlx-lm tool parser, fed a sample of its family's output through AnswerParser.

A stand-in for mlx-lm's tokenizer wrapper carries each family's real parser and
markers (from its ``mlx_lm.tool_parsers`` module) and the reasoning markers and
response format mlx-lm infers for that family. Each answer is fed whole, one
character at a time and in random pieces, as the engine's deltas could split it.
"""

import importlib
import json
import pkgutil
import random
from dataclasses import dataclass, field
from typing import Callable, Optional

import mlx_lm.tool_parsers
import pytest
from mlx_lm.chat_templates.muse_spark import RESPONSE_FORMAT as MUSE_SPARK_FORMAT

from mlxserve.engine import Delta
from mlxserve.parsing import AnswerParser, Event

THINK_START_ID, THINK_END_ID = 1, 2


@dataclass(frozen=True)
class FamilyTokenizer:
    """The parts of mlx-lm's TokenizerWrapper that AnswerParser reads, for one family."""

    parser: str
    think: Optional[tuple[str, str]] = ("<think>", "</think>")
    response_format: dict = field(default_factory=dict)
    structural_markers: tuple[str, ...] = ()

    @property
    def _module(self):
        return importlib.import_module(f"mlx_lm.tool_parsers.{self.parser}")

    @property
    def tool_parser(self):
        return self._module.parse_tool_call

    @property
    def tool_call_start(self) -> str:
        return self._module.tool_call_start

    @property
    def tool_call_end(self) -> str:
        return self._module.tool_call_end

    @property
    def has_tool_calling(self) -> bool:
        return self.tool_call_start is not None

    @property
    def has_thinking(self) -> bool:
        return self.think is not None

    @property
    def think_start(self) -> Optional[str]:
        return self.think and self.think[0]

    @property
    def think_end(self) -> Optional[str]:
        return self.think and self.think[1]

    @property
    def response_transitions(self) -> dict:
        return self.response_format.get("transitions", {})

    @property
    def response_initial_state(self) -> Optional[str]:
        return self.response_format.get("initial_state")

    def rfind_think_start(self, tokens) -> int:
        return max((i for i, t in enumerate(tokens) if t == THINK_START_ID), default=-1)

    def rfind_think_end(self, tokens) -> int:
        return max((i for i, t in enumerate(tokens) if t == THINK_END_ID), default=-1)


def _props(**types) -> dict:
    return {"type": "object", "properties": {k: {"type": t} for k, t in types.items()}}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city for the next days.",
            "parameters": _props(city="string", days="integer"),
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a time zone.",
            "parameters": _props(timezone="string"),
        },
    },
]

WEATHER = ("get_weather", {"city": "Paris", "days": 3})
TIME = ("get_time", {"timezone": "Europe/Paris"})


@dataclass(frozen=True)
class Family:
    """One family's output format.

    Attributes:
        id: The sample's name.
        tokenizer: The family's tokenizer stand-in.
        weather: The tool block for ``get_weather(city="Paris", days=3)``, markers included.
        both: The markup for that call followed by ``get_time(timezone="Europe/Paris")``.
        malformed: A tool block the family's parser cannot read as a call to an offered tool.
        header: Text the format puts before a tool block (dropped by the parser).
        say: How the family writes answer text before a call.
        reason: How the family writes reasoning (``None``: the family does not think).
    """

    id: str
    tokenizer: FamilyTokenizer
    weather: str
    both: str
    malformed: str
    header: str = ""
    say: Callable[[str], str] = lambda text: text
    reason: Optional[Callable[[str], str]] = lambda text: f"<think>\n{text}\n</think>\n\n"


def qwen_json(name, arguments):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def qwen_xml(name, arguments):
    params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in arguments.items())
    return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"


def glm(name, arguments, sep=""):
    args = "".join(
        f"<arg_key>{k}</arg_key>{sep}<arg_value>{v}</arg_value>{sep}" for k, v in arguments.items()
    )
    return f"<tool_call>{name}{sep}{args}</tool_call>"


def longcat(name, arguments):
    args = "".join(
        f"<longcat_arg_key>{k}</longcat_arg_key>\n<longcat_arg_value>{v}</longcat_arg_value>\n"
        for k, v in arguments.items()
    )
    return f"<longcat_tool_call>{name}\n{args}</longcat_tool_call>"


def minimax_invoke(name, arguments):
    params = "".join(f'<parameter name="{k}">{v}</parameter>\n' for k, v in arguments.items())
    return f'<invoke name="{name}">\n{params}</invoke>\n'


def kimi_k2_call(index, name, arguments):
    return (
        f"<|tool_call_begin|>functions.{name}:{index}<|tool_call_argument_begin|>"
        f"{json.dumps(arguments)}<|tool_call_end|>"
    )


def kimi_k3_call(index, name, arguments):
    def typed(value):
        return "integer" if isinstance(value, int) else "string"

    args = "".join(
        f'<|open|>argument key="{k}" type="{typed(v)}"<|sep|>{v}<|close|>argument<|sep|>'
        for k, v in arguments.items()
    )
    return f'<|open|>call tool="{name}" index="{index}"<|sep|>{args}<|close|>call<|sep|>'


def gemma4_call(name, arguments):
    args = ",".join(
        f"{k}:{v}" if isinstance(v, int) else f'{k}:<|"|>{v}<|"|>' for k, v in arguments.items()
    )
    return f"call:{name}{{{args}}}"


def function_gemma_call(name, arguments):
    args = ",".join(
        f"{k}:{v}" if isinstance(v, int) else f"{k}:<escape>{v}<escape>"
        for k, v in arguments.items()
    )
    return f"<start_function_call>call:{name}{{{args}}}<end_function_call>"


def python_call(name, arguments):
    return f"{name}({', '.join(f'{k}={json.dumps(v)}' for k, v in arguments.items())})"


def minicpm_call(name, arguments):
    params = "".join(f'<param name="{k}">{v}</param>' for k, v in arguments.items())
    return f'<function name="{name}">{params}</function>'


def muse_invoke(name, arguments):
    params = "".join(
        f'<atem:parameter name="{k}">{json.dumps(v)}</atem:parameter>' for k, v in arguments.items()
    )
    return f'<atem:invoke name="{name}">{params}</atem:invoke>'


XTML_MARKERS = ("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|close|>message<|sep|>")

FAMILIES = [
    Family(  # Qwen3, Qwen2.5, Hermes: JSON inside <tool_call>
        "json_tools",
        FamilyTokenizer("json_tools"),
        weather=qwen_json(*WEATHER),
        both=qwen_json(*WEATHER) + "\n" + qwen_json(*TIME),
        malformed=(
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris",}\n</tool_call>'
        ),
        say=lambda text: text + "\n\n",
    ),
    Family(  # Qwen3-Coder, Qwen3.5: XML functions, typed by the tools' schemas
        "qwen3_coder",
        FamilyTokenizer("qwen3_coder"),
        weather=qwen_xml(*WEATHER),
        both=qwen_xml(*WEATHER) + "\n" + qwen_xml(*TIME),
        malformed=(
            "<tool_call>\n<function=get_weather>\n"
            "<parameter=city>\nParis\n</parameter>\n</tool_call>"
        ),
        say=lambda text: text + "\n\n",
    ),
    Family(  # GLM-4.7: name, then key/value pairs, typed by the tools' schemas
        "glm47",
        FamilyTokenizer("glm47"),
        weather=glm(*WEATHER),
        both=glm(*WEATHER) + glm(*TIME),
        malformed='<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',
    ),
    Family(  # GLM-4.5 / 4.6 layout (newlines between the pairs), same parser
        "glm47-newlines",
        FamilyTokenizer("glm47"),
        weather=glm(*WEATHER, sep="\n"),
        both=glm(*WEATHER, sep="\n") + "\n" + glm(*TIME, sep="\n"),
        malformed="<tool_call>\n</tool_call>",
    ),
    Family(  # Poolside Laguna: GLM-4.7's format
        "laguna",
        FamilyTokenizer("laguna"),
        weather=glm(*WEATHER),
        both=glm(*WEATHER) + glm(*TIME),
        malformed='<tool_call>get_weather\n{"city": "Paris",</tool_call>',
    ),
    Family(  # LongCat: its own key/value tags and think tags
        "longcat",
        FamilyTokenizer("longcat", think=("<longcat_think>", "</longcat_think>")),
        weather=longcat(*WEATHER),
        both=longcat(*WEATHER) + "\n" + longcat(*TIME),
        malformed=(
            '<longcat_tool_call>{"name": "get_weather", "arguments": {"city": </longcat_tool_call>'
        ),
        reason=lambda text: f"<longcat_think>\n{text}\n</longcat_think>\n",
    ),
    Family(  # MiniMax-M2: XML invokes in one block
        "minimax_m2",
        FamilyTokenizer("minimax_m2"),
        weather=f"<minimax:tool_call>\n{minimax_invoke(*WEATHER)}</minimax:tool_call>",
        both=(
            f"<minimax:tool_call>\n{minimax_invoke(*WEATHER)}{minimax_invoke(*TIME)}"
            "</minimax:tool_call>"
        ),
        malformed=(
            '<minimax:tool_call>\n<invoke name="get_weather">\n'
            '<parameter name="city">Paris</parameter>\n</minimax:tool_call>'
        ),
        say=lambda text: text + "\n\n",
    ),
    Family(  # Kimi K2: a section of calls with JSON arguments
        "kimi_k2",
        FamilyTokenizer("kimi_k2"),
        weather=(
            f"<|tool_calls_section_begin|>{kimi_k2_call(0, *WEATHER)}<|tool_calls_section_end|>"
        ),
        both=(
            f"<|tool_calls_section_begin|>{kimi_k2_call(0, *WEATHER)}"
            f"{kimi_k2_call(1, *TIME)}<|tool_calls_section_end|>"
        ),
        malformed=(
            "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
            '<|tool_call_argument_begin|>{"city": "Paris"<|tool_call_end|>'
            "<|tool_calls_section_end|>"
        ),
    ),
    Family(  # Kimi K3: XTML sections, typed arguments
        "kimi_k3",
        FamilyTokenizer(
            "kimi_k3",
            think=("<|open|>think<|sep|>", "<|close|>think<|sep|>"),
            structural_markers=XTML_MARKERS,
        ),
        weather=f"<|open|>tools<|sep|>{kimi_k3_call(1, *WEATHER)}<|close|>tools<|sep|>",
        both=(
            f"<|open|>tools<|sep|>{kimi_k3_call(1, *WEATHER)}{kimi_k3_call(2, *TIME)}"
            "<|close|>tools<|sep|>"
        ),
        malformed=(
            '<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|>'
            '<|open|>json type="object"<|sep|>{"city": <|close|>json<|sep|>'
            "<|close|>call<|sep|><|close|>tools<|sep|>"
        ),
        say=lambda text: f"<|open|>response<|sep|>{text}<|close|>response<|sep|>",
        reason=lambda text: f"<|open|>think<|sep|>{text}<|close|>think<|sep|>",
    ),
    Family(  # Gemma 4: call:name{...} with <|"|> strings, thinks in a channel
        "gemma4",
        FamilyTokenizer("gemma4", think=("<|channel>thought", "<channel|>")),
        weather=f"<|tool_call>{gemma4_call(*WEATHER)}<tool_call|>",
        both=(
            f"<|tool_call>{gemma4_call(*WEATHER)}<tool_call|>"
            f"<|tool_call>{gemma4_call(*TIME)}<tool_call|>"
        ),
        malformed='<|tool_call>call:get_weather{city:<|"|>Paris}<tool_call|>',
        reason=lambda text: f"<|channel>thought\n{text}<channel|>",
    ),
    Family(  # FunctionGemma: call:name{...} with <escape> strings, no thinking
        "function_gemma",
        FamilyTokenizer("function_gemma", think=None),
        weather=function_gemma_call(*WEATHER),
        both=function_gemma_call(*WEATHER) + function_gemma_call(*TIME),
        malformed="<start_function_call>call:get_weather{city:<escape>Paris}<end_function_call>",
        reason=None,
    ),
    Family(  # Mistral (v11+ templates): name[ARGS]{json}, no end marker
        "mistral",
        FamilyTokenizer("mistral", think=None),
        weather='[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 3}',
        both=(
            '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 3}'
            '[TOOL_CALLS]get_time[ARGS]{"timezone": "Europe/Paris"}'
        ),
        malformed='[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": }',
        reason=None,
    ),
    Family(  # Mistral (older templates): a JSON list of calls
        "mistral-json",
        FamilyTokenizer("mistral", think=None),
        weather='[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]',
        both=(
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, '
            '{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}]'
        ),
        malformed='[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}]',
        reason=None,
    ),
    Family(  # LFM2: a Python list of calls
        "pythonic",
        FamilyTokenizer("pythonic"),
        weather=f"<|tool_call_start|>[{python_call(*WEATHER)}]<|tool_call_end|>",
        both=f"<|tool_call_start|>[{python_call(*WEATHER)}, {python_call(*TIME)}]<|tool_call_end|>",
        malformed='<|tool_call_start|>[get_weather(city="Paris", days=3]<|tool_call_end|>',
    ),
    Family(  # MiniCPM5: <function name=...> blocks, no wrapper
        "minicpm5",
        FamilyTokenizer("minicpm5"),
        weather=minicpm_call(*WEATHER),
        both=minicpm_call(*WEATHER) + "\n" + minicpm_call(*TIME),
        malformed='<function name="get_weather"<param name="city">Paris</param></function>',
    ),
    Family(  # Muse Spark: messages with headers; calls in their own message
        "muse_spark",
        FamilyTokenizer("muse_spark", think=None, response_format=MUSE_SPARK_FORMAT),
        header="<|start|>assistant to=functions.get_weather<|message|>",
        weather=f"<atem:function_calls>{muse_invoke(*WEATHER)}</atem:function_calls>",
        both=(
            f"<atem:function_calls>{muse_invoke(*WEATHER)}{muse_invoke(*TIME)}"
            "</atem:function_calls>"
        ),
        malformed=(
            '<atem:function_calls><atem:invoke id="get_weather"></atem:invoke>'
            "</atem:function_calls>"
        ),
        say=lambda text: f"to=commentary<|message|>{text}<|eom|>",
        reason=lambda text: f"to=self<|message|>{text}<|eom|>",
    ),
]

FAMILY_IDS = [f.id for f in FAMILIES]
THINKING = [f for f in FAMILIES if f.reason is not None]
THINK_TAGGED = [f for f in FAMILIES if f.tokenizer.has_thinking]


def split_whole(text: str) -> list[str]:
    return [text]


def split_chars(text: str) -> list[str]:
    return list(text)


def split_random(text: str) -> list[str]:
    """Random pieces of 1 to 6 characters, then an empty last delta."""
    rng = random.Random(len(text))
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        pieces.append(text[i : i + n])
        i += n
    return pieces + [""]


CHUNKINGS = [split_whole, split_chars, split_random]


def parse(family: Family, answer: str, split, *, finish="stop", tools=TOOLS, prompt=()) -> Event:
    """Feed ``answer`` as deltas and fold the events into one."""
    parser = AnswerParser(family.tokenizer, list(prompt), tools=tools)
    pieces = split(answer)
    events = [
        parser.feed(Delta(piece, finish if i == len(pieces) - 1 else None, 10, i + 1))
        for i, piece in enumerate(pieces)
    ]
    assert all(e.finish_reason is None for e in events[:-1])
    folded = events[0]
    for event in events[1:]:
        folded = folded.then(event)
    return folded


def calls_of(event: Event) -> list[tuple[str, dict]]:
    for call in event.tool_calls:
        assert call.id and isinstance(call.arguments, str)
    return [(c.name, json.loads(c.arguments)) for c in event.tool_calls]


def test_every_mlx_lm_parser_has_a_sample():
    modules = {m.name for m in pkgutil.iter_modules(mlx_lm.tool_parsers.__path__)}
    assert modules == {f.tokenizer.parser for f in FAMILIES}


@pytest.mark.parametrize("split", CHUNKINGS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_a_call(family, split):
    event = parse(family, family.header + family.weather, split)
    assert calls_of(event) == [WEATHER]
    assert event.content == "" and event.reasoning == ""
    assert event.finish_reason == "tool_calls"


@pytest.mark.parametrize("split", CHUNKINGS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_text_before_a_call_is_content(family, split):
    event = parse(
        family, family.say("Let me check the weather.") + family.header + family.weather, split
    )
    assert event.content.rstrip("\n") == "Let me check the weather."
    assert calls_of(event) == [WEATHER]
    assert event.finish_reason == "tool_calls"


def test_text_before_a_call_streams_before_the_call_ends():
    family = FAMILIES[0]
    parser = AnswerParser(family.tokenizer, [], tools=TOOLS)
    first = parser.feed(Delta("Let me check the weather. " + family.weather[:20], None, 10, 1))
    assert first.content == "Let me check the weather. " and not first.tool_calls
    last = parser.feed(Delta(family.weather[20:], "stop", 10, 2))
    assert last.content == "" and [c.name for c in last.tool_calls] == ["get_weather"]


@pytest.mark.parametrize("split", CHUNKINGS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_two_calls_in_order(family, split):
    event = parse(family, family.header + family.both, split)
    assert calls_of(event) == [WEATHER, TIME]
    assert len({c.id for c in event.tool_calls}) == 2
    assert event.content == ""
    assert event.finish_reason == "tool_calls"


@pytest.mark.parametrize("split", CHUNKINGS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_malformed_call_is_content(family, split):
    event = parse(family, family.header + family.malformed, split)
    assert event.tool_calls == ()
    assert event.content == family.malformed
    assert event.finish_reason == "stop"


@pytest.mark.parametrize("split", CHUNKINGS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_call_cut_off_by_max_tokens_is_content(family, split):
    for cut in (len(family.weather) // 2, len(family.weather) - 2):
        block = family.weather[:cut]
        event = parse(family, family.header + block, split, finish="length")
        assert event.tool_calls == ()
        assert event.content == block
        assert event.finish_reason == "length"


@pytest.mark.parametrize("split", CHUNKINGS)
@pytest.mark.parametrize("family", THINKING, ids=[f.id for f in THINKING])
def test_reasoning_then_a_call(family, split):
    answer = family.reason("The user wants the weather in Paris.") + family.header + family.weather
    event = parse(family, answer, split)
    assert event.reasoning.strip() == "The user wants the weather in Paris."
    assert calls_of(event) == [WEATHER]
    assert event.content == ""
    assert event.finish_reason == "tool_calls"


@pytest.mark.parametrize("family", THINK_TAGGED, ids=[f.id for f in THINK_TAGGED])
def test_reasoning_opened_by_the_prompt_then_a_call(family):
    answer = "Paris, then." + family.tokenizer.think_end + family.weather
    event = parse(family, answer, split_random, prompt=(5, THINK_START_ID))
    assert event.reasoning.strip() == "Paris, then."
    assert calls_of(event) == [WEATHER]


@pytest.mark.parametrize("split", CHUNKINGS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_without_tools_the_markup_stays_content(family, split):
    event = parse(family, family.header + family.weather, split, tools=None)
    assert event.tool_calls == ()
    assert event.content == family.weather
    assert event.finish_reason == "stop"


@pytest.mark.parametrize("family", THINKING, ids=[f.id for f in THINKING])
def test_reasoning_modes_keep_the_call(family):
    reasoning = family.reason("The user wants the weather in Paris.")
    answer = reasoning + family.header + family.weather
    for mode in ("inline", "hide"):
        parser = AnswerParser(family.tokenizer, [], tools=TOOLS, reasoning=mode)
        event = parser.feed(Delta(answer, "stop", 10, 1))
        assert calls_of(event) == [WEATHER]
        assert event.reasoning == ""
        if mode == "hide":
            assert event.content == ""
        elif family.tokenizer.has_thinking:
            assert event.content == reasoning
        else:
            assert event.content.strip() == "The user wants the weather in Paris."


@pytest.mark.parametrize("family", THINK_TAGGED, ids=[f.id for f in THINK_TAGGED])
def test_a_call_from_inside_the_reasoning(family):
    answer = family.tokenizer.think_start + "I need the weather." + family.weather
    event = parse(family, answer, split_random)
    assert event.reasoning == "I need the weather."
    assert calls_of(event) == [WEATHER]
    assert event.content == ""
