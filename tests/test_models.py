"""Several models: discovery (aliases, Hugging Face cache), resolution, switching, unloading."""

import io
import json
import shutil
import threading
import time

import httpx
import huggingface_hub.constants
import mlx.core as mx
import openai
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models import llama
from mlx_lm.utils import load

from mlxserve.cli import main
from mlxserve.config import DEMO_MODEL_PATH
from mlxserve import engine as engine_module
from mlxserve.models import describe, find_model, read_aliases
from tests.conftest import free_port
from tests.test_errors import assert_envelope

HELLO = [{"role": "user", "content": "Say hello."}]
STORY = [{"role": "user", "content": "Tell me a long story."}]

LLAMA = {
    "model_type": "llama",
    "hidden_size": 96,
    "num_hidden_layers": 2,
    "intermediate_size": 192,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
}


def make_llama(out, vocab_size):
    """A second, different model: a random-weight Llama with the test model's tokenizer."""
    out.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO_MODEL_PATH / name, out / name)
    config = {**LLAMA, "vocab_size": vocab_size}
    (out / "config.json").write_text(json.dumps(config))
    mx.random.seed(3)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return out


@pytest.fixture(scope="module")
def vocab_size():
    return json.loads((DEMO_MODEL_PATH / "config.json").read_text())["vocab_size"]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, vocab_size):
    """A Hugging Face cache holding one MLX model (the Llama) and one non-MLX repo."""
    cache = tmp_path / "hub"
    repo = cache / "models--test-org--tiny-llama"
    make_llama(repo / "snapshots" / "abc123", vocab_size)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    other = cache / "models--test-org--not-mlx" / "snapshots" / "def456"
    other.mkdir(parents=True)
    (other / "pytorch_model.bin").write_bytes(b"\0" * 10)
    (other / "config.json").write_text("{}")
    (other.parent.parent / "refs").mkdir()
    (other.parent.parent / "refs" / "main").write_text("def456")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def aliases(tmp_path, monkeypatch, hf_cache):
    """models.yaml with an alias for the cached Llama and one for the test model's folder."""
    config = tmp_path / "config"
    (config / "mlxserve").mkdir(parents=True)
    (config / "mlxserve" / "models.yaml").write_text(
        f"llama: test-org/tiny-llama\ndemo-copy: {DEMO_MODEL_PATH}\n"
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return config


def wait_until_served(server, model, timeout=60):
    """Poll like a client honouring Retry-After, until ``model`` answers."""
    client = server.openai()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.chat.completions.create(model=model, messages=HELLO, max_tokens=3)
        except openai.InternalServerError as exc:
            assert exc.status_code == 503 and exc.code == "model_loading", exc
            assert time.monotonic() < deadline, "model never became ready"
            time.sleep(0.1)


def test_aliases_file_and_cache_discovery(aliases):
    assert read_aliases() == {"llama": "test-org/tiny-llama", "demo-copy": str(DEMO_MODEL_PATH)}
    assert find_model("llama").architecture == "llama"
    cached = find_model("test-org/tiny-llama")
    assert cached.source == "hf-cache" and cached.size_bytes > 0
    assert find_model("test-org/not-mlx") is None
    assert find_model("nothing-here") is None


def test_models_list_shows_loaded_and_available_with_details(server, aliases):
    data = server.openai().models.list().data
    by_id = {m.id: m.model_extra["mlxserve"] for m in data}
    assert by_id["test-model"]["loaded"] is True
    assert by_id["test-model"]["architecture"] == "qwen3"
    assert by_id["test-model"]["context_length"] == 4096
    assert by_id["llama"] == {
        **by_id["llama"],
        "loaded": False,
        "source": "alias",
        "architecture": "llama",
        "context_length": 1024,
    }
    assert by_id["test-org/tiny-llama"]["source"] == "hf-cache"
    assert by_id["test-org/tiny-llama"]["size_bytes"] > 100_000
    assert "test-org/not-mlx" not in by_id
    assert server.openai().models.retrieve("llama").id == "llama"


def test_strict_policy_answers_404_listing_the_names(make_server, aliases):
    server = make_server(model_policy="strict")
    with server.http() as http:
        r = http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    err = assert_envelope(r, 404, code="model_not_found", param="model")
    for name in ("test-model", "llama", "test-org/tiny-llama"):
        assert name in err["message"]


def test_lenient_policy_answers_any_name_with_the_loaded_model(server, examples, aliases):
    reply = server.openai().chat.completions.create(model="gpt-4o", messages=HELLO)
    assert reply.model == "test-model"
    assert reply.choices[0].message.content == examples["short"]["completion"]


def test_switching_loads_the_other_model_and_unloads_the_idle_one(server, examples, aliases):
    with server.http() as http:
        r = http.post("/v1/chat/completions", json={"model": "llama", "messages": HELLO})
    err = assert_envelope(r, 503, code="model_loading")
    assert int(r.headers["retry-after"]) >= 1
    reply = wait_until_served(server, "llama")
    assert reply.model == "llama"
    # One resident model by default: the test model made room.
    assert list(server.service.models.engines) == ["llama"]
    health = httpx.get(server.url + "/healthz").json()
    assert [(m["id"], m["status"]) for m in health["models"]] == [("llama", "ok")]
    # And back: the test model reloads by its name and answers as trained.
    back = wait_until_served(server, "test-model")
    reply = server.openai().chat.completions.create(model="test-model", messages=HELLO)
    assert back.model == "test-model"
    assert reply.choices[0].message.content == examples["short"]["completion"]


def test_switch_waits_for_the_running_generation(server, examples, aliases):
    """A request for another model never cuts the resident model's generation short."""
    story = {}

    def read_story():
        stream = server.openai().chat.completions.create(model="test-model", messages=STORY, stream=True)
        chunks = list(stream)
        story["text"] = "".join(c.choices[0].delta.content or "" for c in chunks)
        story["finish"] = chunks[-1].choices[0].finish_reason

    reader = threading.Thread(target=read_story)
    reader.start()
    deadline = time.monotonic() + 10
    while not server.service.models.active["test-model"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with server.http() as http:
        r = http.post("/v1/chat/completions", json={"model": "llama", "messages": HELLO})
        assert_envelope(r, 503, code="model_loading")
        # The resident model keeps serving others meanwhile (they wait at the gate, then run).
        assert "test-model" in server.service.models.engines
    reader.join(60)
    assert story["finish"] == "stop"
    assert story["text"] == examples["long"]["completion"]
    assert wait_until_served(server, "llama").model == "llama"


def test_two_resident_models_with_max_loaded_models(make_server, examples, aliases):
    server = make_server(max_loaded_models=2)
    wait_until_served(server, "llama")
    assert set(server.service.models.engines) == {"test-model", "llama"}
    reply = server.openai().chat.completions.create(model="test-model", messages=HELLO)
    assert reply.choices[0].message.content == examples["short"]["completion"]


def test_memory_budget_evicts_even_below_the_count(make_server, aliases):
    server = make_server(max_loaded_models=2, max_models_memory=0.0001)  # ~100 KB
    wait_until_served(server, "llama")
    assert list(server.service.models.engines) == ["llama"]


def test_memory_budget_counts_the_model_the_server_started_with(make_server, aliases):
    """Each model fits the budget alone, both together do not: loading the
    second unloads the first, whose size the server must know without a listing."""
    llama = find_model("llama")
    demo = describe("test-model", DEMO_MODEL_PATH, "local")
    budget_gib = (llama.size_bytes + demo.size_bytes - 1) / 1024**3
    server = make_server(max_loaded_models=2, max_models_memory=budget_gib)
    wait_until_served(server, "llama")
    assert list(server.service.models.engines) == ["llama"]


def test_a_model_still_loading_is_never_unloaded(make_server, aliases, monkeypatch):
    """With room for one model, asking for the old one while the new one loads
    waits (503) instead of cutting the load short, and the server stays responsive."""
    loading = threading.Event()

    def slow_load(path, **kwargs):
        if "tiny-llama" in str(path):
            loading.set()
            time.sleep(1.5)
        return load(path, **kwargs)

    monkeypatch.setattr(engine_module, "load", slow_load)
    server = make_server()
    with server.http() as http:
        assert_envelope(
            http.post("/v1/chat/completions", json={"model": "llama", "messages": HELLO}),
            503,
            code="model_loading",
        )
        assert loading.wait(10)
        started = time.monotonic()
        r = http.post("/v1/chat/completions", json={"model": "test-model", "messages": HELLO})
        assert_envelope(r, 503, code="model_loading")
        assert time.monotonic() - started < 0.5
        llama = server.service.models.engines["llama"]
        assert llama.state == "loading"
    assert wait_until_served(server, "llama").model == "llama"
    assert wait_until_served(server, "test-model").model == "test-model"


def test_delete_unloads_and_frees_memory(make_server, aliases):
    server = make_server(max_loaded_models=2)
    wait_until_served(server, "llama")
    engine = server.service.models.engines["llama"]
    weights = sum(v.nbytes for _, v in tree_flatten(engine.model.parameters()))
    before = mx.get_active_memory()
    with server.http() as http:
        r = http.delete("/v1/models/llama")
        assert r.status_code == 200 and r.json() == {"id": "llama", "object": "model", "deleted": True}
        assert_envelope(http.delete("/v1/models/llama"), 404, code="model_not_found")
    assert "llama" not in server.service.models.engines
    assert engine.model is None and engine.state == "stopped"
    assert before - mx.get_active_memory() >= 0.9 * weights


def test_delete_waits_for_generations_up_to_the_drain_timeout(make_server, aliases):
    """DELETE lets a running generation finish for up to --drain-timeout, then
    unloads anyway: the stream ends with an in-band shutting_down error."""
    server = make_server(max_loaded_models=2, drain_timeout=0.1)
    wait_until_served(server, "llama")
    eos = server.service.models.engines["llama"].tokenizer.eos_token_ids
    stream = server.openai().chat.completions.create(
        model="llama", messages=STORY, max_tokens=1000, stream=True,
        logit_bias={str(t): -100 for t in eos},  # it runs to max_tokens, a second or so
    )
    next(iter(stream))  # generating now
    started = time.monotonic()
    with server.http() as http:
        assert http.delete("/v1/models/llama").status_code == 200
    assert 0.1 <= time.monotonic() - started < 5
    with pytest.raises(openai.APIError, match="shutting down"):
        for _ in stream:
            pass
    assert "llama" not in server.service.models.engines


# ---- the command line: pull, ls, rm, run ----------------------------------------


def test_ls_lists_aliases_and_cached_models(aliases, capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "QUANT", "ARCH", "CONTEXT", "LAST", "USED"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert set(rows) == {"llama", "demo-copy", "test-org/tiny-llama"}
    assert "llama" in rows["test-org/tiny-llama"] and "1024" in rows["test-org/tiny-llama"]
    assert "qwen3" in rows["demo-copy"]


def test_pull_offline_uses_the_cache_and_checks_it_is_mlx(hf_cache, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["pull", "test-org/tiny-llama"]) == 0
    assert "test-org/tiny-llama: ready at" in capsys.readouterr().out
    assert main(["pull", "test-org/not-mlx"]) == 1
    assert "not an MLX model" in capsys.readouterr().err
    assert main(["pull", "test-org/absent"]) == 1
    assert "cannot download test-org/absent" in capsys.readouterr().err


def test_rm_deletes_from_the_cache(hf_cache, capsys):
    assert main(["rm", "test-org/tiny-llama"]) == 0
    assert "deleted test-org/tiny-llama" in capsys.readouterr().out
    assert not (hf_cache / "models--test-org--tiny-llama").exists()
    assert main(["rm", "test-org/tiny-llama"]) == 1
    assert "not in the Hugging Face cache" in capsys.readouterr().err


def test_run_chats_through_a_running_server(server, examples, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Say hello.\n/bye\n"))
    assert main(["run", "test-model", "--url", server.url]) == 0
    assert examples["short"]["completion"] in capsys.readouterr().out


def test_run_loads_the_model_in_process_without_a_server(examples, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Say hello.\n"))
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["run", str(DEMO_MODEL_PATH), "--url", url]) == 0
    out = capsys.readouterr().out
    assert "loading" in out and examples["short"]["completion"] in out
