"""The engine's own contract, below HTTP: work starts when a generation is
asked for, and closing its deltas, read or not, stops it."""

import asyncio
import math
import os
import threading
import time

import mlx.core as mx
import pytest

from mlxserve import engine as engine_module
from mlxserve.engine import HAND_OVER_SECONDS, Delta, Deltas, Engine, GenerationRequest, _Job
from tests.conftest import assert_mlx_lm_answer, mlx_lm_answer


def _story(engine, examples) -> GenerationRequest:
    prompt = engine.tokenizer.apply_chat_template(
        examples["long"]["messages"], add_generation_prompt=True
    )
    return GenerationRequest(prompt=prompt, max_tokens=1000)


async def _until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_generation_starts_before_the_first_read_and_stops_when_closed(engine, examples):
    async def scenario():
        before = engine.tokens_generated
        deltas = engine.generate(_story(engine, examples))
        # Nobody reads yet, and the engine is already decoding (prefill done).
        await _until(lambda: engine.tokens_generated > before)
        await deltas.aclose()
        await _until(lambda: engine.active_runs == 0)
        stopped_at = engine.tokens_generated
        await asyncio.sleep(0.2)
        return engine.tokens_generated - stopped_at

    assert asyncio.run(scenario()) == 0


def test_deltas_read_after_a_delay_hold_the_whole_answer(engine, examples):
    async def scenario():
        before = engine.tokens_generated
        deltas = engine.generate(_story(engine, examples))
        # Finished while nobody read (and the loop has run the engine's callbacks).
        await _until(lambda: engine.tokens_generated > before and engine.active_runs == 0)
        await asyncio.sleep(0.05)
        parts = [d async for d in deltas]
        return parts

    parts = asyncio.run(scenario())
    assert "".join(d.text for d in parts) == examples["long"]["completion"]
    assert parts[-1].finish_reason == "stop"
    assert len(parts) == 1  # everything that piled up came out merged


def test_the_first_token_waits_until_the_consumer_has_written_it():
    """So that the loop writes it before the engine thread takes the GIL for the next step."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    marks = []

    async def consume(deltas):
        marks.append(("got", (await deltas.__anext__()).text))
        await asyncio.sleep(0.2)  # writing it
        marks.append(("written", None))
        marks.append(("got", (await deltas.__anext__()).text))

    try:
        job = _Job(GenerationRequest(prompt=[1], max_tokens=2), loop, asyncio.Queue())
        asyncio.run_coroutine_threadsafe(consume(Deltas(job)), loop)
        Engine._emit(job, Delta("first", None, 1, 1), wait=5.0)
        assert marks == [("got", "first"), ("written", None)]
        # Later tokens do not wait, and a consumer that does not come back holds the
        # first one up only for the time given.
        t0 = time.monotonic()
        Engine._emit(job, Delta("second", None, 1, 2))
        stuck = _Job(GenerationRequest(prompt=[1], max_tokens=2), loop, asyncio.Queue())
        Engine._emit(stuck, Delta("first", None, 1, 1), wait=HAND_OVER_SECONDS)
        assert time.monotonic() - t0 < HAND_OVER_SECONDS + 0.1
        deadline = time.monotonic() + 5
        while len(marks) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert marks[2] == ("got", "second")
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_an_idle_engine_takes_a_new_job_before_generate_returns(engine, examples, monkeypatch):
    """The event loop lets the engine thread start the prefill before it goes on
    (to the response headers), waiting at most PICK_UP_SECONDS (long here, for a busy CI)."""
    monkeypatch.setattr(engine_module, "PICK_UP_SECONDS", 5.0)

    async def scenario():
        await _until(lambda: engine.active_runs == 0)
        t0 = time.monotonic()
        deltas = engine.generate(_story(engine, examples))
        waited = time.monotonic() - t0
        picked = deltas._job.picked.is_set()
        await _until(lambda: engine.active_runs == 1)
        # A busy engine is not waited for: it takes new jobs between tokens.
        busy = engine.generate(_story(engine, examples))
        busy_picked = busy._job.picked.is_set()
        await deltas.aclose()
        await busy.aclose()
        await _until(lambda: engine.active_runs == 0)
        return picked, waited, busy_picked

    picked, waited, busy_picked = asyncio.run(scenario())
    assert picked and waited < 1.0
    assert not busy_picked


@pytest.mark.parametrize("chunk", [engine_module.PREFILL_STEP_SIZE, 4])
def test_the_first_step_is_built_while_the_last_prefill_chunk_runs(
    engine, examples, monkeypatch, chunk
):
    """mlx-lm waits for each prefill chunk, then builds the first step; the engine
    does not wait for the last chunk, and answers token for token, logprob for
    logprob, as mlx-lm does."""
    prompt = _story(engine, examples).prompt
    chunks = math.ceil((len(prompt) - 1) / chunk)
    assert (chunks == 1) == (chunk == engine_module.PREFILL_STEP_SIZE)  # one chunk, or several
    monkeypatch.setattr(engine_module, "PREFILL_STEP_SIZE", chunk)
    evals = []

    def counted(*arrays):
        evals.append(len(arrays))
        return real_eval(*arrays)

    async def scenario():
        expected = await engine.call(
            lambda eng: mlx_lm_answer(eng, prompt, 12, prefill_step_size=chunk)
        )
        await _until(lambda: engine.active_runs == 0)
        await engine.call(lambda eng: eng.prompt_cache.clear())  # no part of it is cached
        with monkeypatch.context() as patch:
            patch.setattr(mx, "eval", counted)
            deltas = engine.generate(GenerationRequest(prompt=prompt, max_tokens=12, top_logprobs=0))
            parts = [d async for d in deltas]
        return expected, parts

    real_eval = mx.eval
    expected, parts = asyncio.run(scenario())
    assert len(evals) == chunks  # mlx-lm waits once more: each chunk, then the first token
    assert len(expected) == 12
    assert_mlx_lm_answer(parts, expected)


def test_mlx_attention_is_preferred_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(engine_module.CUDNN_ATTENTION_VAR, raising=False)
    engine_module.prefer_mlx_attention()
    assert os.environ[engine_module.CUDNN_ATTENTION_VAR] == "0"
    monkeypatch.setenv(engine_module.CUDNN_ATTENTION_VAR, "1")
    engine_module.prefer_mlx_attention()
    assert os.environ[engine_module.CUDNN_ATTENTION_VAR] == "1"
