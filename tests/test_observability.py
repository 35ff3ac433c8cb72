"""Request ids, the access log, the log formats and /metrics, over real HTTP."""

import json
import logging
import re
import subprocess
import sys
import time

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlxserve.observe import JSONFormatter, RequestIdFilter
from tests.conftest import free_port, sse_events
from tests.test_errors import assert_envelope

HELLO = [{"role": "user", "content": "Say hello."}]


def scrape(server, **kwargs) -> dict:
    """/metrics as {(name, frozenset(labels)): value}."""
    text = httpx.get(server.url + "/metrics", **kwargs).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# ---- request ids ----


def test_request_id_is_echoed_and_is_the_completion_id_suffix(server):
    with server.http() as http:
        r = http.post(
            "/v1/chat/completions", json={"messages": HELLO}, headers={"X-Request-ID": "trace-42.a:b"}
        )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-42.a:b"
    assert r.json()["id"] == "chatcmpl-trace-42.a:b"


def test_request_id_is_generated_when_missing_or_unsafe(server):
    with server.http() as http:
        plain = http.post("/v1/chat/completions", json={"messages": HELLO})
        unsafe = http.post(
            "/v1/chat/completions", json={"messages": HELLO}, headers={"X-Request-ID": "a b\"<x>"}
        )
    for r in (plain, unsafe):
        rid = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{24}", rid)
        assert r.json()["id"] == f"chatcmpl-{rid}"
    assert plain.headers["x-request-id"] != unsafe.headers["x-request-id"]


def test_stream_chunks_and_errors_carry_the_request_id(server):
    with server.http() as http:
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"messages": HELLO, "stream": True},
            headers={"X-Request-ID": "stream-1"},
        ) as r:
            assert r.headers["x-request-id"] == "stream-1"
            chunks = [e for e in sse_events(r) if isinstance(e, dict)]
        assert chunks and {c["id"] for c in chunks} == {"chatcmpl-stream-1"}
        bad = http.post("/v1/chat/completions", json={"messages": []}, headers={"X-Request-ID": "bad-1"})
    assert_envelope(bad, 400)
    assert bad.headers["x-request-id"] == "bad-1"


def test_anthropic_message_id_carries_the_request_id(server):
    client = anthropic.Anthropic(
        base_url=server.url, api_key="k", max_retries=0, default_headers={"X-Request-ID": "ant-7"}
    )
    message = client.messages.create(model="m", max_tokens=50, messages=HELLO)
    assert message.id == "msg_ant-7"


# ---- access log ----


def test_one_access_line_per_request_with_tokens_and_timings(server, caplog):
    caplog.set_level(logging.INFO, logger="mlxserve.access")
    with server.http() as http:
        reply = http.post("/v1/chat/completions", json={"messages": HELLO}, headers={"X-Request-ID": "log-1"})
        http.get("/healthz")
    usage = reply.json()["usage"]
    lines = [r for r in caplog.records if r.name == "mlxserve.access"]
    assert [r.access["path"] for r in lines] == ["/v1/chat/completions", "/healthz"]
    line = lines[0]
    assert line.request_id == "log-1"
    fields = line.access
    assert fields["method"] == "POST" and fields["status"] == 200
    assert fields["prompt_tokens"] == usage["prompt_tokens"]
    assert fields["completion_tokens"] == usage["completion_tokens"]
    assert 0 < fields["ttft_s"] <= fields["duration_s"]
    assert fields["tokens_per_second"] > 0
    text = line.getMessage()
    assert text.startswith("POST /v1/chat/completions 200 ")
    for key in ("prompt_tokens=", "completion_tokens=", "ttft_s=", "tokens_per_second=", "duration_s="):
        assert key in text


def test_log_lines_inside_a_request_carry_its_id(server, caplog):
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(RequestIdFilter())
    with server.http() as http:
        http.post("/v1/chat/completions", json={"messages": HELLO}, headers={"X-Request-ID": "ctx-9"})
    window = [r for r in caplog.records if r.name == "mlxserve.service" and "window" in r.getMessage()]
    assert window and window[-1].request_id == "ctx-9"


def test_json_formatter_writes_one_object_with_the_access_fields():
    record = logging.LogRecord("mlxserve.access", logging.INFO, __file__, 1, "POST %s", ("/x",), None)
    record.request_id = "r1"
    record.access = {"status": 200, "ttft_s": 0.01}
    line = json.loads(JSONFormatter().format(record))
    assert line["message"] == "POST /x" and line["request_id"] == "r1"
    assert line["level"] == "info" and line["status"] == 200 and line["ttft_s"] == 0.01


