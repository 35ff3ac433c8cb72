"""Shared fixtures: the real engine on the bundled test model, live servers over real HTTP."""

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import mlx.core as mx
import openai
import pytest
import uvicorn
from mlx_lm import stream_generate

from mlxserve.app import create_app
from mlxserve.config import DEMO_MODEL_PATH, Settings
from mlxserve.engine import Engine

MODEL_NAME = "test-model"

# Tests see neither the developer's own settings nor the network.
for _name in [n for n in os.environ if n.startswith("MLXSERVE_")]:
    del os.environ[_name]
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="mlxserve-test-config-")
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The trained test model (built by scripts/make_test_model.py, shipped as the demo model)."""
    assert (DEMO_MODEL_PATH / "model.safetensors").exists(), "run: make test-model"
    return DEMO_MODEL_PATH


@pytest.fixture(scope="session")
def examples(model_dir) -> dict:
    """The prompts the test model was trained on, by name, with their exact answers."""
    return {e["name"]: e for e in json.loads((model_dir / "examples.json").read_text())}


@pytest.fixture(scope="session")
def engine(model_dir):
    """One real MLX engine, loaded once and shared by every server in the session."""
    eng = Engine(str(model_dir))
    eng.start()
    assert eng.ready.wait(300) and eng.state == "ready", eng.error
    yield eng
    eng.stop()


@pytest.fixture
def held_engine(model_dir):
    """A real engine, not yet shared, whose load waits for the returned event:
    ``(engine, release)``. Stopped after the test."""
    release = threading.Event()
    eng = Engine(str(model_dir))
    real_load = eng._load
    eng._load = lambda: (release.wait(30), real_load())
    yield eng, release
    release.set()
    eng.ready.wait(60)
    eng.stop()


class LiveServer:
    """A real uvicorn server on a free port, in a thread of the test process."""

    def __init__(self, app):
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def service(self):
        return self.app.state.service

    def openai(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="sk-local", max_retries=0, **kwargs)

    def http(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def wait_idle(self, timeout=5.0) -> float:
        """Wait until no request holds or waits for a slot; returns the seconds it took."""
        t0 = time.monotonic()
        while True:
            health = httpx.get(self.url + "/healthz").json()
            engines = self.service.models.engines.values()
            running = sum(e.active_runs for e in engines)
            if health["active_requests"] == 0 and health["queued_requests"] == 0 and running == 0:
                return time.monotonic() - t0
            assert time.monotonic() - t0 < timeout, f"not idle after {timeout}s: {health}"
            time.sleep(0.01)


@pytest.fixture
def make_server(engine):
    """Start a live server with the given settings (over the shared engine)."""
    servers = []

    def start(engine_=None, **overrides) -> LiveServer:
        values = {"model": str(DEMO_MODEL_PATH), "served_model_name": MODEL_NAME, **overrides}
        settings = Settings(**values)
        server = LiveServer(create_app(settings, engine=engine_ or engine)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture
def server(make_server) -> LiveServer:
    """A live server with default settings."""
    return make_server()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sse_events(response: httpx.Response) -> list:
    """Parse an SSE body into data payloads (JSON decoded, '[DONE]' kept) and ':' comments."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
        elif line.startswith(":"):
            events.append(line)
    return events


def mlx_lm_answer(eng: Engine, prompt: list[int], max_tokens: int, **kwargs) -> list:
    """mlx-lm's own ``stream_generate`` of ``prompt`` on ``eng``'s model (call it on the
    engine's thread): each token's text and logprob."""
    responses = stream_generate(
        eng.model, eng.tokenizer, mx.array(prompt), max_tokens=max_tokens, **kwargs
    )
    return [(r.text, r.logprobs[r.token].item()) for r in responses]


def assert_mlx_lm_answer(parts: list, expected: list) -> None:
    """The engine's deltas (asked with ``top_logprobs=0``) give ``expected``, mlx-lm's
    answer: the same text, and the same logprob for every token."""
    logprobs = [lp for d in parts for lp in d.logprobs]
    assert "".join(d.text for d in parts) == "".join(text for text, _ in expected)
    assert len(logprobs) == len(expected)
    for got, (_, want) in zip(logprobs, expected):
        assert abs(got.logprob - want) < 1e-4
