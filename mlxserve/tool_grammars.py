"""Forced tool calls: a Lark grammar per mlx-lm tool-parser family.

``tool_choice`` "required" or a named function constrains the answer to exactly
one call of an offered tool, written in the markup of the model's family, so
that the family's own ``parse_tool_call`` (in ``mlx_lm.tool_parsers``) reads it
back as that call with arguments valid against the tool's JSON Schema. Each
builder below follows its parser:

- JSON arguments (json_tools, kimi_k2, mistral, muse_spark, and each argument
  of pythonic) reuse llguidance's JSON Schema grammar;
- XML-ish parameters (qwen3_coder, glm47, laguna, longcat, minimax_m2,
  minicpm5, kimi_k3) get one rule per parameter: a value the parser keeps as
  text is free text that cannot contain the closing tag, any other value is
  JSON, which is how those parsers decode it;
- Gemma's literals (gemma4, function_gemma) are generated from the schema.

Parameters are written in the schema's order; required ones always, optional
ones when the model chooses to, undeclared ones never (unless the schema says
``additionalProperties``). A schema a format cannot carry faithfully
raises :class:`CannotForce`, which the server answers with a 400.
"""

import keyword
import re
from typing import Callable, Optional

from mlxserve.lark_rules import CannotForce, Grammar, json_rule, quoted, raw_string, types_of


def _properties(tool: dict) -> tuple[dict, set]:
    params = tool["function"].get("parameters") or {}
    return params.get("properties") or {}, set(params.get("required") or [])


def _arguments_schema(tool: dict) -> dict:
    """The arguments' schema, with no undeclared arguments unless it allows them.

    JSON Schema allows extra properties by default; a forced call writes only
    the declared ones, as the per-parameter formats do, so that a weak model
    cannot pad the call with made-up arguments until max_tokens.
    """
    schema = tool["function"].get("parameters") or {"type": "object", "properties": {}}
    if "additionalProperties" in schema or "patternProperties" in schema:
        return schema
    return {**schema, "additionalProperties": False}


def _name(tool: dict, pattern: str = r"[\w.-]+") -> str:
    name = tool["function"]["name"]
    if not re.fullmatch(pattern, name):
        raise CannotForce(
            f"the function name '{name}' cannot be written in this model's tool-call format"
        )
    return name


# Which parameter values a family keeps as text (True) or decodes as JSON (False);
# None: neither reads every value of the schema back as written.
def _glm_raw(schema: dict) -> Optional[bool]:
    return schema.get("type") == "string"  # glm47's and longcat's own test


def _minimax_raw(schema: dict) -> Optional[bool]:
    types = types_of(schema) or {"string"}  # untyped values are text
    if "string" in types:
        return True if types == {"string"} else None
    return False


def _qwen3_coder_raw(schema: dict) -> Optional[bool]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return declared.strip().lower() in {"string", "str", "text", "varchar", "char", "enum"}
    types = types_of(schema)
    if types == {"string"} or not types:
        return True
    # Untyped values are decoded as JSON only when that gives an object or array.
    return False if declared is None and types <= {"object", "array", "null"} else None


def _mixed(key: str) -> CannotForce:
    return CannotForce(
        f"parameter '{key}' may be text or another type, which this model's tool-call "
        "format cannot tell apart"
    )


def xml_params(
    grammar: Grammar,
    tool: dict,
    *,
    param: Callable[[str], tuple[str, str]],
    raw: Callable[[dict], Optional[bool]],
    text: dict,
    at_least_one=False,
) -> str:
    """One rule per parameter, in the schema's order.

    Args:
        param: A parameter's name -> the markup before and after its value.
        raw: Which values the parser keeps as text.
        text: Options for text values (see :meth:`Grammar.text_until`).
        at_least_one: The parser needs a parameter: the first is always written.
    """
    properties, required = _properties(tool)
    items = []
    for i, (key, schema) in enumerate(properties.items()):
        before, after = param(key)
        kind = raw(schema)
        if kind is None:
            raise _mixed(key)
        value = (
            raw_string(grammar, schema, key, after, **text)
            if kind
            else f"{json_rule(schema)} {grammar.lit(after)}"
        )
        items.append(
            (f"{grammar.lit(before)} {value}", key in required or (at_least_one and i == 0))
        )
    return grammar.sequence(items)


