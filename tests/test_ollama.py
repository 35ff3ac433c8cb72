"""The Ollama API over real HTTP, with the official ollama Python client."""

import json
import time

import httpx
import ollama
import pytest

from tests.test_models import aliases, hf_cache, vocab_size  # noqa: F401 (fixtures)


def client(server, **kwargs) -> ollama.Client:
    return ollama.Client(host=server.url, **kwargs)


def test_chat(server, examples):
    reply = client(server).chat(model="test-model", messages=examples["short"]["messages"])
    assert reply.message.role == "assistant"
    assert reply.message.content == examples["short"]["completion"]
    assert reply.done is True and reply.done_reason == "stop" and reply.model == "test-model"
    usage = (
        server.openai()
        .chat.completions.create(model="m", messages=examples["short"]["messages"])
        .usage
    )
    assert (reply.prompt_eval_count, reply.eval_count) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    # Real measurements, in nanoseconds, that add up.
    parts = (reply.load_duration, reply.prompt_eval_duration, reply.eval_duration)
    assert all(p > 0 for p in parts)
    assert sum(parts) <= reply.total_duration < 60 * 10**9


def test_chat_streams_ndjson(server, examples):
    parts = list(
        client(server).chat(model="m", messages=examples["short"]["messages"], stream=True)
    )
    assert len(parts) > 3
    assert "".join(p.message.content for p in parts) == examples["short"]["completion"]
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count > 0


def test_stream_is_newline_delimited_json_by_default(server, examples):
    body = {"model": "m", "messages": examples["short"]["messages"]}
    with server.http() as http, http.stream("POST", "/api/chat", json=body) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1]["done"] is True and all(not line["done"] for line in lines[:-1])


@pytest.mark.parametrize("stream", [False, True])
def test_generate_applies_the_chat_template(server, examples, stream):
    reply = client(server).generate(model="m", prompt="Say hello.", stream=stream)
    parts = list(reply) if stream else [reply]
    assert "".join(p.response for p in parts) == examples["short"]["completion"]
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_raw_generate_takes_the_prompt_as_is(server, engine, examples):
    prompt = engine.tokenizer.apply_chat_template(
        examples["short"]["messages"], add_generation_prompt=True, tokenize=False
    )
    reply = client(server).generate(model="m", prompt=prompt, raw=True)
    assert reply.response == examples["short"]["completion"]
    # A bare prompt without the template is not what the model was trained on.
    bare = client(server).generate(
        model="m", prompt="Say hello.", raw=True, options={"num_predict": 8}
    )
    assert bare.response != examples["short"]["completion"]


def test_think_splits_the_reasoning(server, examples):
    reply = client(server).chat(model="m", messages=examples["think"]["messages"], think=True)
    assert reply.message.thinking == "2 plus 3 makes 5."
    assert reply.message.content == "The answer is 5."
    generated = client(server).generate(
        model="m", prompt=examples["think"]["messages"][0]["content"], think=True
    )
    assert (generated.thinking, generated.response) == ("2 plus 3 makes 5.", "The answer is 5.")
    hidden = client(server).chat(model="m", messages=examples["think"]["messages"], think=False)
    assert hidden.message.thinking is None and hidden.message.content == "The answer is 5."


def post(server, path, body) -> dict:
    with server.http() as http:
        r = http.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


# The ollama client re-orders a tool's JSON Schema ("required" before "properties", as
# Ollama's own server does), and the tiny test model only calls tools for its trained
# prompt: these requests go out as trained, and the client's own types read the answers.


def test_tool_call_and_its_result(server, examples):
    example = examples["tool_call"]
    body = {
        "model": "m",
        "messages": example["messages"],
        "tools": example["tools"],
        "stream": False,
    }
    first = ollama.ChatResponse.model_validate(post(server, "/api/chat", body))
    [call] = first.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert first.done_reason == "stop" and first.message.content == ""
    weather = examples["tool_result"]["messages"][-1]["content"]
    body["messages"] = example["messages"] + [
        first.message.model_dump(exclude_none=True),
        {"role": "tool", "content": weather, "tool_name": "get_weather"},
    ]
    second = ollama.ChatResponse.model_validate(post(server, "/api/chat", body))
    assert second.message.content == examples["tool_result"]["completion"]


def test_streamed_tool_call(server, examples):
    example = examples["add_tool"]
    body = {"model": "m", "messages": example["messages"], "tools": example["tools"]}
    with server.http() as http, http.stream("POST", "/api/chat", json=body) as r:
        parts = [ollama.ChatResponse.model_validate_json(line) for line in r.iter_lines() if line]
    calls = [c for p in parts for c in p.message.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("add", {"a": 2, "b": 3})]
    assert not "".join(p.message.content for p in parts)


def test_client_tools_reach_the_template(server, examples):
    example = examples["tool_call"]
    plain = client(server).chat(model="m", messages=example["messages"])
    with_tools = client(server).chat(
        model="m", messages=example["messages"], tools=example["tools"]
    )
    assert with_tools.prompt_eval_count > plain.prompt_eval_count + 50


@pytest.mark.parametrize(
    "fmt", ["json", {"type": "object", "properties": {"city": {"type": "string"}}}]
)
def test_format_json(server, examples, fmt):
    reply = client(server).chat(model="m", messages=examples["json"]["messages"], format=fmt)
    assert json.loads(reply.message.content) == json.loads(examples["json"]["completion"])