def test_cli_json_log_format_end_to_end(tmp_path):
    """The real ``mlxserve demo --log-format json``: every stderr line is JSON, one access line per request."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxserve", "demo", "--port", str(port), "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.2)
        r = httpx.post(url + "/v1/chat/completions", json={"messages": HELLO}, headers={"X-Request-ID": "cli-1"})
        assert r.status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "mlxserve.access"]
    chats = [a for a in access if a["path"] == "/v1/chat/completions"]
    assert len(chats) == 1 and chats[0]["request_id"] == "cli-1" and chats[0]["status"] == 200
    assert chats[0]["completion_tokens"] > 0
    assert not any(line["logger"] == "uvicorn.access" for line in lines)  # ours replaces it


# ---- metrics ----


def test_metrics_count_requests_tokens_and_latency(server):
    client = server.openai()
    plain = client.chat.completions.create(model="m", messages=HELLO)
    streamed = client.chat.completions.create(
        model="m", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    usage = [c.usage for c in streamed if c.usage][0]
    with server.http() as http:
        assert http.post("/v1/chat/completions", json={"messages": []}).status_code == 400
        assert http.get("/v1/nowhere").status_code == 404
    m = scrape(server)
    chat_ok = dict(endpoint="/v1/chat/completions", status="200")
    assert value(m, "mlxserve_requests_total", **chat_ok) == 2
    assert value(m, "mlxserve_requests_total", endpoint="/v1/chat/completions", status="400") == 1
    assert value(m, "mlxserve_requests_total", endpoint="unmatched", status="404") == 1
    assert value(m, "mlxserve_errors_total", endpoint="/v1/chat/completions", code="invalid_request") == 1
    assert value(m, "mlxserve_tokens_generated_total") == plain.usage.completion_tokens + usage.completion_tokens
    assert value(m, "mlxserve_prompt_tokens_total") == plain.usage.prompt_tokens + usage.prompt_tokens
    assert value(m, "mlxserve_request_latency_seconds_count", endpoint="/v1/chat/completions") == 3
    assert value(m, "mlxserve_time_to_first_token_seconds_count", endpoint="/v1/chat/completions") == 2
    assert value(m, "mlxserve_tokens_per_second") > 0
    assert value(m, "mlxserve_active_requests") == 0 and value(m, "mlxserve_queued_requests") == 0
    assert value(m, "mlxserve_model_weights_bytes", model="test-model") > 100_000
    assert value(m, "mlxserve_mlx_memory_bytes") > 0


def test_metrics_cover_every_protocol(server):
    with server.http() as http:
        a = http.post("/v1/messages", json={"model": "m", "max_tokens": 50, "messages": HELLO}).json()
        o = http.post("/api/chat", json={"model": "m", "stream": False, "messages": HELLO}).json()
        e = http.post("/v1/embeddings", json={"input": "hello"}).json()
        bad = http.post("/api/chat", json={"model": "m", "messages": "nope"})
    assert bad.status_code == 400
    m = scrape(server)
    assert value(m, "mlxserve_requests_total", endpoint="/v1/messages", status="200") == 1
    assert value(m, "mlxserve_requests_total", endpoint="/api/chat", status="200") == 1
    assert value(m, "mlxserve_errors_total", endpoint="/api/chat", code="invalid_request") == 1
    generated = a["usage"]["output_tokens"] + o["eval_count"]
    assert value(m, "mlxserve_tokens_generated_total") == generated
    prompt = a["usage"]["input_tokens"] + o["prompt_eval_count"] + e["usage"]["prompt_tokens"]
    assert value(m, "mlxserve_prompt_tokens_total") == prompt


def test_prompt_cache_hits_are_counted(server, examples):
    client = server.openai()
    first = examples["tool_call"]["messages"]
    client.chat.completions.create(model="m", messages=first, max_tokens=5)
    server.wait_idle()
    before = value(scrape(server), "mlxserve_prompt_cache_tokens_total")
    turn = client.chat.completions.create(
        model="m", messages=examples["tool_result"]["messages"], max_tokens=5
    )
    cached = turn.usage.prompt_tokens_details.cached_tokens
    assert cached > 0
    m = scrape(server)
    assert value(m, "mlxserve_prompt_cache_tokens_total") - before == cached
    assert value(m, "mlxserve_prompt_cache_hits_total") >= 1


def test_metrics_stay_open_with_a_key_unless_protected(make_server):
    open_ = make_server(api_key="k1")
    assert httpx.get(open_.url + "/metrics").status_code == 200
    locked = make_server(api_key="k1", protect_metrics=True)
    assert_envelope(httpx.get(locked.url + "/metrics"), 401, code="invalid_api_key")
    r = httpx.get(locked.url + "/metrics", headers={"Authorization": "Bearer k1"})
    assert r.status_code == 200 and "mlxserve_requests_total" in r.text
    assert r.headers["content-type"].startswith("text/plain")


# ---- the API description ----


def test_openapi_documents_every_route_with_its_models_and_errors(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages",
                 "/v1/responses", "/api/chat", "/api/generate", "/healthz", "/metrics"):
        assert path in paths, path
    for path, operations in paths.items():
        for method, op in operations.items():
            responses = op["responses"]
            assert "422" not in responses, (method, path)  # bad input is a 400 here
            assert "200" in responses and "400" in responses and "500" in responses
            if method == "post":
                assert "requestBody" in op, (method, path)
            error = responses["400"]["content"]["application/json"]["schema"]["$ref"]
            expected = {"/v1/messages": "Anthropic", "/api/": "Ollama"}
            prefix = next((v for k, v in expected.items() if path.startswith(k)), "")
            assert error.endswith(f"/{prefix}ErrorResponse"), (path, error)
    chat = paths["/v1/chat/completions"]["post"]
    assert chat["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletion"
    )
    assert httpx.get(server.url + "/docs").status_code == 200