# ---- the families ------------------------------------------------------------


def json_tools(grammar: Grammar, tools: list[dict]) -> str:
    calls = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": t["function"]["name"]},
                    "arguments": _arguments_schema(t),
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in tools
        ]
    }
    return " ".join([grammar.lit("<tool_call>\n"), json_rule(calls), grammar.lit("\n</tool_call>")])


def qwen3_coder(grammar: Grammar, tool: dict) -> str:
    params = xml_params(
        grammar,
        tool,
        raw=_qwen3_coder_raw,
        text={"not_null": True},
        param=lambda k: (f"<parameter={k}>\n", "\n</parameter>\n"),
    )
    head = f"<tool_call>\n<function={_name(tool)}>\n"
    return " ".join([grammar.lit(head), params, grammar.lit("</function>\n</tool_call>")])


def glm47(grammar: Grammar, tool: dict) -> str:
    # GLM-4.7's layout; a call without arguments is just the name.
    params = xml_params(
        grammar,
        tool,
        raw=_glm_raw,
        text={"strip": True},
        param=lambda k: (f"<arg_key>{k}</arg_key><arg_value>", "</arg_value>"),
    )
    head = "<tool_call>" + _name(tool, r"[^\s<]+")
    return " ".join([grammar.lit(head), params, grammar.lit("</tool_call>")])


