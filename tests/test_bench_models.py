"""The benchmark's constructed models: an agreeing pair for speculative decoding."""

import asyncio

import mlx.core as mx
import mlx_lm

from mlxserve.engine import Engine, EngineOptions, GenerationRequest
from test_speed_guard import load_bench


def test_the_agreeing_draft_predicts_its_model_exactly_and_is_always_accepted():
    bench = load_bench()
    target, draft = bench.build_agreeing_pair("tiny")
    model, tokenizer = mlx_lm.load(str(target))
    first_layer, _ = mlx_lm.load(str(draft))
    assert len(model.layers) == 4 and len(first_layer.layers) == 1
    ids = mx.array([tokenizer.encode("Once upon a time, in a small village")])
    assert mx.array_equal(model(ids), first_layer(ids)).item()

    eng = Engine(str(target), options=EngineOptions(draft_model=str(draft), num_draft_tokens=3))
    eng.start()
    try:
        assert eng.ready.wait(120) and eng.state == "ready", eng.error

        async def run():
            last = None
            async for delta in eng.generate(GenerationRequest(prompt=ids[0].tolist(), max_tokens=40)):
                last = delta
            return last

        last = asyncio.run(run())
    finally:
        eng.stop()
    assert last.completion_tokens == 40
    assert last.accepted_draft_tokens > 20 and last.rejected_draft_tokens == 0
