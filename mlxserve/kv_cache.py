"""A quantized KV cache for backends that cannot attend over one.

``--kv-bits`` stores the KV cache quantized, and mlx-lm then computes attention
with quantized matrix products over it. Not every MLX backend has those
products for attention's shapes (MLX 0.32's CUDA backend has none for a
decode step's batch of heads). :class:`DequantizingKVCache` keeps the cache
quantized, which is the memory saving asked for, and gives attention a
full-precision copy of it, one layer at a time.
"""

import mlx.core as mx
from mlx_lm.models.cache import KVCache, QuantizedKVCache, make_prompt_cache

PROBE_PROMPT_TOKENS = 64


class DequantizingKVCache:
    """A KV cache stored at ``bits`` bits and read back at full precision.

    It has no ``bits`` attribute, so mlx-lm's models attend over what
    :meth:`update_and_fetch` returns with their ordinary attention.
    """

    def __init__(self, group_size: int = 64, bits: int = 8):
        self.quantized = QuantizedKVCache(group_size=group_size, bits=bits)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        q = self.quantized
        stored_keys, stored_values = q.update_and_fetch(keys, values)
        return (
            mx.dequantize(*stored_keys, group_size=q.group_size, bits=q.bits),
            mx.dequantize(*stored_values, group_size=q.group_size, bits=q.bits),
        )

    @property
    def offset(self) -> int:
        return self.quantized.offset

    @property
    def state(self):
        return self.quantized.state

    @state.setter
    def state(self, value):
        self.quantized.state = value

    @property
    def nbytes(self) -> int:
        return self.quantized.nbytes

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        return self.quantized.trim(n)

    def size(self) -> int:
        return self.quantized.offset

    def empty(self) -> bool:
        return self.quantized.empty()

    def make_mask(self, *args, **kwargs):
        return self.quantized.make_mask(*args, **kwargs)


def dequantizing(cache: list, bits: int, group_size: int = 64) -> list:
    """``cache`` with each plain ``KVCache`` (the layers mlx-lm would quantize) made a
    :class:`DequantizingKVCache`; other layers (rotating, recurrent) as they are."""
    return _kv_layers(cache, lambda c: DequantizingKVCache(group_size, bits))


def quantized_attention_runs(model, bits: int, group_size: int = 64) -> bool:
    """Whether this backend runs mlx-lm's attention over a ``bits``-bit KV cache for
    ``model``: a prefill and a decode step with the model's own shapes.

    Raises:
        Exception: Whatever a dequantizing cache raises too (then the model
            cannot use ``bits`` at all, say its heads are narrower than a group).
    """
    try:
        cache = _kv_layers(
            make_prompt_cache(model), lambda c: c.to_quantized(group_size=group_size, bits=bits)
        )
        _prefill_and_step(model, cache)
        return True
    except Exception:
        _prefill_and_step(model, dequantizing(make_prompt_cache(model), bits, group_size))
        return False


def _kv_layers(cache: list, make) -> list:
    """``cache`` with each plain ``KVCache`` replaced by ``make(layer)``."""
    return [make(c) if type(c) is KVCache else c for c in cache]


def _prefill_and_step(model, cache: list) -> None:
    prompt = mx.arange(PROBE_PROMPT_TOKENS)[None] % 7 + 1
    mx.eval(model(prompt, cache=cache), model(prompt[:, :1], cache=cache))
