"""Prompt cache: reuse the KV cache of an earlier generation whose tokens the new prompt extends.

A multi-turn chat sends the whole conversation each turn, and each prompt
starts with the previous prompt and answer. Keeping the KV cache of finished
generations, keyed by their tokens, lets the next turn prefill only what is new.
The store is mlx-lm's own LRU (a token trie, bounded by entries and bytes);
this module adds the engine's rules: how many tokens a hit saves, a cache that
always leaves at least one token to prefill (the model must see a token to
produce logits), and a key that matches what the cache really holds.
Engine thread only: it holds MLX arrays.
"""

from dataclasses import dataclass
from typing import Any, Optional

from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

# One model per engine: the LRU's model key is a constant.
_MODEL_KEY = "model"


@dataclass
class Hit:
    """A KV cache to generate from and the prompt tokens still to prefill.

    Attributes:
        cache: The per-layer caches (a private copy), already holding ``cached`` tokens,
            or ``None`` when nothing was cached.
        cached: How many of the prompt's leading tokens the cache holds.
    """

    cache: Optional[list[Any]]
    cached: int


class PromptCache:
    """An LRU of KV caches keyed by token sequence.

    Args:
        max_entries: Most caches kept (0 disables the cache).
        max_bytes: Most bytes of KV cache kept, all entries together.
    """

    def __init__(self, max_entries: int, max_bytes: int):
        self.enabled = max_entries > 0 and max_bytes > 0
        self._limits = dict(max_size=max_entries, max_bytes=max_bytes)
        self._lru = LRUPromptCache(**self._limits)
        self.hits = 0
        self.lookups = 0

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes

    def clear(self) -> None:
        """Drop every kept cache (their memory goes back when MLX frees it)."""
        self._lru = LRUPromptCache(**self._limits)

    def trim_to(self, nbytes: int) -> None:
        """Drop the least recently used caches until at most ``nbytes`` are kept."""
        self._lru.trim_to(n_bytes=max(0, nbytes))

    def fetch(self, prompt: list[int]) -> Hit:
        """The cached KV state that shares the longest prefix with ``prompt``."""
        if not self.enabled or not prompt:
            return Hit(None, 0)
        self.lookups += 1
        cache, rest = self._lru.fetch_nearest_cache(_MODEL_KEY, list(prompt))
        if cache is None:
            return Hit(None, 0)
        if not rest:
            # The whole prompt is cached: give back its last token to prefill.
            if not can_trim_prompt_cache(cache):
                return Hit(None, 0)
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        cached = len(prompt) - len(rest)
        if cached > 0:
            self.hits += 1
        return Hit(cache, cached)

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep ``cache``, which holds the KV state of ``tokens`` (prompt then generated).

        Where the caches report their lengths, the key is made to match them: a
        generation stopped early may hold a token more or fewer than it emitted,
        and a draft model's cache may lag the model's.
        """
        if not self.enabled or not tokens:
            return
        offsets = [getattr(c, "offset", None) for c in cache]
        if all(isinstance(n, int) for n in offsets):
            held = min(min(offsets), len(tokens))
            for layer, n in zip(cache, offsets):
                if n > held:
                    if not layer.is_trimmable():
                        return
                    layer.trim(n - held)
            tokens = tokens[:held]
        if tokens:
            self._lru.insert_cache(_MODEL_KEY, list(tokens), cache)
