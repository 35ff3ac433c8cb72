"""The startup self-test: tool-call and reasoning formats round-trip through template and parser."""

import json
import shutil

import httpx
import pytest
from mlx_lm.tokenizer_utils import load

from mlxserve.engine import Engine
from mlxserve.selftest import run_selftest

# Qwen's chat template without its tools part (and without tool-call rendering).
NO_TOOLS_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture
def model_copy(model_dir, tmp_path):
    """A copy of the test model whose tokenizer_config.json the test edits."""
    path = tmp_path / "model"
    shutil.copytree(model_dir, path)

    def edit(**changes):
        config_path = path / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config.update(changes)
        config_path.write_text(json.dumps(config))
        return path

    return edit


def _health_of(make_server, model_path) -> dict:
    engine = Engine(str(model_path), warmup=False)
    server = make_server(engine_=engine)
    assert engine.ready.wait(60) and engine.state == "ready", engine.error
    try:
        return httpx.get(server.url + "/healthz").json()
    finally:
        server.__exit__()
        engine.stop()


def test_the_test_model_passes(server, engine):
    body = httpx.get(server.url + "/healthz").json()
    assert body["tool_calling"] == "ok" and body["reasoning"] == "ok"
    assert body["models"][0]["tool_calling"] == "ok" and body["models"][0]["reasoning"] == "ok"
    assert "json_tools" in engine.selftest.tool_calling_detail


def test_a_template_without_tools_is_unsupported(make_server, model_copy):
    body = _health_of(make_server, model_copy(chat_template=NO_TOOLS_TEMPLATE))
    assert body["status"] == "ok"
    assert body["tool_calling"] == "unsupported"
    assert body["reasoning"] == "ok"  # the think markers are in the vocabulary


def test_a_parser_that_cannot_read_its_own_template_is_broken(make_server, model_copy, caplog):
    """qwen3_coder's parser expects <function=...> XML where Qwen3's template writes JSON."""
    caplog.set_level("WARNING", logger="mlxserve.selftest")
    body = _health_of(make_server, model_copy(tool_parser_type="qwen3_coder"))
    assert body["status"] == "ok"  # it still serves: clients learn before a tool call fails
    assert body["tool_calling"] == "broken"
    assert "self-test: tool calling broken: the tool parser read no call" in caplog.text


def test_a_model_without_think_markers_has_no_reasoning(model_copy):
    path = model_copy()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        text = (path / name).read_text()
        (path / name).write_text(text.replace("<think>", "<thinq>").replace("</think>", "</thinq>"))
    result = run_selftest(load(path))
    assert (result.tool_calling, result.reasoning) == ("ok", "unsupported")
    assert result.reasoning_detail == "the model has no think markers"
