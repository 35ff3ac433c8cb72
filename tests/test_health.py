"""/healthz while the model loads and once it is ready; API routes answer 503 meanwhile."""


import httpx

from mlxserve.engine import Engine


def test_health_when_ready(server):
    for path in ("/healthz", "/health"):
        r = httpx.get(server.url + path)
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok"
        assert body["model"] == "test-model"
        assert body["active_requests"] == 0 and body["queued_requests"] == 0
        assert body["max_tokens"] == 4096 and body["max_context"] == 0 and body["max_requests"] == 1
        assert body["uptime_seconds"] >= 0 and body["version"]


def test_loading_then_ready(make_server, held_engine, examples):
    """A real engine held before its load: 503 loading, then it serves."""
    engine, release = held_engine
    server = make_server(engine_=engine)
    try:
        r = httpx.get(server.url + "/healthz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert r.headers["Retry-After"]
        r = httpx.post(server.url + "/v1/chat/completions", json={"messages": examples["short"]["messages"]})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "model_loading"
        assert int(r.headers["Retry-After"]) >= 1
    finally:
        release.set()
    assert engine.ready.wait(60) and engine.state == "ready"
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": examples["short"]["messages"]}, timeout=30)
    assert r.json()["choices"][0]["message"]["content"] == examples["short"]["completion"]


def test_failed_load_is_reported(make_server, tmp_path):
    engine = Engine(str(tmp_path / "missing-model"))
    server = make_server(engine_=engine)
    assert engine.ready.wait(30) and engine.state == "failed"
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 503 and r.json()["status"] == "failed"
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_load_failed"