def longcat(grammar: Grammar, tool: dict) -> str:
    name = _name(tool, r"[^\s<]+")
    if not _properties(tool)[0]:
        # The parser finds the name before the first argument; with none, it reads JSON.
        call = {
            "type": "object",
            "properties": {
                "name": {"const": name},
                "arguments": {"type": "object", "properties": {}, "additionalProperties": False},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        return " ".join(
            [
                grammar.lit("<longcat_tool_call>"),
                json_rule(call),
                grammar.lit("</longcat_tool_call>"),
            ]
        )
    params = xml_params(
        grammar,
        tool,
        raw=_glm_raw,
        text={"strip": True},
        at_least_one=True,
        param=lambda k: (
            f"<longcat_arg_key>{k}</longcat_arg_key>\n<longcat_arg_value>",
            "</longcat_arg_value>\n",
        ),
    )
    return " ".join(
        [grammar.lit(f"<longcat_tool_call>{name}\n"), params, grammar.lit("</longcat_tool_call>")]
    )


def minimax_m2(grammar: Grammar, tool: dict) -> str:
    params = xml_params(
        grammar,
        tool,
        raw=_minimax_raw,
        text={"strip": True, "not_null": True, "exclude": ("</invoke>",)},
        param=lambda k: (f'<parameter name="{k}">', "</parameter>\n"),
    )
    name = _name(tool, r'[^"<>]+')
    head = f'<minimax:tool_call>\n<invoke name="{name}">\n'
    return " ".join([grammar.lit(head), params, grammar.lit("</invoke>\n</minimax:tool_call>")])


def minicpm5(grammar: Grammar, tool: dict) -> str:
    # Text with <, & or newlines goes in CDATA, as MiniCPM5's template writes it.
    properties, required = _properties(tool)
    items = []
    for key, schema in properties.items():
        kind = _minimax_raw(schema)
        if kind is None:
            raise _mixed(key)
        if not kind:
            body = f"{json_rule(schema)} {grammar.lit('</param>')}"
        elif "enum" in schema or "const" in schema:
            body = raw_string(grammar, schema, key, "</param>")
        else:
            plain = raw_string(
                grammar, schema, key, "</param>", strip=True, not_null=True, chars="[^<&\\n]"
            )
            cdata = raw_string(
                grammar,
                schema,
                key,
                "]]></param>",
                not_null=True,
                exclude=("</param>", "</function>", "]]>"),
            )
            body = grammar.one_of([plain, f"{grammar.lit('<![CDATA[')} {cdata}"])
        items.append((f"{grammar.lit(f'<param name={quoted(key)}>')} {body}", key in required))
    name = _name(tool, r'[^"<>]+')
    head = f'<function name="{name}">'
    return " ".join([grammar.lit(head), grammar.sequence(items), grammar.lit("</function>")])


def kimi_k2(grammar: Grammar, tool: dict) -> str:
    head = (
        "<|tool_calls_section_begin|><|tool_call_begin|>"
        f"functions.{_name(tool)}:0<|tool_call_argument_begin|>"
    )
    tail = "<|tool_call_end|><|tool_calls_section_end|>"
    return " ".join([grammar.lit(head), json_rule(_arguments_schema(tool)), grammar.lit(tail)])


def kimi_k3(grammar: Grammar, tool: dict) -> str:
    def value_type(schema: dict) -> str:
        declared = schema.get("type")
        return declared if isinstance(declared, str) and declared != "string" else "json"

    # Each argument typed: "string" values are text, any other type is read as JSON.
    properties, required = _properties(tool)
    items = []
    for key, schema in properties.items():
        kind = types_of(schema) == {"string"}
        attr_type = "string" if kind else value_type(schema)
        head = f'<|open|>argument key="{_attribute(key)}" type="{attr_type}"<|sep|>'
        tail = "<|close|>argument<|sep|>"
        body = (
            raw_string(grammar, schema, key, tail)
            if kind
            else f"{json_rule(schema)} {grammar.lit(tail)}"
        )
        items.append((f"{grammar.lit(head)} {body}", key in required))
    name = _attribute(tool["function"]["name"])
    head = f'<|open|>tools<|sep|><|open|>call tool="{name}" index="1"<|sep|>'
    tail = "<|close|>call<|sep|><|close|>tools<|sep|>"
    return " ".join([grammar.lit(head), grammar.sequence(items), grammar.lit(tail)])


def _attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;")


def mistral(grammar: Grammar, tool: dict) -> str:
    # Mistral has no end marker: the call ends the answer.
    head = "[TOOL_CALLS]" + _name(tool, r"[\w-]+") + "[ARGS]"
    return " ".join([grammar.lit(head), json_rule(_arguments_schema(tool))])


def pythonic(grammar: Grammar, tool: dict) -> str:
    # Keyword arguments; JSON values are Python literals once the parser maps
    # true/false/null (as chat templates write nested values).
    properties, required = _properties(tool)
    items = []
    for key, schema in properties.items():
        if not key.isidentifier() or keyword.iskeyword(key):
            raise CannotForce(f"parameter '{key}' is not a Python keyword argument name")
        items.append((f"{quoted(key + '=')} {json_rule(schema)}", key in required))
    name = _name(tool, r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
    args = grammar.sequence(items, quoted(", "))
    return " ".join(
        [grammar.lit(f"<|tool_call_start|>[{name}("), args, grammar.lit(")]<|tool_call_end|>")]
    )


def muse_spark(grammar: Grammar, tool: dict) -> str:
    # The message header (dropped by the parser) names the recipient; without
    # the response format that reads headers, the call comes first. Values are JSON.
    name = _name(tool, r'[^"<>]+')
    properties, required = _properties(tool)
    items = [
        (
            " ".join(
                [
                    grammar.lit(f'<atem:parameter name="{key}">'),
                    json_rule(schema),
                    grammar.lit("</atem:parameter>"),
                ]
            ),
            key in required,
        )
        for key, schema in properties.items()
    ]
    head = f'<atem:function_calls><atem:invoke name="{name}">'
    if grammar.headed:
        head = f"to=functions.{name}<|message|>{head}"
    return " ".join(
        [
            grammar.lit(head),
            grammar.sequence(items),
            grammar.lit("</atem:invoke></atem:function_calls>"),
        ]
    )


def gemma4(grammar: Grammar, tool: dict) -> str:
    quote = '<|"|>'
    args = _gemma_object(grammar, _arguments_schema(tool), quote, nested=True)
    head = "<|tool_call>call:" + _name(tool, r"[\w-]+")
    return " ".join([grammar.lit(head), args, grammar.lit("<tool_call|>")])


def function_gemma(grammar: Grammar, tool: dict) -> str:
    # The parser reads up to the first "}" and splits on ",": flat arguments only.
    args = _gemma_object(grammar, _arguments_schema(tool), "<escape>", nested=False)
    head = "<start_function_call>call:" + _name(tool, r"\w+")
    return " ".join([grammar.lit(head), args, grammar.lit("<end_function_call>")])


def _gemma_object(grammar: Grammar, schema: dict, quote: str, *, nested: bool) -> str:
    """``{key:value,...}`` with bare keys and strings between ``quote`` marks."""
    required = set(schema.get("required") or [])
    items = []
    for key, sub in (schema.get("properties") or {}).items():
        if not re.fullmatch(r"\w+", key):
            raise CannotForce(
                f"parameter '{key}' cannot be written as a bare key "
                "in this model's tool-call format"
            )
        items.append(
            (
                f"{quoted(key + ':')} {_gemma_value(grammar, sub, key, quote, nested=nested)}",
                key in required,
            )
        )
    return f'"{{" {grammar.sequence(items, quoted(","))} "}}"'


def _gemma_value(grammar: Grammar, schema: dict, name: str, quote: str, *, nested: bool) -> str:
    types = types_of(schema)
    if not types:
        raise CannotForce(
            f"parameter '{name}' needs a type to be written in this model's tool-call format"
        )
    if "string" not in types and not types & {"object", "array"}:
        return json_rule(schema)  # numbers, booleans and null are written as in JSON
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return grammar.one_of(
                [_gemma_value(grammar, b, name, quote, nested=nested) for b in schema[key]]
            )
    declared = schema.get("type")
    if isinstance(declared, list):
        return grammar.one_of(
            [
                _gemma_value(grammar, {**schema, "type": t}, name, quote, nested=nested)
                for t in declared
            ]
        )
    if types <= {"string"}:
        exclude = () if nested else ("}",)  # function_gemma's parser ends the call at any "}"
        return f"{grammar.lit(quote)} {raw_string(grammar, schema, name, quote, exclude=exclude)}"
    if not nested:
        raise CannotForce(
            f"parameter '{name}': objects and arrays cannot be written "
            "in this model's tool-call format"
        )
    if declared == "object":
        return _gemma_object(grammar, schema, quote, nested=True)
    if declared == "array":
        item = _gemma_value(grammar, schema.get("items") or {}, name, quote, nested=True)
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        more = f'("," {item}){{{max(low - 1, 0)},{"" if high is None else high - 1}}}'
        body = f"{item} {more}" if low > 0 else f"({item} {more})?"
        return f'"[" {body} "]"' if high != 0 else '"[]"'
    raise CannotForce(
        f"parameter '{name}' mixes types that this model's tool-call format cannot write"
    )


def _one_call(build: Callable[[Grammar, dict], str]) -> Callable[[Grammar, list[dict]], str]:
    def forced(grammar: Grammar, tools: list[dict]) -> str:
        return grammar.one_of([build(grammar, tool) for tool in tools])

    return forced


# By mlx-lm tool parser module: grammar, tools -> the start rule's body.
FORMATS: dict[str, Callable[[Grammar, list[dict]], str]] = {
    "json_tools": json_tools,
    **{
        f.__name__: _one_call(f)
        for f in (
            qwen3_coder,
            glm47,
            longcat,
            minimax_m2,
            minicpm5,
            kimi_k2,
            kimi_k3,
            mistral,
            pythonic,
            muse_spark,
            gemma4,
            function_gemma,
        )
    },
    "laguna": _one_call(glm47),  # Laguna writes GLM-4.7's format
}
