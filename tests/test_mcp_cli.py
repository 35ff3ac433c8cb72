"""mcp-cli, the real client, against the real server, with a real stdio MCP server.

mcp-cli lives in its own virtual environment (``make install`` builds
``.venv-mcp-cli``). It is configured by ``mlxserve integrate mcp-cli --write``
and driven in chat mode with piped stdin, as its ``cmd --prompt`` mode is broken
in 0.20.1. It exits 0 even on errors, so the tests read its output and the
requests the server received.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import MODEL_NAME, LiveServer, free_port
from mlxserve import cli
from mlxserve.app import create_app
from mlxserve.config import DEMO_MODEL_PATH, Settings

ROOT = Path(__file__).resolve().parent.parent
MCP_CLI_BIN = ROOT / ".venv-mcp-cli" / "bin"
CALC_SERVER = Path(__file__).resolve().parent / "clients" / "calc_server.py"
QUESTION = "What is 2+3? Use the add tool."
KEY = "sk-mcp-e2e"


class RecordBodies:
    """ASGI middleware keeping each chat completion request's JSON body."""

    def __init__(self, app, bodies: list):
        self.app, self.bodies = app, bodies

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        chunks = []

        async def recording_receive():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append(json.loads(b"".join(chunks)))
            return message

        return await self.app(scope, recording_receive, send)


@pytest.fixture
def recorded_server(engine):
    """Start a live server (with the given settings) that records chat request bodies."""
    servers = []

    def start(**overrides):
        settings = Settings(model=str(DEMO_MODEL_PATH), served_model_name=MODEL_NAME, **overrides)
        app = create_app(settings, engine=engine)
        bodies = []
        app.add_middleware(RecordBodies, bodies=bodies)
        servers.append(LiveServer(app).__enter__())
        return servers[-1], bodies

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A throwaway HOME (mcp-cli writes preferences, sessions and memories there),
    with mcp-cli on PATH so `integrate --write` finds chuk-llm's packaged providers."""
    assert (MCP_CLI_BIN / "mcp-cli").exists(), "run: make install (builds .venv-mcp-cli)"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", f"{MCP_CLI_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CHUK_LLM_CONFIG", raising=False)
    monkeypatch.delenv("MLXSERVE_API_KEY", raising=False)
    return tmp_path / "home"


def run_mcp_cli(home: Path, prompt: str, **env) -> str:
    """One question in mcp-cli's chat mode; returns what it printed."""
    work = home.parent
    # mcp-cli's token counter loads tiktoken, which downloads its BPE files at
    # first use; offline it crashes. The counter treats an ImportError as absent.
    shim = work / "no_tiktoken" / "tiktoken"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("tiktoken needs the network")\n')
    servers = work / "mcp_servers.json"
    calc = {"command": str(MCP_CLI_BIN / "python"), "args": [str(CALC_SERVER)]}
    servers.write_text(json.dumps({"mcpServers": {"calc": calc}}))
    done = subprocess.run(
        [str(MCP_CLI_BIN / "mcp-cli"), "chat", "--config-file", str(servers), "--server", "calc",
         "--provider", "mlxserve", "--model", MODEL_NAME, "--confirm-mode", "never"],
        input=f"{prompt}\n/exit\n",
        capture_output=True,
        text=True,
        timeout=240,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(shim.parent), **env},
    )
    return done.stdout + done.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("api_key", [None, KEY], ids=["no-key", "api-key"])
def test_mcp_cli_calls_the_mcp_tool_and_prints_the_answer(recorded_server, home, api_key, capsys):
    server, bodies = recorded_server(api_key=api_key)
    assert cli.main(["integrate", "mcp-cli", "--write", "--url", server.url]) == 0
    config = yaml.safe_load((home / ".chuk_llm" / "config.yaml").read_text())
    assert "openai" in config and "ollama" in config  # chuk-llm's packaged providers kept
    assert config["mlxserve"]["api_base"] == server.url + "/v1"
    assert KEY not in json.dumps(config)  # the key stays in the environment

    out = run_mcp_cli(home, QUESTION, **({"MLXSERVE_API_KEY": KEY} if api_key else {}))

    assert "add completed" in out, out
    assert "2 + 3 = 5." in out, out
    assert "Error:" not in out and "Streaming error" not in out and "✗" not in out, out
    first, second = bodies  # the question, then the tool result
    assert first["stream"] is True
    assert {t["function"]["name"] for t in first["tools"]} >= {"add", "get_time"}
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "add"
    assert json.loads(call["function"]["arguments"]) == {"a": 2, "b": 3}
    result = second["messages"][-1]
    assert result["role"] == "tool" and "'text': '5'" in result["content"]


def test_integrate_prints_the_provider_for_the_running_server(server, home, capsys):
    assert cli.main(["integrate", "mcp-cli", "--url", server.url]) == 0
    out = capsys.readouterr().out
    entry = yaml.safe_load(out.split("\n\n")[0])["mlxserve"]
    assert entry["api_base"] == server.url + "/v1"
    assert entry["default_model"] == MODEL_NAME
    assert "api_key_env" not in entry  # an open server: no key to export
    assert f"mcp-cli chat --provider mlxserve --model {MODEL_NAME}" in out
    assert not (home / ".chuk_llm").exists()  # printing writes nothing


def test_integrate_names_the_key_variable_for_a_locked_server(make_server, home, capsys):
    server = make_server(api_key=KEY)
    assert cli.main(["integrate", "mcp-cli", "--url", server.url]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out.split("\n\n")[0])["mlxserve"]["api_key_env"] == "MLXSERVE_API_KEY"
    assert "export MLXSERVE_API_KEY=" in out and KEY not in out


def test_integrate_write_keeps_the_existing_providers_and_backs_them_up(server, home, monkeypatch):
    path = home / "custom.yaml"
    home.mkdir()
    original = "mine:\n  client_class: x:Y\n  default_model: m\nmlxserve:\n  default_model: old\n"
    path.write_text(original)
    monkeypatch.setenv("CHUK_LLM_CONFIG", str(path))
    assert cli.main(["integrate", "mcp-cli", "--write", "--url", server.url]) == 0
    config = yaml.safe_load(path.read_text())
    assert config["mine"] == {"client_class": "x:Y", "default_model": "m"}
    assert config["mlxserve"]["default_model"] == MODEL_NAME
    backups = list(home.glob("custom.yaml.bak-*"))
    assert [b.read_text() for b in backups] == [original]


def test_integrate_refuses_a_file_that_is_not_a_provider_mapping(server, home, monkeypatch, capsys):
    path = home / "config.yaml"
    home.mkdir()
    path.write_text("- just\n- a list\n")
    monkeypatch.setenv("CHUK_LLM_CONFIG", str(path))
    assert cli.main(["integrate", "mcp-cli", "--write", "--url", server.url]) == 1
    assert "not a mapping of providers" in capsys.readouterr().err
    assert path.read_text() == "- just\n- a list\n"


def test_integrate_without_a_server_says_how_to_start_one(home, capsys):
    assert cli.main(["integrate", "mcp-cli", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "start it with `mlxserve serve`" in capsys.readouterr().err
