"""Grammar-constrained decoding: JSON modes and forced tool calls, through llguidance.

A request's constraint is compiled to an llguidance grammar when it is planned
(so a bad or unsupported schema is a 400 before it waits for a slot), and runs
as an mlx-lm logits processor on the engine thread: each step, llguidance
computes the allowed tokens and everything else is masked to ``-inf``. Once the
grammar is complete only an end-of-turn token is allowed, so output always ends.

Why llguidance: it needs no other package, compiles JSON Schema and Lark
grammars in microseconds, computes a 150k-token mask in tens of microseconds on
the CPU, and ships an MLX integration. Its MLX kernel is Metal-only, so the mask
is applied here with portable MLX ops that run on Metal, CUDA and the CPU.
(xgrammar and outlines-core do the same job; xgrammar's MLX path needs torch-free
wheels per platform, outlines-core compiles a full token-level index per schema,
which takes seconds for large vocabularies.)
"""

import re
import threading
from typing import Optional

import llguidance
import llguidance.hf
import mlx.core as mx
import numpy as np
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from mlxserve.errors import InvalidRequestError
from mlxserve.lark_rules import CannotForce, Grammar, json_rule
from mlxserve.tool_grammars import FORMATS


class Grammars:
    """llguidance for one tokenizer: compiles grammars and makes logits processors.

    Args:
        tokenizer: mlx-lm's tokenizer wrapper.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._llg = None
        self._special = None
        self._lock = threading.Lock()

    @property
    def llg_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            return self._llg_locked()

    def _llg_locked(self) -> llguidance.LLTokenizer:
        # Built on first use (about a second for a large vocabulary), then shared.
        if self._llg is None:
            self._llg = llguidance.hf.from_tokenizer(
                self.tokenizer._tokenizer, eos_token=sorted(self.tokenizer.eos_token_ids)
            )
        return self._llg

    def json(self, schema: Optional[dict], *, param: str, prefix: str = "") -> "GrammarProcessor":
        """A processor that makes the answer one JSON value valid against ``schema``.

        Args:
            schema: A JSON Schema (``None``: any JSON object).
            param: The request field to name in errors.
            prefix: Text forced before the JSON (closing a think block the prompt opened).
        """
        schema = {"type": "object"} if schema is None else schema
        return self._compile(self._lark(prefix, json_rule(schema)), param)

    def tool_call(self, tools: list[dict], *, param: str, prefix: str = "") -> "GrammarProcessor":
        """A processor that makes the answer exactly one call to one of ``tools``.

        The call is written in the markup of the model's tool-parser family
        (see :mod:`mlxserve.tool_grammars`).

        Raises:
            InvalidRequestError: The model has no tool-call format, or a tool's
                schema cannot be carried by it.
        """
        family = self.tool_family()
        if family not in FORMATS:
            raise InvalidRequestError(
                f"This model's tool-call format ({family or 'none'}) cannot be forced: "
                f"tool_choice 'required' or a named function works with the formats "
                f"{', '.join(sorted(FORMATS))}. Use tool_choice 'auto'.",
                param=param,
            )
        grammar = Grammar(self._pieces, headed=self.tokenizer.response_initial_state == "header")
        try:
            body = FORMATS[family](grammar, tools)
        except CannotForce as exc:
            message = f"A call cannot be forced: {exc}. Use tool_choice 'auto'."
            raise InvalidRequestError(message, param=param) from exc
        return self._compile(self._lark(prefix, body, grammar.rules), param)

    def tool_family(self) -> Optional[str]:
        parser = self.tokenizer.tool_parser
        return parser.__module__.rsplit(".", 1)[-1] if parser is not None else None

    def _pieces(self, text: str) -> list[tuple[str, Optional[int]]]:
        """``text`` split into plain text and special tokens (with their ids).

        llguidance keeps added tokens such as ``<tool_call>`` apart from their
        text, so the grammar must name them by id for the model to use them.
        """
        special, pattern = self._special_tokens()
        if not special:
            return [(text, None)]
        return [(part, special.get(part)) for part in pattern.split(text) if part]

    def _special_tokens(self) -> tuple[dict[str, int], re.Pattern]:
        with self._lock:
            if self._special is None:
                llg = self._llg_locked()
                added = self.tokenizer._tokenizer.get_added_vocab()
                special = {t: i for t, i in added.items() if t and llg.is_special_token(i)}
                longest_first = sorted(special, key=len, reverse=True)
                pattern = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
                self._special = special, pattern
            return self._special

    def _lark(self, prefix: str, body: str, rules: list[str] = ()) -> str:
        head = f"{Grammar(self._pieces).lit(prefix)} " if prefix else ""
        return "\n".join([f"start: {head}{body}", *rules]) + "\n"

    def _compile(self, lark: str, param: str) -> "GrammarProcessor":
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            grammar, self.llg_tokenizer
        )
        if is_error:
            raise InvalidRequestError(f"Unsupported schema: {_error_text(messages[0])}", param=param)
        return GrammarProcessor(llguidance.LLMatcher(self.llg_tokenizer, grammar), self.llg_tokenizer.vocab_size)


def _error_text(message: str) -> str:
    """llguidance's error without its position prefix and the grammar listing after it."""
    lines = []
    for line in message.strip().splitlines():
        if re.match(r"\s*\d+ \|", line):
            break
        lines.append(line.strip())
    text = " ".join(line for line in lines if line and set(line) != {"^"})
    return re.sub(r"^at \d+\(\d+\): ", "", text)


class GrammarProcessor:
    """An mlx-lm logits processor that allows only tokens the grammar accepts.

    Runs on the engine thread. The first call sees the prompt; each later call
    sees one more token, the one just sampled, which advances the grammar.
    """

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int):
        self.matcher = matcher
        self.bitmask = allocate_token_bitmask(1, vocab_size)
        self.started = False

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self.started:
            self.matcher.consume_token(tokens[-1].item())
        self.started = True
        fill_next_token_bitmask(self.matcher, self.bitmask)
        allowed = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little").astype(bool)
        n = logits.shape[-1]
        if allowed.size < n:  # an embedding padded past the tokenizer's vocabulary
            allowed = np.pad(allowed, (0, n - allowed.size))
        return mx.where(mx.array(allowed[:n]), logits, -mx.inf)
