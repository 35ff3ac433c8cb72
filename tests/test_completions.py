"""/v1/completions: a raw prompt, no chat template."""

import pytest

from tests.conftest import sse_events


def templated_prompt(engine, example) -> str:
    return engine.tokenizer.apply_chat_template(
        example["messages"], add_generation_prompt=True, tokenize=False
    )


def test_raw_prompt_is_not_templated(server, engine, examples):
    """The chat-templated text sent raw gives the trained answer, token counts exact."""
    short = examples["short"]
    prompt = templated_prompt(engine, short)
    resp = server.openai().completions.create(model="x", prompt=prompt, max_tokens=100)
    choice = resp.choices[0]
    assert choice.text == short["completion"] and choice.finish_reason == "stop"
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    assert resp.usage.prompt_tokens == len(engine.tokenizer.encode(prompt))


def test_token_id_prompt(server, engine, examples):
    short = examples["short"]
    ids = engine.tokenizer.encode(templated_prompt(engine, short))
    resp = server.openai().completions.create(model="x", prompt=ids, max_tokens=100)
    assert resp.choices[0].text == short["completion"]
    assert resp.usage.prompt_tokens == len(ids)


def test_stream_equals_non_stream(server, engine, examples):
    short = examples["short"]
    prompt = templated_prompt(engine, short)
    chunks = list(
        server.openai().completions.create(
            model="x", prompt=prompt, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == short["completion"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_echo_and_stop(server, engine, examples):
    short = examples["short"]
    prompt = templated_prompt(engine, short)
    resp = server.openai().completions.create(model="x", prompt=prompt, echo=True, stop=["!"])
    assert resp.choices[0].text == prompt + short["completion"].split("!")[0]


def test_legacy_logprobs(server, engine, examples):
    prompt = templated_prompt(engine, examples["short"])
    resp = server.openai().completions.create(model="x", prompt=prompt, logprobs=2, max_tokens=4)
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == resp.choices[0].text
    assert lp.text_offset[0] == 0
    assert all(len(top) <= 2 for top in lp.top_logprobs)


def test_stream_sse_ends_with_done(server, engine, examples):
    body = {"prompt": templated_prompt(engine, examples["short"]), "stream": True}
    with server.http() as http, http.stream("POST", "/v1/completions", json=body) as r:
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "text_completion" for e in events[:-1] if isinstance(e, dict))


@pytest.mark.parametrize("max_tokens", [1, 3])
def test_length(server, examples, max_tokens):
    resp = server.openai().completions.create(model="x", prompt="Once upon a time", max_tokens=max_tokens)
    assert resp.choices[0].finish_reason in ("length", "stop")
    assert resp.usage.completion_tokens <= max_tokens
