"""Safe local defaults over real HTTP: DNS-rebinding guard, CORS, rate limit, exposure warning."""

import logging

import httpx
import pytest

from mlxserve.app import create_app
from mlxserve.cli import main
from mlxserve.config import DEMO_MODEL_PATH, Settings
from mlxserve.guard import RateLimit, host_name, is_loopback
from tests.test_errors import assert_envelope
from tests.test_observability import scrape, value

HELLO = [{"role": "user", "content": "Say hello."}]
CHAT = {"messages": HELLO, "max_tokens": 5}
EVIL = "http://evil.example"


# ---- DNS rebinding ----


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "10.0.0.5"])
def test_foreign_host_is_refused_on_loopback(server, host):
    with server.http() as http:
        r = http.post("/v1/chat/completions", json=CHAT, headers={"Host": host})
    err = assert_envelope(r, 403, code="host_not_allowed")
    assert host in err["message"]
    assert value(scrape(server), "mlxserve_tokens_generated_total") == 0


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:9", "[::1]:8080", "LOCALHOST"])
def test_local_hosts_are_served(server, host):
    with server.http() as http:
        assert http.get("/v1/models", headers={"Host": host}).status_code == 200


def test_allowed_host_extends_the_list(make_server):
    server = make_server(allowed_host="my-mac.local, box.lan")
    with server.http() as http:
        assert http.get("/v1/models", headers={"Host": "my-mac.local:8080"}).status_code == 200
        assert http.get("/v1/models", headers={"Host": "box.lan"}).status_code == 200
        assert http.get("/v1/models", headers={"Host": "evil.example"}).status_code == 403


def test_host_guard_applies_only_when_bound_to_loopback(make_server):
    # Bound wider, any name may reach the server: the API key is the guard there.
    server = make_server(host="0.0.0.0", api_key="k")
    r = httpx.get(server.url + "/v1/models", headers={"Host": "my-server.lan", "Authorization": "Bearer k"})
    assert r.status_code == 200


def test_anthropic_and_ollama_paths_refuse_in_their_own_shapes(server):
    with server.http() as http:
        a = http.post("/v1/messages", json={}, headers={"Host": "evil.example"})
        o = http.post("/api/chat", json={}, headers={"Host": "evil.example"})
    assert a.status_code == 403 and a.json()["error"]["type"] == "permission_error"
    assert o.status_code == 403 and "not allowed" in o.json()["error"]


def test_loopback_and_host_names():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.2", "::", "example.com"]))
    assert [host_name(h) for h in ["A.b:80", "[::1]:8080", "::1", "x"]] == ["a.b", "::1", "::1", "x"]


# ---- exposure warning ----


