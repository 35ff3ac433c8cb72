"""Every error path answers with the OpenAI envelope, never a crash or a 422."""

import socket

import pytest


def assert_envelope(r, status, code=None, param=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


GOOD = [{"role": "user", "content": "Say hello."}]


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, None),
        ({"messages": GOOD, "n": 2}, "n"),
        ({"messages": GOOD, "temperature": 3}, "temperature"),
        ({"messages": GOOD, "temperature": "hot"}, "temperature"),
        ({"messages": GOOD, "max_tokens": 0}, "max_tokens"),
        ({"messages": GOOD, "max_tokens": -5}, "max_tokens"),
        ({"messages": GOOD, "top_p": 1.5}, "top_p"),
        ({"messages": GOOD, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": GOOD, "stop": [""]}, "stop"),
        ({"messages": GOOD, "top_logprobs": 2}, None),
        ({"messages": GOOD, "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
        ({"messages": GOOD, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"messages": GOOD, "logit_bias": {"5": 500}}, "logit_bias"),
        ({"messages": GOOD, "stream": "yes please"}, "stream"),
    ],
)
def test_invalid_chat_bodies_are_400(server, body, param):
    with server.http() as http:
        r = http.post("/v1/chat/completions", json=body)
    err = assert_envelope(r, 400)
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param


def test_image_part_names_the_problem(server):
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    with server.http() as http:
        err = assert_envelope(http.post("/v1/chat/completions", json=body), 400)
    assert "image_url" in err["message"]


def test_bad_json_is_400(server):
    with server.http() as http:
        r = http.post(
            "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
        )
    assert_envelope(r, 400, code="invalid_json")


def test_non_object_json_is_400(server):
    with server.http() as http:
        assert_envelope(http.post("/v1/chat/completions", json=[1, 2]), 400)


def test_unknown_route_is_404(server):
    with server.http() as http:
        err = assert_envelope(http.post("/v1/nothing-here", json={}), 404, code="not_found")
        assert "/v1/nothing-here" in err["message"]
        assert_envelope(http.get("/nope"), 404)


def test_wrong_method_is_405(server):
    with server.http() as http:
        assert_envelope(http.get("/v1/chat/completions"), 405, code="method_not_allowed")


def test_declared_oversized_body_is_413(make_server):
    server = make_server(max_body_bytes=2048)
    with server.http() as http:
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 5000}]})
    assert_envelope(r, 413, code="request_too_large")


def test_streamed_oversized_body_is_413(make_server):
    """A chunked body with no Content-Length is cut off at the limit too."""
    server = make_server(max_body_bytes=2048)

    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    with server.http() as http:
        r = http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_envelope(r, 413, code="request_too_large")


def test_bad_completion_prompts_are_400(server):
    with server.http() as http:
        assert_envelope(http.post("/v1/completions", json={"prompt": ""}), 400, param="prompt")
        assert_envelope(http.post("/v1/completions", json={"prompt": ["a", "b"]}), 400, param="prompt")
        assert_envelope(http.post("/v1/completions", json={"prompt": [10**9]}), 400, param="prompt")
        assert_envelope(http.post("/v1/completions", json={}), 400, param="prompt")


def test_completion_prompt_too_long_is_context_length_exceeded(make_server):
    server = make_server(max_context_tokens=64)
    with server.http() as http:
        r = http.post("/v1/completions", json={"prompt": "word " * 100, "max_tokens": 5})
    err = assert_envelope(r, 400, code="context_length_exceeded", param="prompt")
    assert err["message"].startswith("This model's maximum context length is 64 tokens.")


def test_template_rejection_is_400(make_server, model_dir, tmp_path):
    """Real templates raise on conversations they cannot render (Qwen3: no user query)."""
    import json
    import shutil

    from mlxserve.engine import Engine

    model = tmp_path / "strict-template"
    shutil.copytree(model_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{%- if messages[-1].role == 'system' %}"
        "{{- raise_exception('No user query found in messages.') }}{%- endif %}"
        + config["chat_template"]
    )
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    engine = Engine(str(model))
    server = make_server(engine_=engine)
    assert engine.ready.wait(60) and engine.state == "ready", engine.error
    with server.http() as http:
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "only me"}]})
        err = assert_envelope(r, 400, param="messages")
        assert "No user query found in messages." in err["message"]
        assert http.post("/v1/chat/completions", json={"messages": GOOD, "max_tokens": 2}).status_code == 200
    engine.stop()


def test_garbage_over_a_raw_socket_does_not_kill_the_server(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        s.settimeout(2)
        try:
            s.recv(1024)
        except OSError:
            pass
    with server.http() as http:
        assert http.get("/healthz").status_code == 200


def test_logit_bias_outside_the_vocabulary_is_400(server, engine):
    body = {"messages": GOOD, "logit_bias": {str(engine.vocab_size + 5): 10}}
    with server.http() as http:
        assert_envelope(http.post("/v1/chat/completions", json=body), 400, param="logit_bias")


def test_error_after_the_stream_started_is_sent_in_band(make_server, model_dir, examples):
    """The engine stops mid-stream: the client gets data: {"error": ...} then [DONE]."""
    import json

    from mlxserve.engine import Engine

    engine = Engine(str(model_dir))
    engine.start()
    assert engine.ready.wait(60)
    server = make_server(engine_=engine)
    body = {"messages": examples["long"]["messages"], "max_tokens": 2000, "stream": True}
    lines = []
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if len(lines) == 10:
                engine.stop()
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])
    assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
    assert "shutting down" in error["error"]["message"]
    server.wait_idle()
