"""/v1/chat/completions with the openai SDK against the real engine on the test model."""

import httpx
import openai
import pytest

from tests.conftest import MODEL_NAME, sse_events


def prompt_len(engine, messages) -> int:
    return len(engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def answer_len(engine, text) -> int:
    """Tokens of the trained answer plus the end-of-turn token."""
    return len(engine.tokenizer.encode(text, add_special_tokens=False)) + 1


def test_non_stream_answer_and_exact_usage(server, engine, examples):
    short = examples["short"]
    resp = server.openai().chat.completions.create(model="anything", messages=short["messages"])
    choice = resp.choices[0]
    assert choice.message.content == short["completion"]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert resp.model == MODEL_NAME and resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-") and resp.created > 0 and resp.system_fingerprint
    assert resp.usage.prompt_tokens == prompt_len(engine, short["messages"])
    assert resp.usage.completion_tokens == answer_len(engine, short["completion"])
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_stream_answer_equals_non_stream(server, engine, examples):
    short = examples["short"]
    stream = server.openai().chat.completions.create(
        model=MODEL_NAME, messages=short["messages"], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == short["completion"]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.object == "chat.completion.chunk"
    assert usage_chunk.usage.prompt_tokens == prompt_len(engine, short["messages"])
    assert usage_chunk.usage.completion_tokens == answer_len(engine, short["completion"])
    assert len({c.id for c in chunks}) == 1


def test_stream_wire_format(server, examples):
    """The raw SSE: role first, finish_reason last, usage chunk with choices [], then [DONE]."""
    body = {
        "model": "x",
        "messages": examples["short"]["messages"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in sse_events(r) if not isinstance(e, str) or e == "[DONE]"]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in chunks[1:-2])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])


def test_max_tokens_gives_length(server, examples):
    long = examples["long"]
    client = server.openai()
    resp = client.chat.completions.create(model="x", messages=long["messages"], max_tokens=7)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 7
    assert long["completion"].startswith(resp.choices[0].message.content)
    # max_completion_tokens is the newer name for the same thing.
    resp = client.chat.completions.create(model="x", messages=long["messages"], max_completion_tokens=5)
    assert resp.usage.completion_tokens == 5 and resp.choices[0].finish_reason == "length"


def test_server_cap_clamps_max_tokens(make_server, examples):
    server = make_server(max_tokens=6)
    resp = server.openai().chat.completions.create(
        model="x", messages=examples["long"]["messages"], max_tokens=1000
    )
    assert resp.usage.completion_tokens == 6 and resp.choices[0].finish_reason == "length"


def test_default_max_tokens_applies_when_absent(make_server, examples):
    server = make_server(default_max_tokens=4)
    resp = server.openai().chat.completions.create(model="x", messages=examples["long"]["messages"])
    assert resp.usage.completion_tokens == 4


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences_are_not_emitted(server, examples, stream):
    short = examples["short"]
    answer = short["completion"]
    # A stop string that starts mid-token and spans several tokens.
    cut = answer.index("tiny") + 2
    stop = answer[cut : cut + 6]
    client = server.openai()
    kwargs = dict(model="x", messages=short["messages"], stop=["never-appears", stop])
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reason = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        resp = client.chat.completions.create(**kwargs)
        text, reason = resp.choices[0].message.content, resp.choices[0].finish_reason
    assert text == answer[:cut]
    assert reason == "stop"


def test_stop_string_as_plain_string(server, examples):
    short = examples["short"]
    resp = server.openai().chat.completions.create(model="x", messages=short["messages"], stop="!")
    assert resp.choices[0].message.content == short["completion"].split("!")[0]


def test_window_keeps_exactly_the_last_messages(make_server, engine, examples, caplog):
    caplog.set_level("INFO", logger="mlxserve.service")
    server = make_server(max_context=1)
    history = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "An old question about nothing."},
        {"role": "assistant", "content": "An old answer."},
    ]
    messages = history + examples["short"]["messages"]
    resp = server.openai().chat.completions.create(model="x", messages=messages, max_tokens=3)
    kept = [history[0]] + examples["short"]["messages"][-1:]
    assert resp.usage.prompt_tokens == prompt_len(engine, kept)
    assert resp.usage.prompt_tokens < prompt_len(engine, messages)
    assert f"window: kept 2 of 4 messages (2 dropped), {resp.usage.prompt_tokens} prompt tokens" in caplog.text


