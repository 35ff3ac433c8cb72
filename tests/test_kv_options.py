"""--kv-bits and --max-kv-size: smaller KV caches, same serving behaviour."""

import asyncio
import json
import shutil

import mlx.core as mx
import pytest
from mlx_lm.models import qwen3
from mlx_lm.utils import save_config, save_model

from mlxserve.engine import Engine, EngineOptions, GenerationRequest
from tests.conftest import assert_mlx_lm_answer, mlx_lm_answer


@pytest.fixture(scope="module")
def wide_heads_model(model_dir, tmp_path_factory):
    """The test model's shape and tokenizer with 64-wide attention heads and random weights.

    MLX quantizes the KV cache in groups of 64, wider than the test model's 16-wide heads.
    """
    path = tmp_path_factory.mktemp("wide-heads")
    config = dict(json.loads((model_dir / "config.json").read_text()), head_dim=64)
    mx.random.seed(0)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    save_model(path, model)
    save_config(config, path / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(model_dir / name, path / name)
    return path


@pytest.fixture(scope="module")
def engines(model_dir, wide_heads_model):
    """Engines of their own: full precision and a 32-token rotating KV cache on the test model,
    full precision and a 4-bit KV cache on the wide-heads model."""
    made = {
        name: Engine(str(path), options=EngineOptions(**options))
        for name, path, options in [
            ("full", model_dir, {}),
            ("rotating", model_dir, {"max_kv_size": 32}),
            ("wide", wide_heads_model, {}),
            ("kv4", wide_heads_model, {"kv_bits": 4}),
        ]
    }
    for eng in made.values():
        eng.start()
    for eng in made.values():
        assert eng.ready.wait(300) and eng.state == "ready", eng.error
    yield made
    for eng in made.values():
        eng.stop()


def story(make_server, engine, examples, **params):
    client = make_server(engine_=engine).openai()
    return client.chat.completions.create(
        model="m", messages=examples["long"]["messages"], temperature=0, **params
    )


def test_quantized_kv_cache_takes_less_memory(make_server, engines, examples):
    full = story(make_server, engines["wide"], examples, max_tokens=100)
    quantized = story(make_server, engines["kv4"], examples, max_tokens=100)
    assert quantized.usage.completion_tokens == full.usage.completion_tokens == 100
    assert 0 < engines["kv4"].prompt_cache.nbytes < engines["wide"].prompt_cache.nbytes / 2
    # A second request reuses the quantized cache.
    again = story(make_server, engines["kv4"], examples, max_tokens=5)
    assert again.usage.prompt_tokens_details.cached_tokens > 0


def test_kv_bits_the_model_cannot_use_fail_at_load_with_the_reason(model_dir):
    """The warm-up runs the serving options, so a bad combination fails before serving."""
    eng = Engine(str(model_dir), options=EngineOptions(kv_bits=4))
    eng.start()
    assert eng.ready.wait(300)
    eng.stop()
    assert eng.state == "failed" and "group size" in str(eng.error)


def test_rotating_kv_cache_is_bounded_and_generates_past_its_size(make_server, engines, examples):
    # The end-of-turn token is banned: past its window the model has forgotten its
    # prompt, and where it would stop depends on the weights, not on the cache.
    no_end = {str(t): -100 for t in engines["rotating"].tokenizer.eos_token_ids}
    full = story(make_server, engines["full"], examples, max_tokens=200, logit_bias=no_end)
    rotating = story(make_server, engines["rotating"], examples, max_tokens=200, logit_bias=no_end)
    # Far past the 32 tokens it keeps.
    assert rotating.usage.completion_tokens == 200
    assert 0 < engines["rotating"].prompt_cache.nbytes < engines["full"].prompt_cache.nbytes / 4
    # Its first tokens, generated while everything still fits, are the full cache's.
    assert rotating.choices[0].message.content[:15] == full.choices[0].message.content[:15]


def test_kv_bits_must_be_a_width_mlx_quantizes_to():
    from pydantic import ValidationError

    from mlxserve.config import Settings

    assert Settings(kv_bits=8).kv_bits == 8
    with pytest.raises(ValidationError, match="kv_bits must be one of 2, 3, 4, 5, 6, 8"):
        Settings(kv_bits=7)


def test_dequantizing_cache_attends_as_mlx_lm_does_over_the_quantized_cache(wide_heads_model):
    """The fallback for backends without quantized attention: same cache, same answer."""
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.utils import load

    from mlxserve.kv_cache import dequantizing

    model, _ = load(str(wide_heads_model))
    prompt = mx.arange(40)[None] % 50 + 3
    quantized = [c.to_quantized(group_size=64, bits=4) for c in make_prompt_cache(model)]
    fallback = dequantizing(make_prompt_cache(model), bits=4)
    for cache in (quantized, fallback):
        model(prompt, cache=cache)
    step_q = model(prompt[:, :1], cache=quantized)
    step_f = model(prompt[:, :1], cache=fallback)
    assert mx.allclose(step_q, step_f, atol=2e-2, rtol=2e-2).item()
    assert mx.argmax(step_q[0, -1]).item() == mx.argmax(step_f[0, -1]).item()
    assert sum(c.nbytes for c in fallback) == sum(c.nbytes for c in quantized)
    assert fallback[0].offset == 41


def test_kv_bits_on_a_backend_without_quantized_attention(
    monkeypatch, make_server, engines, wide_heads_model, examples
):
    """As on MLX 0.32's CUDA backend: the cache stays 4-bit, attention runs on a copy."""
    import mlx_lm.models.base as base

    def no_kernel(*args, **kwargs):
        raise RuntimeError("[quantized_matmul] No implementation for problem shape: 1x64x64x32")

    story(make_server, engines["wide"], examples, max_tokens=100)  # full precision, to compare
    monkeypatch.setattr(base, "quantized_scaled_dot_product_attention", no_kernel)
    eng = Engine(str(wide_heads_model), options=EngineOptions(kv_bits=4))
    eng.start()
    try:
        assert eng.ready.wait(300) and eng.state == "ready", eng.error
        assert eng.dequantized_attention
        answer = story(make_server, eng, examples, max_tokens=100)
        assert answer.usage.completion_tokens == 100
        assert 0 < eng.prompt_cache.nbytes < engines["wide"].prompt_cache.nbytes / 2
        again = story(make_server, eng, examples, max_tokens=5)
        assert again.usage.prompt_tokens_details.cached_tokens > 0
    finally:
        eng.stop()
    assert not engines["kv4"].dequantized_attention  # this backend attends quantized


def test_a_prompt_longer_than_the_rotating_cache_prefills_as_mlx_lm_does(engines, examples):
    """The engine's prefill (Engine.stream) over a prompt that overflows a 32-token
    rotating cache gives mlx-lm's tokens and logprobs."""
    engine = engines["rotating"]
    prompt = engine.tokenizer.apply_chat_template(
        examples["long"]["messages"] * 6, add_generation_prompt=True
    )
    assert len(prompt) > 2 * engine.options.max_kv_size  # it overflows, then some

    async def scenario():
        expected = await engine.call(lambda eng: mlx_lm_answer(eng, prompt, 12, max_kv_size=32))
        deltas = engine.generate(GenerationRequest(prompt=prompt, max_tokens=12, top_logprobs=0))
        return expected, [d async for d in deltas]

    expected, parts = asyncio.run(scenario())
    assert len(expected) > 0
    assert_mlx_lm_answer(parts, expected)
