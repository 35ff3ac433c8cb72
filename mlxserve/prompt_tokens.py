"""Tokenizing a chat prompt that mostly repeats an earlier one.

A multi-turn chat sends the whole conversation every turn, so each templated
prompt starts with the previous one. Tokenizing costs about a microsecond a
character (5 ms for a 5,000-token chat on a 2-core Xeon) and grows with the
conversation. :class:`PromptTokens` keeps the tokens of a few recent prompts
and, for a new prompt, reuses those of the earlier prompt it shares the longest
start with, up to the last special token (a chat template's role marker) inside
that shared start; only the rest is tokenized.

The cut is exact: a fast tokenizer splits its input at special tokens before
anything else, so the text on either side of one is tokenized on its own. A
cut is only made where the earlier prompt's tokens have the special token
itself starting at that character, and the first reuses are checked against a
full tokenization: a tokenizer for which they differ gets no reuse.
"""

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger("mlxserve.prompt_tokens")


@dataclass(frozen=True)
class _Entry:
    text: str
    ids: list[int]
    cuts: list[tuple[int, int, int]]
    """Where a special token starts: (character, token index, character after it), in order."""


def common_prefix(a: str, b: str) -> int:
    """The length of the longest common start of ``a`` and ``b`` (C-speed comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PromptTokens:
    """Tokenizes prompts as ``tokenizer.encode(text, add_special_tokens=False)`` would.

    Thread-safe: prompts are rendered in worker threads.

    Args:
        tokenizer: A Hugging Face tokenizer, or mlx-lm's wrapper of one. Without
            character offsets (a slow tokenizer) every prompt is tokenized whole.
        entries: How many recent prompts to keep.
        min_chars: Shorter prompts are tokenized whole (reuse would not pay).
        checks: How many reuses are checked against a full tokenization.
    """

    def __init__(self, tokenizer, *, entries: int = 8, min_chars: int = 1024, checks: int = 3):
        self._hf = getattr(tokenizer, "_tokenizer", tokenizer)
        self._entries: "OrderedDict[str, _Entry]" = OrderedDict()
        self._size = entries
        self._min_chars = min_chars
        self._checks = checks
        self._lock = threading.Lock()
        self._special = {
            i: token.content
            for i, token in getattr(self._hf, "added_tokens_decoder", {}).items()
            if token.special and token.content
        }
        self.enabled = bool(self._special) and bool(getattr(self._hf, "is_fast", False))
        self.reused_chars = 0
        """Characters whose tokens came from an earlier prompt (since start)."""

    def encode(self, text: str) -> list[int]:
        """The tokens of ``text``, without a BOS or other added special tokens."""
        if not self.enabled or len(text) < self._min_chars:
            return self._full(text).ids
        cut = self._cut(text)
        if cut is None:
            entry = self._full(text)
            self._keep(entry)
            return entry.ids
        earlier, at, k = cut
        tail = self._full(text[at:])
        ids = earlier.ids[:k] + tail.ids
        if self._checks > 0:
            whole = self._full(text)
            with self._lock:
                self._checks -= 1
                if whole.ids != ids:
                    self.enabled = False
                    log.warning("tokenizing prompts in parts differs from whole: reuse is off")
                    return whole.ids
        self.reused_chars += at
        head_cuts = [cut for cut in earlier.cuts if cut[1] < k]
        tail_cuts = [(c + at, i + k, end + at) for c, i, end in tail.cuts]
        self._keep(_Entry(text, ids, head_cuts + tail_cuts))
        return ids

    def _cut(self, text: str) -> Optional[tuple[_Entry, int, int]]:
        """The earlier prompt to reuse, the character to split ``text`` at and the number
        of that prompt's tokens before it; ``None`` when nothing can be reused."""
        with self._lock:
            entries = list(self._entries.values())
        best, shared = None, 0
        for entry in entries:
            n = common_prefix(entry.text, text)
            if n > shared:
                best, shared = entry, n
        if best is None:
            return None
        usable = [(c, k) for c, k, end in best.cuts if end <= shared and c > 0]
        if not usable:
            return None
        at, k = usable[-1]
        return best, at, k

    def _full(self, text: str) -> _Entry:
        enc = self._hf(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        special, cuts = self._special, []
        for k, i in enumerate(ids):
            if i in special:
                start, content = offsets[k][0], special[i]
                if text.startswith(content, start):
                    cuts.append((start, k, start + len(content)))
        return _Entry(text, ids, cuts)

    def _keep(self, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(entry.text, None)
            self._entries[entry.text] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
