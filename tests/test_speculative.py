"""--draft-model: speculative decoding gives the same answers and reports acceptance in usage."""

import pytest

from mlxserve.engine import Engine, EngineOptions


@pytest.fixture(scope="module")
def draft_engine(model_dir):
    """The test model drafting for itself, three tokens a step."""
    eng = Engine(str(model_dir), options=EngineOptions(draft_model=str(model_dir), num_draft_tokens=3))
    eng.start()
    assert eng.ready.wait(300) and eng.state == "ready", eng.error
    yield eng
    eng.stop()


def test_same_answers_and_acceptance_in_usage(server, make_server, draft_engine, examples):
    spec = make_server(engine_=draft_engine)
    for name in ("short", "long", "json"):
        body = {"model": "m", "messages": examples[name]["messages"], "max_tokens": 100, "temperature": 0}
        alone = server.http().post("/v1/chat/completions", json=body).json()
        drafted = spec.http().post("/v1/chat/completions", json=body).json()
        assert drafted["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]
        usage = drafted["usage"]
        assert usage["completion_tokens"] == alone["usage"]["completion_tokens"]
        details = usage["completion_tokens_details"]
        # A model agrees with itself: nearly every draft token is accepted.
        accepted, rejected = details["accepted_prediction_tokens"], details["rejected_prediction_tokens"]
        assert accepted >= 0.6 * usage["completion_tokens"], details
        assert accepted / (accepted + rejected) >= 0.9, details
        assert "completion_tokens_details" not in alone["usage"]


def test_streamed_usage_and_a_cached_second_turn(make_server, draft_engine, examples):
    spec = make_server(engine_=draft_engine)
    client = spec.openai()
    short = examples["short"]
    first = client.chat.completions.create(model="m", messages=short["messages"])
    assert first.choices[0].message.content == short["completion"]
    stream = client.chat.completions.create(
        model="m", messages=short["messages"], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == short["completion"]
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1
    assert usage.completion_tokens_details.accepted_prediction_tokens > 0


def test_a_draft_model_needs_a_full_kv_cache(model_dir):
    eng = Engine(str(model_dir), options=EngineOptions(draft_model=str(model_dir), max_kv_size=64))
    eng.start()
    assert eng.ready.wait(300)
    eng.stop()
    assert eng.state == "failed" and "max_kv_size" in str(eng.error)
