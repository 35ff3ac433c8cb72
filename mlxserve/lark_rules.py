"""Lark grammars for llguidance, built rule by rule.

The pieces a forced tool call is made of (see :mod:`mlxserve.tool_grammars`):
literal markup with special tokens named by id, inline JSON Schema values,
free text that ends at a closing tag, and sequences of optional items.
"""

import json
import re
from typing import Callable, Optional

# Compact JSON, as models write it (", " and ": "), with no free whitespace:
# a grammar that allows runs of whitespace lets a weak model pad until max_tokens.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# What a raw-text value may carry from its schema; anything else (pattern,
# format) cannot be enforced on free text here.
RAW_STRING_KEYS = {"type", "enum", "const", "minLength", "maxLength"} | {
    "title", "description", "default", "examples"
}

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"} | {
    list: "array", dict: "object", type(None): "null"
}


class CannotForce(ValueError):
    """A tool's schema that the model's tool-call format cannot carry."""


def json_rule(schema: dict) -> str:
    """``schema`` as an inline llguidance JSON Schema rule."""
    schema = {**schema, "x-guidance": {**JSON_OPTIONS, **schema.get("x-guidance", {})}}
    return f"%json {json.dumps(schema)}"


def quoted(text: str) -> str:
    return json.dumps(text)


def _regex_escape(text: str) -> str:
    return re.sub(r"([\\.+*?()|\[\]{}^$#&~/-])", r"\\\1", text)


def types_of(schema: dict) -> set[str]:
    """The JSON types a value of ``schema`` can have (empty: any)."""
    types = set()
    declared = schema.get("type")
    if isinstance(declared, str):
        types.add(declared)
    elif isinstance(declared, list):
        types.update(declared)
    for value in schema.get("enum", []) + ([schema["const"]] if "const" in schema else []):
        types.add(JSON_TYPES.get(type(value), "string"))
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key, []):
            types |= types_of(branch)
    if "integer" in types:
        types.add("number")  # an integer is a number; a number schema admits integers
    return types


class Grammar:
    """Lark rules under construction for one forced call.

    Args:
        pieces: Splits text into ``(text, token_id)`` pieces; ``token_id`` is
            set for a special token, which the grammar must name by id.
        headed: The answer starts with a message header (mlx-lm's response
            format for Muse Spark).
    """

    def __init__(
        self, pieces: Callable[[str], list[tuple[str, Optional[int]]]], *, headed: bool = False
    ):
        self.pieces = pieces
        self.headed = headed
        self.rules: list[str] = []

    def add(self, body: str, *, name: str = "r", options: str = "") -> str:
        """A new rule (a terminal when ``name`` is upper case); returns its name."""
        rule = f"{name}{len(self.rules)}"
        self.rules.append(f"{rule}{options}: {body}")
        return rule

    def lit(self, text: str) -> str:
        """``text`` as Lark: strings, and special tokens by id."""
        return (
            " ".join(
                f"<[{tid}]>" if tid is not None else quoted(t) for t, tid in self.pieces(text) if t
            )
            or '""'
        )

    def text_until(
        self,
        closer: str,
        *,
        exclude: tuple[str, ...] = (),
        min_length=0,
        max_length=None,
        strip=False,
        not_null=False,
        chars="(?s:.)",
    ) -> str:
        """Free text, then ``closer``; the text never contains ``exclude`` or the closer.

        Args:
            strip: The parser strips the value: no whitespace at either end.
            not_null: The parser reads "null" (any case) as null, not text.
            chars: The characters allowed.
        """
        bound = f"{{{min_length},{'' if max_length is None else max_length}}}"
        parts = [f"/{chars}{bound}/"]
        first, tid = self.pieces(closer)[0]
        for stop in (*exclude, *(() if tid is not None else (first.strip() or first,))):
            parts.append(f"~/(?s:.*){_regex_escape(stop)}(?s:.*)/")
        if strip:
            parts += [r"~/\s(?s:.*)/", r"~/(?s:.*)\s/"]
        if not_null:
            parts.append(r"~/(?i:\s*null\s*)/")
        terminal = self.add(" & ".join(parts), name="TEXT")
        if tid is not None:  # a special token ends any text
            return f"{terminal} {self.lit(closer)}"
        # A text closer ends the text lazily, at its first occurrence.
        value = self.add(terminal, options=f"[suffix={quoted(first)}]")
        rest = closer[len(first) :]
        return f"{value} {self.lit(rest)}" if rest else value

    def sequence(self, items: list[tuple[str, bool]], sep: str = "") -> str:
        """``items`` in order, each ``(rule, required)``; optional ones may be left out.

        ``sep`` goes between the items written.
        """
        if not items:
            return '""'
        if not sep:
            return " ".join(item if required else f"({item})?" for item, required in items)
        first = rest = '""'  # first: the items from here, none written yet; rest: some were
        for item, required in reversed(items):
            written = f"{item} {rest}"
            with_sep = f"{sep} {written}"
            rest = self.add(with_sep if required else f"{with_sep} | {rest}")
            first = self.add(written if required else f"{written} | {first}")
        return first

    def one_of(self, options: list[str]) -> str:
        return self.add(" | ".join(options))


def raw_string(grammar: Grammar, schema: dict, name: str, closer: str, **text) -> str:
    """A string value written as plain text, then ``closer``."""
    unsupported = sorted(set(schema) - RAW_STRING_KEYS)
    if unsupported:
        raise CannotForce(
            f"parameter '{name}': {', '.join(unsupported)} cannot be enforced on a text value "
            "in this model's tool-call format"
        )
    values = (
        schema["enum"] if "enum" in schema else [schema["const"]] if "const" in schema else None
    )
    if values is not None:
        return f"({' | '.join(quoted(v) for v in values)}) {grammar.lit(closer)}"
    return grammar.text_until(
        closer, min_length=schema.get("minLength", 0), max_length=schema.get("maxLength"), **text
    )