def test_message_window_drops_whole_blocks_of_half_the_window(make_server, engine, examples):
    """--max-context 4: 6 other messages keep the last 4; 7 keep the last 3 (the
    cut moves by 2 at a time, so the prompt's start, which the prompt cache
    reuses, changes every other turn, not every turn)."""
    server = make_server(max_context=4)
    system = [{"role": "system", "content": "You are a helpful assistant."}]
    turns = []
    for i in range(3):
        turns += [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
    question = examples["short"]["messages"]
    for history, kept in ((turns[1:], 4), (turns, 3)):
        messages = system + history + question
        resp = server.openai().chat.completions.create(model="x", messages=messages, max_tokens=3)
        assert resp.usage.prompt_tokens == prompt_len(engine, system + messages[-kept:])


def test_token_window_drops_oldest_to_fit(make_server, engine, examples):
    question = examples["short"]["messages"]
    old = [
        {"role": "user", "content": "Tell me about the weather in a very long and winding way."},
        {"role": "assistant", "content": "It was a calm and quiet day with a light breeze."},
    ]
    budget = prompt_len(engine, question) + 40
    server = make_server(max_context_tokens=budget)
    resp = server.openai().chat.completions.create(model="x", messages=old + question, max_tokens=40)
    assert resp.usage.prompt_tokens == prompt_len(engine, question)
    assert resp.choices[0].message.content.startswith(examples["short"]["completion"][:10])


def test_context_length_exceeded_is_a_bad_request(make_server, engine, examples):
    question = examples["short"]["messages"]
    budget = prompt_len(engine, question) + 5
    server = make_server(max_context_tokens=budget)
    with pytest.raises(openai.BadRequestError) as info:
        server.openai().chat.completions.create(model="x", messages=question, max_tokens=10)
    err = info.value.body
    assert info.value.status_code == 400
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith(f"This model's maximum context length is {budget} tokens.")


def test_content_as_text_parts(server, examples):
    short = examples["short"]
    text = short["messages"][-1]["content"]
    parts = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    resp = server.openai().chat.completions.create(model="x", messages=parts)
    assert resp.choices[0].message.content == short["completion"]


def test_logprobs(server, examples):
    resp = server.openai().chat.completions.create(
        model="x", messages=examples["short"]["messages"], logprobs=True, top_logprobs=3, max_tokens=5
    )
    content = resp.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(t.token for t in content) == resp.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        # Greedy decoding picks the most likely token.
        assert t.top_logprobs[0].token == t.token
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-5)


def test_logprobs_cover_exactly_the_answer(server, examples):
    short = examples["short"]
    resp = server.openai().chat.completions.create(model="x", messages=short["messages"], logprobs=True)
    tokens = [t.token for t in resp.choices[0].logprobs.content]
    assert "".join(tokens) == short["completion"] == resp.choices[0].message.content
    assert resp.usage.completion_tokens == len(tokens) + 1  # + the end-of-turn token


def test_seed_makes_sampling_reproducible(server, examples):
    client = server.openai()
    kwargs = dict(model="x", messages=examples["long"]["messages"], temperature=1.5, max_tokens=30)
    a = client.chat.completions.create(seed=7, **kwargs).choices[0].message.content
    b = client.chat.completions.create(seed=7, **kwargs).choices[0].message.content
    assert a == b


def test_explicit_zero_temperature_is_greedy(server, examples):
    long = examples["long"]
    resp = server.openai().chat.completions.create(
        model="x", messages=long["messages"], temperature=0, max_tokens=40
    )
    assert long["completion"].startswith(resp.choices[0].message.content)


def test_logit_bias_bans_a_token(server, engine, examples):
    short = examples["short"]
    first = engine.tokenizer.encode(short["completion"], add_special_tokens=False)[0]
    resp = server.openai().chat.completions.create(
        model="x", messages=short["messages"], logit_bias={str(first): -100}, max_tokens=5
    )
    produced = engine.tokenizer.encode(resp.choices[0].message.content, add_special_tokens=False)
    assert produced[:1] != [first]


def test_unknown_fields_are_ignored(server, examples):
    with server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            json={"messages": examples["short"]["messages"], "user": "u1", "frobnicate": {"x": 1}},
        )
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == examples["short"]["completion"]


def test_models_routes(server):
    client = server.openai()
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.body["code"] == "model_not_found"


def test_model_name_with_slash_is_retrievable(make_server):
    server = make_server(served_model_name="mlx-community/Tiny-4bit")
    assert httpx.get(server.url + "/v1/models/mlx-community/Tiny-4bit").json()["id"] == "mlx-community/Tiny-4bit"
