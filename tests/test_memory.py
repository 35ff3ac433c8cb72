"""Out-of-memory survival: requests that would not fit are refused, allocation failures are survived."""

import json

import mlx.core as mx
import openai
import pytest

from mlxserve.app import create_app
from mlxserve.config import Settings
from mlxserve.memory import GB, InsufficientMemoryError, ModelShape, check_fits
from mlxserve.prompt_cache import PromptCache
from tests.conftest import MODEL_NAME, LiveServer
from tests.test_queue_position import Holder, _story

LONG_PROMPT = "Tell me a long story. " * 200  # about 1200 tokens


@pytest.fixture
def shape(model_dir) -> ModelShape:
    """The test model's shape, as the CPU backend runs it."""
    return ModelShape.from_config(json.loads((model_dir / "config.json").read_text()))


def test_model_shape_from_config(shape):
    assert (shape.layers, shape.heads, shape.kv_heads, shape.head_dim) == (2, 2, 1, 16)
    assert shape.dtype_bytes == 2 and shape.scores_materialized


def test_kv_cache_grows_in_mlx_lm_steps(shape):
    per_token = 2 * 2 * 1 * 16 * 2  # keys and values, layers, kv heads, head dim, float16
    assert shape.kv_cache_bytes(1) == 256 * per_token
    assert shape.kv_cache_bytes(257) == 512 * per_token


def test_estimate_covers_what_a_generation_really_takes(server, engine, monkeypatch):
    """Measured on this backend: the estimate is at or above the peak a long prompt reaches."""
    monkeypatch.setattr(engine, "prompt_cache", PromptCache(0, 0))  # prefill the whole prompt
    server.wait_idle()
    before = engine.memory_in_use
    mx.reset_peak_memory()  # process-wide counters; the engine thread is idle
    resp = server.openai().completions.create(model="x", prompt=LONG_PROMPT, max_tokens=100)
    peak = mx.get_peak_memory() - before
    need = engine.shape.request_bytes(resp.usage.prompt_tokens, 100)
    assert resp.usage.prompt_tokens > 1000
    assert peak <= need < 3 * peak


def test_check_fits_refuses_with_503_and_retry_after():
    check_fits(10, limit=100, in_use=50, reserved=40)
    with pytest.raises(InsufficientMemoryError) as info:
        check_fits(11, limit=100, in_use=50, reserved=40)
    err = info.value
    assert err.status_code == 503 and err.code == "insufficient_memory"
    assert int(err.headers()["Retry-After"]) >= 1
    assert "retry when the running generations end" in err.message
    with pytest.raises(InsufficientMemoryError) as info:
        check_fits(51, limit=100, in_use=50)
    assert "No other generation is running: shorten the prompt or max_tokens." in info.value.message


def _tight_limit(engine) -> float:
    """A limit (GB) with room for a short chat but not for LONG_PROMPT's prefill."""
    return (engine.memory_in_use + 4 * 10**6) / GB


def test_low_memory_limit_refuses_a_long_prompt_and_keeps_serving(make_server, engine, examples):
    server = make_server(memory_limit=_tight_limit(engine))
    client = server.openai()
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            client.completions.create(model="x", prompt=LONG_PROMPT, max_tokens=100, stream=stream)
        assert info.value.status_code == 503
        assert info.value.body["code"] == "insufficient_memory"
        assert int(info.value.response.headers["Retry-After"]) >= 1
        assert "Not enough memory for this request" in info.value.body["message"]
    server.wait_idle()
    resp = client.chat.completions.create(model="x", messages=examples["short"]["messages"])
    assert resp.choices[0].message.content == examples["short"]["completion"]
    assert server.service.reserved_memory == 0


class FailsOnLongInput:
    """The model, except that a long input fails as Metal fails an allocation it cannot make.

    (On MLX's CPU backend a failed allocation ends the process, so the failure is staged.)
    """

    def __init__(self, model, most: int):
        self._model = model
        self._most = most

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, inputs, *args, **kwargs):
        if inputs.shape[-1] > self._most:
            raise RuntimeError(
                "[metal::malloc] Attempting to allocate 103918075904 bytes which is greater "
                "than the maximum allowed buffer size of 77309411328 bytes."
            )
        return self._model(inputs, *args, **kwargs)


def test_an_allocation_failure_is_an_error_and_the_server_keeps_serving(
    server, engine, examples, monkeypatch
):
    monkeypatch.setattr(engine, "model", FailsOnLongInput(engine.model, 500))
    monkeypatch.setattr(engine, "prompt_cache", PromptCache(0, 0))  # prefill the whole prompt
    client = server.openai()
    with pytest.raises(openai.APIStatusError) as info:
        client.completions.create(model="x", prompt=LONG_PROMPT, max_tokens=10)
    assert info.value.status_code == 503
    assert info.value.body["code"] == "insufficient_memory"
    assert "ran out of memory" in info.value.body["message"]
    # Streamed, the failure arrives in-band after the headers.
    body = {"prompt": LONG_PROMPT, "max_tokens": 10, "stream": True}
    with server.http() as http, http.stream("POST", "/v1/completions", json=body) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert json.loads(lines[-2][6:])["error"]["code"] == "insufficient_memory"
    assert lines[-1] == "data: [DONE]"
    server.wait_idle()
    resp = client.chat.completions.create(model="x", messages=examples["short"]["messages"])
    assert resp.choices[0].message.content == examples["short"]["completion"]
    assert server.service.reserved_memory == 0


def test_the_memory_limit_setting_reaches_mlx(model_dir, examples):
    """A server that owns its engine applies --memory-limit with mx.set_memory_limit."""
    before = mx.get_memory_limit()
    settings = Settings(model=str(model_dir), served_model_name=MODEL_NAME, memory_limit=0.5)
    try:
        with LiveServer(create_app(settings)) as server:
            engine = server.service.models.engines[MODEL_NAME]
            assert engine.ready.wait(60) and engine.state == "ready"
            assert mx.get_memory_limit() == 500_000_000
            assert engine.memory_limit == 500_000_000
            resp = server.openai().chat.completions.create(
                model="x", messages=examples["short"]["messages"]
            )
            assert resp.choices[0].message.content == examples["short"]["completion"]
    finally:
        mx.set_memory_limit(before)


def test_a_queued_stream_that_will_not_fit_hears_so_in_band(make_server, engine, examples):
    """Checked once its slot comes: the refusal follows the queue comments, and nothing leaks."""
    server = make_server(memory_limit=_tight_limit(engine), keepalive_interval=30)
    holder = Holder(server, _story(engine, examples))
    body = {"prompt": LONG_PROMPT, "max_tokens": 100, "stream": True}
    with server.http() as http, http.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines) == ": queued position=1"
        holder.done()
        data = [line for line in lines if line.startswith("data: ")]
    assert json.loads(data[-2][6:])["error"]["code"] == "insufficient_memory"
    assert data[-1] == "data: [DONE]"
    server.wait_idle()
    assert server.service.reserved_memory == 0
    assert set(server.service.models.active.values()) <= {0}
