"""Embeddings from the loaded language model: mean-pooled last hidden states.

mlx-lm's models keep their transformer body as ``model.model`` (the hidden
states after the final norm, before the vocabulary projection). Each input is
run on its own (no padding, so batching never changes a vector), its hidden
states are averaged over the tokens and scaled to unit length. That makes any
chat model answer ``/v1/embeddings``; a model trained for embeddings gives
better ones. Runs on the engine thread only.
"""

import base64
from typing import Optional

import mlx.core as mx
import numpy as np

from mlxserve.errors import InvalidRequestError


def backbone(model):
    """The part of an mlx-lm model that yields hidden states, or ``None``."""
    body = getattr(model, "model", None) or getattr(getattr(model, "language_model", None), "model", None)
    return body if callable(body) else None


def embed(model, inputs: list[list[int]], dimensions: Optional[int] = None) -> np.ndarray:
    """Unit-length embeddings, one row per input (call on the engine thread).

    Args:
        model: An mlx-lm model.
        inputs: Token ids per input.
        dimensions: Keep the first N dimensions (then renormalize), as OpenAI's
            ``dimensions`` does for models trained for it.
    """
    body = backbone(model)
    if body is None:
        raise InvalidRequestError(f"This model ({type(model).__module__}) gives no hidden states to embed.", param="model")
    rows = []
    for tokens in inputs:
        hidden = body(mx.array(tokens)[None])[0].astype(mx.float32)
        rows.append(mx.mean(hidden, axis=0))
    vectors = mx.stack(rows)
    if dimensions is not None:
        if dimensions > vectors.shape[-1]:
            raise InvalidRequestError(
                f"dimensions must be at most {vectors.shape[-1]} for this model; got {dimensions}.",
                param="dimensions",
            )
        vectors = vectors[:, :dimensions]
    vectors = vectors / mx.maximum(mx.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return np.array(vectors)


def encode(vector: np.ndarray, encoding_format: str):
    """A vector as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