def test_options_num_predict_and_stop(server, examples):
    short = client(server).chat(
        model="m", messages=examples["long"]["messages"], options={"num_predict": 3}
    )
    assert short.done_reason == "length" and short.eval_count == 3
    stopped = client(server).chat(
        model="m", messages=examples["short"]["messages"], options={"stop": ["tiny"]}
    )
    assert stopped.message.content == "Hello! I am a " and stopped.done_reason == "stop"


def test_seeded_sampling_repeats(server, examples):
    options = {
        "temperature": 1.5,
        "top_k": 50,
        "top_p": 1.0,
        "seed": 11,
        "repeat_penalty": 1.3,
        "num_predict": 20,
    }
    a, b = (
        client(server).generate(model="m", prompt="Tell me a long story.", options=options)
        for _ in range(2)
    )
    assert a.response == b.response and a.eval_count == b.eval_count <= 20


def test_empty_request_only_loads_the_model(server):
    assert client(server).chat(model="m", messages=[]).done_reason == "load"
    assert client(server).generate(model="m", prompt="").done_reason == "load"


def test_tags_ps_show_version(server, model_dir):
    c = client(server)
    [listed] = c.list().models
    assert listed.model == "test-model"
    assert listed.size == (model_dir / "model.safetensors").stat().st_size
    assert listed.details.family == "qwen3" and listed.details.quantization_level == "F16"
    assert listed.details.parameter_size.endswith("K") and len(listed.digest) == 64
    [running] = c.ps().models
    assert running.model == "test-model" and running.context_length == 4096
    shown = c.show("test-model:latest")
    assert {"completion", "tools", "thinking"} <= set(shown.capabilities)
    assert shown.modelinfo["qwen3.context_length"] == 4096
    assert "<|im_start|>" in shown.template
    assert httpx.get(server.url + "/api/version").json()["version"]


def test_errors_are_ollama_shaped(server, examples):
    with pytest.raises(ollama.ResponseError) as info:
        client(server).show("llama3")
    assert info.value.status_code == 404 and "llama3" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client(server).chat(
            model="m", messages=examples["short"]["messages"], options={"temperature": 9}
        )
    assert info.value.status_code == 400 and "temperature" in info.value.error
    with server.http() as http:
        for method, path, body in [
            ("POST", "/api/generate", {"prompt": "hi", "template": "{{ .Prompt }}"}),
            (
                "POST",
                "/api/chat",
                {"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]},
            ),
            ("POST", "/api/chat", {"messages": "hi"}),
            ("POST", "/api/embed", {"input": []}),
            ("POST", "/api/pull", {"model": "llama3"}),
        ]:
            r = http.request(method, path, json=body)
            assert r.status_code in (400, 404) and set(r.json()) == {"error"}, r.text
            assert r.json()["error"]


def test_bearer_key_as_ollama_clients_send_it(make_server, examples):
    server = make_server(api_key="sk-right")
    reply = client(server, headers={"Authorization": "Bearer sk-right"}).chat(
        model="m", messages=examples["short"]["messages"]
    )
    assert reply.message.content == examples["short"]["completion"]
    with pytest.raises(ollama.ResponseError) as info:
        client(server).list()
    assert info.value.status_code == 401 and "API key" in info.value.error


def test_every_servable_model_is_listed_and_shown(server, aliases):
    c = client(server)
    listed = {m.model: m for m in c.list().models}
    # as /v1/models lists them: demo-copy is the loaded test model's own folder
    assert set(listed) == {"test-model", "llama", "test-org/tiny-llama"}
    assert listed["llama"].details.family == "llama"
    assert [m.model for m in c.ps().models] == ["test-model"]
    shown = c.show("llama")
    assert shown.details.family == "llama" and "completion" in shown.capabilities
    assert shown.modelinfo["general.parameter_count"] > 0


def test_naming_another_model_switches_to_it(server, examples, aliases):
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = client(server).chat(model="demo-copy", messages=examples["short"]["messages"])
            break
        except ollama.ResponseError as exc:
            assert exc.status_code == 503 and "loading" in exc.error, exc
            assert time.monotonic() < deadline, "model never became ready"
            time.sleep(0.1)
    assert reply.model == "demo-copy"
    assert reply.message.content == examples["short"]["completion"]
    assert [m.model for m in client(server).ps().models] == ["demo-copy"]


def test_embed_matches_the_openai_route(server):
    texts = ["Say hello.", "Tell me a long story."]
    reply = client(server).embed(model="m", input=texts)
    openai_vectors = [
        d.embedding for d in server.openai().embeddings.create(model="m", input=texts).data
    ]
    assert reply.model == "test-model" and len(reply.embeddings) == 2
    for ours, theirs in zip(reply.embeddings, openai_vectors):
        assert list(ours) == pytest.approx(theirs)
    assert reply.prompt_eval_count > 4 and reply.total_duration > 0
    [single] = client(server).embed(model="m", input="Say hello.", dimensions=8).embeddings
    assert len(single) == 8
    legacy = client(server).embeddings(model="m", prompt="Say hello.").embedding
    assert list(legacy) == pytest.approx(openai_vectors[0])