def test_binding_beyond_loopback_without_a_key_warns_loudly(caplog):
    caplog.set_level(logging.WARNING, logger="mlxserve.app")
    create_app(Settings(model=str(DEMO_MODEL_PATH), host="0.0.0.0"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no API key" in warnings[0] and "0.0.0.0" in warnings[0]
    caplog.clear()
    create_app(Settings(model=str(DEMO_MODEL_PATH), host="0.0.0.0", api_key="k"))
    create_app(Settings(model=str(DEMO_MODEL_PATH), host="127.0.0.1"))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# ---- origins (CORS) ----


def test_cross_site_request_is_refused_before_any_generation(server):
    # What a page on another site can send without a preflight: a text/plain POST.
    with server.http() as http:
        r = http.post(
            "/v1/chat/completions",
            content='{"messages": [{"role": "user", "content": "Say hello."}]}',
            headers={"Origin": EVIL, "Content-Type": "text/plain"},
        )
        preflight = http.options(
            "/v1/chat/completions",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        )
    assert_envelope(r, 403, code="origin_not_allowed")
    assert "access-control-allow-origin" not in r.headers
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    assert value(scrape(server), "mlxserve_tokens_generated_total") == 0


def test_same_origin_page_is_served(server):
    with server.http() as http:
        r = http.post("/v1/chat/completions", json=CHAT, headers={"Origin": server.url})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_listed_origin_gets_cors_headers_never_credentials(make_server):
    page = "https://app.example:3000"
    server = make_server(cors_origin=f"{page}, http://other.example", api_key="k")
    with server.http() as http:
        preflight = http.options(
            "/v1/chat/completions",
            headers={
                "Origin": page,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        r = http.post(
            "/v1/chat/completions", json=CHAT, headers={"Origin": page, "Authorization": "Bearer k"}
        )
        refused = http.post("/v1/chat/completions", json=CHAT, headers={"Origin": EVIL})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == page
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == page
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    for resp in (preflight, r):
        assert "access-control-allow-credentials" not in resp.headers
    assert refused.status_code == 403


def test_star_origin_answers_star_without_credentials(make_server):
    server = make_server(cors_origin="*")
    with server.http() as http:
        r = http.get("/v1/models", headers={"Origin": EVIL})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers


# ---- rate limit ----


def test_rate_limit_answers_429_with_retry_after(make_server):
    server = make_server(rate_limit="3/min")
    with server.http() as http:
        codes = [http.get("/v1/models").status_code for _ in range(3)]
        over = http.post("/v1/chat/completions", json=CHAT)
        # Liveness, metrics and the page are never limited.
        assert http.get("/healthz").status_code == 200
        assert http.get("/metrics").status_code == 200
        assert http.get("/").status_code == 200
        anthropic = http.post("/v1/messages", json={})
    assert codes == [200, 200, 200]
    err = assert_envelope(over, 429, code="rate_limit_exceeded")
    assert "3 requests per 60 s" in err["message"]
    assert 1 <= int(over.headers["retry-after"]) <= 20
    assert anthropic.status_code == 429 and anthropic.json()["error"]["type"] == "rate_limit_error"
    m = scrape(server)
    assert value(m, "mlxserve_errors_total", endpoint="/v1/chat/completions", code="rate_limit_exceeded") == 1


def test_rate_limit_is_per_client_key(make_server):
    server = make_server(rate_limit="2/min", api_key="a,b")
    with server.http() as http:
        a = [http.get("/v1/models", headers={"Authorization": "Bearer a"}).status_code for _ in range(3)]
        b = [http.get("/v1/models", headers={"Authorization": "Bearer b"}).status_code for _ in range(2)]
    assert a == [200, 200, 429] and b == [200, 200]


def test_bucket_refills_evenly():
    now = [0.0]
    limit = RateLimit(None, requests=2, period=60, open_paths=set(), clock=lambda: now[0])
    assert limit.take("c") == 0 and limit.take("c") == 0
    assert limit.take("c") == pytest.approx(30)
    now[0] = 29.0
    assert limit.take("c") == pytest.approx(1)
    now[0] = 30.0
    assert limit.take("c") == 0
    assert limit.take("other") == 0


@pytest.mark.parametrize("bad", ["10", "x/min", "0/min", "5/week", "1.5/s"])
def test_bad_rate_limit_stops_the_cli(bad, capsys):
    assert main(["serve", f"--rate-limit={bad}"]) == 2
    assert "rate limit" in capsys.readouterr().err


def test_switch_flags_parse_as_switches():
    from mlxserve.cli import build_parser, load_settings

    assert load_settings(build_parser().parse_args(["serve", "--protect-metrics"])).protect_metrics
    assert not load_settings(build_parser().parse_args(["serve", "--no-protect-metrics"])).protect_metrics


def test_service_unit_passes_switches_as_switches():
    from mlxserve.service_mgr.spec import serve_flags

    assert serve_flags({"protect_metrics": True, "rate_limit": "5/min"}) == [
        "--protect-metrics",
        "--rate-limit",
        "5/min",
    ]
    assert serve_flags({"protect_metrics": False}) == ["--no-protect-metrics"]
