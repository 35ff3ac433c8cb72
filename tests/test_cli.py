"""The command line: flags from Settings, env vars, and a real server process (drain on SIGTERM)."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from mlxserve.cli import build_parser, load_settings, main, server_config
from mlxserve.config import DEMO_MODEL_NAME, DEMO_MODEL_PATH, Settings
from tests.conftest import free_port


def settings_for(argv):
    return load_settings(build_parser().parse_args(argv))


def test_every_setting_is_a_flag():
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
        assert "MLXSERVE_" + name.upper() in help_text


def test_defaults_are_safe_for_a_local_server():
    s = settings_for(["serve"])
    assert s.host == "127.0.0.1" and s.port == 8080
    assert (s.max_tokens, s.default_max_tokens, s.timeout) == (4096, 512, 300)
    assert (s.max_requests, s.queue_size, s.queue_timeout) == (1, 16, 60)
    assert s.max_context == 0 and s.max_context_tokens is None


def test_the_server_runs_on_uvloop_and_httptools():
    """The event loop and HTTP parser in C: less CPU per streamed token (docs/BENCHMARKS.md)."""
    config = server_config(settings_for(["serve"]), app=None)
    config.load()
    assert config.http_protocol_class.__module__ == "uvicorn.protocols.http.httptools_impl"
    loop = config.get_loop_factory()()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_flags_beat_env_beat_defaults(monkeypatch):
    monkeypatch.setenv("MLXSERVE_PORT", "9001")
    monkeypatch.setenv("MLXSERVE_MAX_CONTEXT", "6")
    s = settings_for(["serve", "--port", "9002"])
    assert s.port == 9002 and s.max_context == 6


def test_demo_serves_the_bundled_model():
    s = settings_for(["demo"])
    assert s.model == str(DEMO_MODEL_PATH) and s.model_name == DEMO_MODEL_NAME
    assert settings_for(["demo", "--served-model-name", "x"]).model_name == "x"


def test_invalid_setting_exits_2(capsys):
    assert main(["serve", "--max-requests", "0"]) == 2
    assert "max_requests" in capsys.readouterr().err


def test_bad_flag_type_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "eighty"])
    assert info.value.code == 2


def wait_ready(url, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


@pytest.fixture
def demo_process():
    """``python -m mlxserve demo`` as a real process on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxserve", "demo", "--port", str(port), "--drain-timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_in_flight_requests_then_exits_0(demo_process, examples, sig):
    proc, url = demo_process
    body = {"messages": examples["long"]["messages"], "max_tokens": 300, "stream": True}
    texts, finish, refused = [], None, False
    with httpx.Client(timeout=60) as client, client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: {") and '"content":"' in line:
                proc.send_signal(sig)  # mid-stream
                break
        for line in lines:
            if not refused and len(texts) == 20:
                # Draining: the stream goes on, but the server takes no new connections.
                time.sleep(0.3)
                try:
                    httpx.get(url + "/healthz", timeout=2)
                except httpx.TransportError:
                    refused = True
            if line == "data: [DONE]":
                break
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                texts.append(choice["delta"].get("content") or "")
                finish = choice["finish_reason"] or finish
    assert finish == "length", "the in-flight stream was cut short"
    assert refused, "a new connection was accepted while draining"
    assert proc.wait(30) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=1)
