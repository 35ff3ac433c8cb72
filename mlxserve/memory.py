"""Memory the model needs for a request, checked before prefill so the server never runs out.

A generation holds a KV cache that grows with every token, and its prefill
needs activations on top. On Apple Silicon, running past the GPU's working
set ends the process (Metal aborts the command buffer); on MLX's CPU backend a
failed allocation crashes it too, and ``mx.set_memory_limit`` caps nothing
there. So the server refuses a request up front with ``503 insufficient_memory``
when its estimate does not fit in what is left of the limit.

Pure arithmetic here; the engine thread reads MLX's numbers (see ``Engine``).
"""

import math
from dataclasses import dataclass
from typing import Optional

from mlxserve.errors import ServiceUnavailableError

GB = 10**9
# mlx-lm prefills prompts in chunks of this many tokens (stream_generate's default).
PREFILL_STEP = 2048
# mlx-lm's KVCache grows in steps of this many tokens.
KV_STEP = 256
INSUFFICIENT_MEMORY_RETRY_AFTER = 10.0
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


class InsufficientMemoryError(ServiceUnavailableError):
    code = "insufficient_memory"

    def __init__(self, message: str):
        super().__init__(message, retry_after=INSUFFICIENT_MEMORY_RETRY_AFTER)


@dataclass(frozen=True)
class ModelShape:
    """What a model's memory use per token depends on, from its ``config.json``."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int
    scores_materialized: bool = True
    """Attention scores are materialized (MLX's CPU path); a GPU's fused kernel keeps tiles."""

    @classmethod
    def from_config(cls, config: dict, *, gpu: bool = False) -> "ModelShape":
        """The shape in a Hugging Face config (a multimodal model's ``text_config`` first).

        Args:
            gpu: The model runs on a GPU, whose fused attention materializes no scores.
        """
        c = {**config, **(config.get("text_config") or {})}
        hidden = c.get("hidden_size") or c.get("d_model") or c.get("n_embd") or 0
        heads = c.get("num_attention_heads") or c.get("n_head") or 1
        return cls(
            layers=c.get("num_hidden_layers") or c.get("n_layer") or c.get("num_layers") or 1,
            heads=heads,
            kv_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or (hidden // heads if hidden else 128),
            hidden=hidden,
            intermediate=c.get("intermediate_size") or 4 * hidden,
            vocab=c.get("vocab_size") or 0,
            dtype_bytes=DTYPE_BYTES.get(c.get("torch_dtype") or c.get("dtype"), 2),
            scores_materialized=not gpu,
        )

    def kv_cache_bytes(self, tokens: int) -> int:
        """Keys and values of every layer for ``tokens`` tokens, as mlx-lm allocates them."""
        allocated = math.ceil(tokens / KV_STEP) * KV_STEP
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes * allocated

    def activation_bytes(self, prompt_tokens: int, total_tokens: int) -> int:
        """The largest transient buffers: a prefill chunk's attention scores and MLP, the logits."""
        chunk = max(1, min(prompt_tokens, PREFILL_STEP))
        # Scores in float32: measured on the CPU backend, the peak is above half-precision scores.
        scores = self.heads * chunk * total_tokens * 4 if self.scores_materialized else 0
        layer = chunk * (4 * self.hidden + 3 * self.intermediate) * self.dtype_bytes
        return scores + layer + 2 * self.vocab * 4

    def request_bytes(self, prompt_tokens: int, max_tokens: int) -> int:
        """Memory a generation of ``max_tokens`` after ``prompt_tokens`` may need at its peak."""
        total = prompt_tokens + max_tokens
        return self.kv_cache_bytes(total) + self.activation_bytes(prompt_tokens, total)


def check_fits(need: int, *, limit: int, in_use: int, reserved: int = 0) -> None:
    """Refuse a request whose memory does not fit what is left of ``limit``.

    Args:
        need: The request's estimate (:meth:`ModelShape.request_bytes`).
        limit: The memory the server may use.
        in_use: What MLX holds now (the weights, caches, running generations).
        reserved: Estimates of generations that are running and may still grow.

    Raises:
        InsufficientMemoryError: 503 with ``Retry-After``.
    """
    free = limit - in_use - reserved
    if need > free:
        advice = (
            "No other generation is running: shorten the prompt or max_tokens."
            if reserved == 0
            else "Shorten the prompt or max_tokens, or retry when the running generations end."
        )
        raise InsufficientMemoryError(
            f"Not enough memory for this request: it needs about {_gb(need)} (KV cache and "
            f"activations for its prompt and max_tokens), and {_gb(max(free, 0))} of the "
            f"{_gb(limit)} memory limit is free. {advice}"
        )


def _gb(n: int) -> str:
    return f"{n / GB:.3g} GB" if n >= GB / 100 else f"{n / 10**6:.3g} MB"


def device_limit(memory_limit: int, device_info: dict) -> int:
    """The memory the server may use: MLX's limit, within the GPU's recommended working set."""
    recommended = device_info.get("max_recommended_working_set_size")
    return min(memory_limit, recommended) if recommended else memory_limit


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is MLX failing to allocate.

    MLX raises no type of its own: an allocation failure is a ``MemoryError``
    (``std::bad_alloc``) or a ``RuntimeError`` from its allocator
    (``[metal::malloc] ...``, ``[malloc] ...``).
    """
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "malloc]" in str(exc)
    )


def limit_bytes(gigabytes: Optional[float]) -> Optional[int]:
    """``--memory-limit`` in bytes."""
    return None if gigabytes is None else int(gigabytes * GB)
