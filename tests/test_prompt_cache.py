"""The prompt cache: a prompt that extends an earlier generation prefills only its new tokens."""

import asyncio
import time

import mlx.core as mx
import pytest

from mlxserve.engine import Engine, EngineOptions, GenerationRequest, with_prefix
from tests.test_chat import prompt_len


def _engine(model_dir, **options) -> Engine:
    eng = Engine(str(model_dir), warmup=False, options=EngineOptions(**options))
    eng.start()
    assert eng.ready.wait(300) and eng.state == "ready", eng.error
    return eng


@pytest.fixture(scope="module")
def cached_engine(model_dir):
    """An engine of its own, so that no other test has filled its prompt cache."""
    eng = _engine(model_dir)
    yield eng
    eng.stop()


@pytest.fixture(scope="module")
def uncached_engine(model_dir):
    """An engine with the prompt cache off."""
    eng = _engine(model_dir, prompt_cache_size=0)
    yield eng
    eng.stop()


def chat(server, messages, **params):
    return server.openai().chat.completions.create(model="m", messages=messages, **params)


def test_second_turn_reuses_the_first_turns_cache(make_server, cached_engine, uncached_engine, examples):
    short = examples["short"]
    cached, plain = make_server(engine_=cached_engine), make_server(engine_=uncached_engine)

    turn1 = chat(cached, short["messages"])
    assert turn1.usage.prompt_tokens_details.cached_tokens == 0
    assert turn1.choices[0].message.content == short["completion"]
    second = short["messages"] + [
        {"role": "assistant", "content": turn1.choices[0].message.content},
        {"role": "user", "content": "Tell me a long story."},
    ]
    turn2 = chat(cached, second, max_tokens=60)
    # The second prompt starts with the first prompt and its answer.
    assert turn2.usage.prompt_tokens_details.cached_tokens >= turn1.usage.prompt_tokens
    assert turn2.usage.prompt_tokens == prompt_len(cached_engine, second)

    fresh = chat(plain, second, max_tokens=60)
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert fresh.choices[0].message.content == turn2.choices[0].message.content
    assert fresh.usage.completion_tokens == turn2.usage.completion_tokens
    assert cached_engine.prompt_cache.hits >= 1 and len(uncached_engine.prompt_cache) == 0


def test_repeated_prompt_prefills_only_its_last_token(make_server, cached_engine, examples):
    short = examples["short"]
    server = make_server(engine_=cached_engine)
    chat(server, short["messages"])
    again = server.http().post(
        "/v1/chat/completions",
        json={"messages": short["messages"], "stream": True, "stream_options": {"include_usage": True}},
    )
    usage = [e for e in again.text.splitlines() if '"usage"' in e and '"choices":[]' in e]
    assert usage, again.text
    n = prompt_len(cached_engine, short["messages"])
    assert f'"prompt_tokens_details":{{"cached_tokens":{n - 1}}}' in usage[0]
    assert chat(server, short["messages"]).choices[0].message.content == short["completion"]


def test_logits_processors_see_the_cached_prefix():
    """After a cache hit, penalties and grammars still see the whole context."""
    seen = []

    def record(tokens, logits):
        seen.append(tokens.tolist())
        return logits * 2

    (wrapped,) = with_prefix([record], [1, 2, 3])
    logits = wrapped(mx.array([4, 5], dtype=mx.uint32), mx.ones((1, 3)))
    assert seen == [[1, 2, 3, 4, 5]] and logits.tolist() == [[2, 2, 2]]
    assert with_prefix([record], []) == [record]


def test_same_answer_with_and_without_cache_under_penalties(make_server, cached_engine, uncached_engine, examples):
    think = examples["think"]
    params = dict(max_tokens=40, temperature=0, presence_penalty=2.0, frequency_penalty=1.0)
    cached, plain = make_server(engine_=cached_engine), make_server(engine_=uncached_engine)
    chat(cached, think["messages"], **params)  # fills the cache
    hit = chat(cached, think["messages"], **params)
    assert hit.usage.prompt_tokens_details.cached_tokens > 0
    assert hit.choices[0].message.content == chat(plain, think["messages"], **params).choices[0].message.content


def test_completions_report_cached_tokens(make_server, cached_engine):
    server = make_server(engine_=cached_engine)
    client = server.openai()
    prompt = "The quick brown fox jumps over the lazy dog."
    client.completions.create(model="m", prompt=prompt, max_tokens=5, temperature=0)
    resp = client.completions.create(model="m", prompt=prompt + " Again", max_tokens=5, temperature=0)
    assert resp.usage.prompt_tokens_details.cached_tokens >= len(cached_engine.tokenizer.encode(prompt)) - 1


def test_stopping_the_engine_drops_its_kept_caches(model_dir, examples):
    eng = _engine(model_dir)
    prompt = eng.tokenizer.apply_chat_template(examples["short"]["messages"], add_generation_prompt=True)

    async def answer():
        return [d async for d in eng.generate(GenerationRequest(prompt=prompt, max_tokens=30))]

    asyncio.run(answer())
    deadline = time.monotonic() + 5  # the cache is kept just after the last delta goes out
    while not len(eng.prompt_cache):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert eng.prompt_cache.nbytes > 0
    eng.stop()
    assert len(eng.prompt_cache) == 0 and eng.prompt_cache.nbytes == 0


def test_kept_caches_make_way_for_a_generation_under_the_memory_limit(make_server, model_dir, examples):
    eng = _engine(model_dir)
    server = make_server(engine_=eng)
    for name in ("short", "think", "json"):
        chat(server, examples[name]["messages"])
    server.wait_idle()
    assert len(eng.prompt_cache) == 3
    # A generation that needs their room evicts them (then keeps its own).
    need = eng.shape.request_bytes(20, 16)
    eng.memory_limit = eng.memory_in_use + need
    chat(server, examples["long"]["messages"], max_tokens=16)
    server.wait_idle()
    assert len(eng.prompt_cache) == 1
    eng.stop()
