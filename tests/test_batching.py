"""Continuous batching (--max-requests N > 1): concurrent clients decode together, same answers."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mlxserve.engine import Engine, EngineOptions
from tests.test_concurrency import chat_body, stream_first_chunks

CLIENTS = 4


@pytest.fixture(scope="module")
def batch_engine(model_dir):
    """An engine that decodes up to CLIENTS generations in one batch."""
    eng = Engine(str(model_dir), options=EngineOptions(batch_size=CLIENTS))
    eng.start()
    assert eng.ready.wait(300) and eng.state == "ready", eng.error
    assert eng.batching
    yield eng
    eng.stop()


@pytest.fixture
def batch_server(make_server, batch_engine):
    return make_server(engine_=batch_engine, max_requests=CLIENTS)


def together(server, bodies: list[dict]) -> list[dict]:
    """POST the chat bodies at once, one client each; the JSON answers in order."""
    barrier = threading.Barrier(len(bodies))

    def post(body):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            barrier.wait()
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return response.json()

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def content(answer: dict) -> str:
    return answer["choices"][0]["message"]["content"]


def test_concurrent_clients_get_the_single_stream_answers(server, batch_server, batch_engine, examples):
    names = ["short", "long", "think", "json"]
    bodies = [chat_body(examples[n], max_tokens=80, temperature=0) for n in names]
    with server.http() as http:
        alone = [http.post("/v1/chat/completions", json=b).json() for b in bodies]
    before = batch_engine.tokens_generated
    answers = together(batch_server, bodies)
    for name, single, batched in zip(names, alone, answers):
        assert content(batched) == content(single), name
        for key in ("prompt_tokens", "completion_tokens"):
            assert batched["usage"][key] == single["usage"][key], name
        assert batched["choices"][0]["finish_reason"] == single["choices"][0]["finish_reason"]
    assert content(answers[0]) == examples["short"]["completion"]
    assert batch_engine.tokens_generated - before == sum(
        a["usage"]["completion_tokens"] for a in answers
    )
    batch_server.wait_idle()


def test_they_really_decode_together(batch_server, batch_engine, examples):
    """Each decode step of a full batch gives every client a token."""
    body = chat_body(examples["long"], max_tokens=200, temperature=0)
    tokens, steps = batch_engine.tokens_generated, batch_engine.batch_steps
    together(batch_server, [body] * CLIENTS)
    tokens, steps = batch_engine.tokens_generated - tokens, batch_engine.batch_steps - steps
    assert tokens == CLIENTS * 200
    # Clients that join a step or two late share all the other steps.
    assert steps < 1.2 * 200


def test_per_request_sampling_stops_and_logprobs_in_one_batch(server, batch_server, examples, engine):
    eos = {str(t): -100 for t in engine.tokenizer.eos_token_ids}
    bodies = [
        chat_body(examples["long"], max_tokens=30, temperature=0, stop=["robot"]),
        chat_body(examples["short"], max_tokens=30, temperature=0, logprobs=True, top_logprobs=2),
        chat_body(examples["json"], max_tokens=12, temperature=0, logit_bias=eos),
        chat_body(examples["think"], max_tokens=20, temperature=0.9, top_p=0.8, seed=7),
    ]
    with server.http() as http:
        alone = [http.post("/v1/chat/completions", json=b).json() for b in bodies]
    answers = together(batch_server, bodies)
    stopped, logprobs, biased, seeded = answers
    assert content(stopped) == "On Monday, the little " and stopped["choices"][0]["finish_reason"] == "stop"
    assert logprobs["choices"][0]["logprobs"] == alone[1]["choices"][0]["logprobs"]
    assert [len(t["top_logprobs"]) for t in logprobs["choices"][0]["logprobs"]["content"]] == [2] * (
        logprobs["usage"]["completion_tokens"] - 1
    )
    assert biased["usage"]["completion_tokens"] == 12 and biased["choices"][0]["finish_reason"] == "length"
    assert content(biased) == content(alone[2])
    # A seeded request runs beside the batch, on its own random stream: same answer as alone.
    assert content(seeded) == content(alone[3])
    batch_server.wait_idle()


def test_cancel_and_timeout_in_a_batch(make_server, batch_engine, engine, examples):
    server = make_server(engine_=batch_engine, max_requests=CLIENTS, timeout=2.0)
    before = batch_engine.tokens_generated
    # With end-of-turn banned the story would run all 2000 tokens if nothing stopped it.
    no_eos = {str(t): -100 for t in engine.tokenizer.eos_token_ids}
    endless = chat_body(examples["long"], max_tokens=2000, logit_bias=no_eos)
    dropped = threading.Thread(target=stream_first_chunks, args=(server, endless, 3))
    dropped.start()
    t0 = time.monotonic()
    answers = together(server, [chat_body(examples["short"]), endless])
    dropped.join(30)
    assert content(answers[0]) == examples["short"]["completion"]
    assert answers[1]["choices"][0]["finish_reason"] == "length"
    assert 0 < answers[1]["usage"]["completion_tokens"] < 2000 and time.monotonic() - t0 < 10
    server.wait_idle(timeout=3)
    # The dropped client's generation stopped within a few tokens of its disconnect.
    answered = sum(a["usage"]["completion_tokens"] for a in answers)
    assert batch_engine.tokens_generated - before < answered + 50


def test_batched_requests_use_and_fill_the_prompt_cache(batch_server, examples):
    short = examples["short"]
    first = together(batch_server, [chat_body(short)])[0]
    second = short["messages"] + [
        {"role": "assistant", "content": content(first)},
        {"role": "user", "content": "Tell me a long story."},
    ]
    a, b = together(batch_server, [chat_body(short), {"model": "x", "messages": second, "max_tokens": 20}])
    assert content(a) == short["completion"]
    assert a["usage"]["prompt_tokens_details"]["cached_tokens"] == a["usage"]["prompt_tokens"] - 1
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"]


def test_grammar_constrained_requests_in_a_batch(server, batch_server, examples):
    """Structured output's per-request logits processors keep working inside a batch."""
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}
    bodies = [
        chat_body(examples["short"], max_tokens=40, temperature=0, response_format=fmt),
        chat_body(examples["long"], max_tokens=40, temperature=0),
        chat_body(examples["json"], max_tokens=40, temperature=0, response_format={"type": "json_object"}),
    ]
    with server.http() as http:
        alone = [http.post("/v1/chat/completions", json=b).json() for b in bodies]
    answers = together(batch_server, bodies)
    for single, batched in zip(alone, answers):
        assert content(batched) == content(single)
    # The grammar forced the schema's start on a prompt trained to answer in prose.
    assert content(answers[0]).startswith('{"n": ')
    assert json.loads(content(answers[2])) == {"city": "Paris", "country": "France"}
