"""Single-stream speed: mlx-lm in-process vs mlxserve vs mlx_lm.server, one model, one run.

Each system generates greedily from the same prompt text with the same
``max_tokens``: ``raw`` calls ``mlx_lm.stream_generate`` in this process (the
upper bound); ``mlxserve`` and ``mlx_lm.server`` run as subprocesses and are read
over HTTP streaming from ``/v1/completions`` (raw prompt: the script, not the
server, applies the chat template, if the model has one). All three are started
together and take turns, one request each per round (never two at once), so
that a shared host's drifting speed weighs on each alike; ``--one-at-a-time``
runs them one after another instead, for a model that does not fit in memory
three times. Each system gets one untimed warm-up request, then ``--runs`` timed
ones, all with the same prompt; mlx_lm.server runs with ``--prompt-cache-size 0``
(mlxserve too) so that, like raw, they prefill every request.

Usage (from the repository root):
    python scripts/bench.py [--model PATH_OR_REPO | --random-model {llama-1b,tiny}]
        [--prompt-tokens 128] [--max-tokens 256] [--runs 3]
        [--systems raw,mlxserve,mlx_lm.server] [--one-at-a-time] [--out bench.json]
    python scripts/bench.py {chat,clients,draft,json,kv} [...]
        the serving scenarios of scripts/bench_serving.py, by the same entry point
"""

import argparse
import contextlib
import datetime
import gc
import hashlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm.utils import (  # noqa: E402
    get_total_parameters, load_model, load_tokenizer, quantize_model, save_config, save_model,
)

import mlxserve  # noqa: E402
from mlxserve.engine import (  # noqa: E402
    CUDNN_ATTENTION_VAR, prefer_mlx_attention, resolve_model_path,
)

SYSTEMS = ("raw", "mlxserve", "mlx_lm.server")
# Without their prompt caches the servers prefill every request, as raw does.
SINGLE_STREAM_FLAGS = {"mlxserve": ["--prompt-cache-size", "0"],
                       "mlx_lm.server": ["--prompt-cache-size", "0"]}
READY_TIMEOUT = 600.0  # seconds for a server to load its model and answer a first request
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
LLAMA = {"model_type": "llama", "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
RANDOM_MODELS = {  # name: (config, bits of weight quantization or None)
    # Llama-3.2-1B's shape (rope scaling included), 4-bit like mlx-community's conversions.
    "llama-1b": (dict(
        LLAMA, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
        rope_theta=500000.0, max_position_embeddings=131072,
        rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    ), 4),
    # Deeper, for speculative decoding on a CPU (--agreeing-draft: 1 layer drafting for 12).
    "small": (dict(
        LLAMA, hidden_size=512, num_hidden_layers=12, num_attention_heads=8,
        num_key_value_heads=4, head_dim=64, intermediate_size=1536, vocab_size=8192,
        rope_theta=10000.0, max_position_embeddings=4096,
    ), None),
    # A CPU smoke test; bfloat16 because MLX's CPU quantized matmuls are slow.
    "tiny": (dict(
        LLAMA, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, intermediate_size=768, vocab_size=8192,
        rope_theta=10000.0, max_position_embeddings=4096,
    ), None),
}
# A Llama-3-style chat template whose role markers are special tokens, as in real chat
# models' tokenizers, so that chat routes work on random models.
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
STORY_REQUEST = "Tell me a long story."
FILLER = (  # context put before the request to reach --prompt-tokens
    "Once upon a time, in a small village at the edge of a great forest, there lived an "
    "old clockmaker who had repaired every clock in the valley. One winter morning a "
    "stranger knocked on his door with a clock that ran backwards, and asked him to make "
    "it run forwards again before the first snow melted. "
)


def build_tokenizer(vocab_size: int, out_dir: Path) -> None:
    """Save a byte-level BPE tokenizer with exactly ``vocab_size`` ids: the role markers
    (special tokens), then BOS and EOS, last.

    The merges are synthetic (every pair of characters, then pair + character)
    over printable ASCII, space, tab and newline only, so no training data is
    needed and every token decodes to valid UTF-8 on its own (a random model's
    output then streams token by token). Text outside ASCII does not encode.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # GPT-2's byte-to-character map: printable ASCII maps to itself, and tab,
    # newline and space (bytes 9, 10 and 32) map to chr(256 + byte).
    alphabet = [chr(b) for b in range(33, 127)] + [chr(256 + b) for b in (9, 10, 32)]
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = []
    pairs = itertools.product(alphabet, alphabet)
    triples = ((a + b, c) for a, b, c in itertools.product(alphabet, repeat=3))
    for left, right in itertools.chain(pairs, triples):
        if len(vocab) == vocab_size - 2 - len(ROLE_TOKENS):
            break
        vocab[left + right] = len(vocab)
        merges.append((left, right))
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(ROLE_TOKENS + [BOS, EOS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab_size - 2)]
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS)
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(str(out_dir))


def build_random_model(name: str) -> Path:
    """Build (once, then reuse from the cache) a random-weight model of shape ``name``."""
    from mlx_lm.models import llama

    config, bits = RANDOM_MODELS[name]
    digest = hashlib.sha256(
        json.dumps([config, bits, CHAT_TEMPLATE, ROLE_TOKENS], sort_keys=True).encode()).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = cache / "mlxserve-bench" / f"random-{name}-{digest[:8]}"
    if path.exists():
        return path
    print(f"building random model {name} in {path} ...", flush=True)
    vocab = config["vocab_size"]
    config = dict(config, bos_token_id=vocab - 2, eos_token_id=vocab - 1, torch_dtype="bfloat16")
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(mx.bfloat16)
    if bits:
        model, config = quantize_model(model, config, group_size=64, bits=bits)
    mx.eval(model.parameters())
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(tmp, model)
    build_tokenizer(vocab, tmp)
    save_config(config, tmp / "config.json")
    tmp.rename(path)  # only a complete build gets the final name
    return path


def build_agreeing_pair(name: str) -> tuple[Path, Path]:
    """A random model of shape ``name`` and a one-layer draft that predicts it exactly.

    Every layer of the model after the first adds nothing to the residual stream
    (its attention output and MLP down projections are zero, yet still computed),
    so its logits are those of its first layer alone, which is the draft: the
    embeddings, the first layer and the final norm. The draft's tokens are always
    accepted: the best case for speculative decoding, which shows the most the
    mechanism gains at the model's own cost per token.
    """
    source = build_random_model(name)
    target = source.with_name(source.name + "-agreeing")
    draft = source.with_name(source.name + "-agreeing-draft")
    if target.exists() and draft.exists():
        return target, draft
    print(f"building the agreeing pair of {name} ...", flush=True)
    model, config = load_model(source)
    zero = {}
    for i, layer in enumerate(model.layers[1:], start=1):
        for prefix, proj in ((f"model.layers.{i}.self_attn.o_proj", layer.self_attn.o_proj),
                             (f"model.layers.{i}.mlp.down_proj", layer.mlp.down_proj)):
            for key, value in proj.parameters().items():
                # Quantized layers dequantize to scales * q + biases: zero scales and biases.
                if key != "weight" or not hasattr(proj, "scales"):
                    zero[f"{prefix}.{key}"] = mx.zeros_like(value)
    model.load_weights(list(zero.items()), strict=False)
    weights = dict(tree_flatten(model.parameters()))
    short = dict(config, num_hidden_layers=1)
    first = {k: v for k, v in weights.items() if not k.startswith("model.layers.")
             or k.startswith("model.layers.0.")}
    for path, cfg, params in ((target, config, weights), (draft, short, first)):
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        mx.save_safetensors(str(tmp / "model.safetensors"), params, metadata={"format": "mlx"})
        save_config(cfg, tmp / "config.json")
        for f in source.iterdir():  # the tokenizer and chat template
            if not f.name.startswith(("model", "config")):
                shutil.copy(f, tmp / f.name)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return target, draft


def describe_model(path: Path, ref: str) -> dict:
    """Path, architecture, parameter count and quantization of the model at ``path``."""
    model, config = load_model(path, lazy=True)
    return {
        "ref": ref,
        "path": str(path),
        "model_type": config.get("model_type"),
        "shape": {k: config.get(k) for k in ("hidden_size", "num_hidden_layers",
                                             "num_attention_heads", "num_key_value_heads",
                                             "intermediate_size", "vocab_size")},
        "parameters": get_total_parameters(model),
        "quantization": config.get("quantization"),
    }


def make_prompt(tokenizer, n_tokens: int) -> str:
    """The prompt text: filler, then STORY_REQUEST, in about ``n_tokens`` tokens.

    The user message goes through the model's chat template where it has one,
    so that chat models answer at length. A leading BOS is left out: each
    system adds it when it encodes the text.
    """
    words = (FILLER * (n_tokens // 8 + 1)).split()  # far more than n_tokens tokens

    def render(n_words: int) -> str:
        content = " ".join(words[:n_words] + [STORY_REQUEST])
        if tokenizer.has_chat_template:
            content = tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        bos = tokenizer.bos_token
        return content[len(bos):] if bos and content.startswith(bos) else content

    lo, hi = 0, len(words)  # the most filler words that keep the prompt within n_tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer.encode(render(mid))) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return render(lo)


def run_metrics(t0: float, t_first: float, t_last: float, tokens: int, **extra) -> dict:
    """One run's TTFT, decode speed and wall time from its timestamps (perf_counter)."""
    decode = tokens - 1
    return dict(
        ttft_ms=(t_first - t0) * 1e3,
        decode_tps=decode / (t_last - t_first) if decode > 0 and t_last > t_first else None,
        total_s=t_last - t0,
        tokens=tokens,
        **extra,
    )


def raw_run(model, tokenizer, ids: mx.array, max_tokens: int) -> dict:
    """One timed ``mlx_lm.stream_generate`` of ``ids``."""
    text, t_first = [], None
    t0 = time.perf_counter()
    for resp in mlx_lm.stream_generate(model, tokenizer, ids, max_tokens=max_tokens):
        t_first = t_first or time.perf_counter()
        text.append(resp.text)
    t_last = time.perf_counter()
    return run_metrics(t0, t_first, t_last, resp.generation_tokens,
                       prompt_tokens=resp.prompt_tokens, text="".join(text))


@contextlib.contextmanager
def raw_runner(model_ref: str, prompt: str, max_tokens: int) -> Iterator[Callable[[], dict]]:
    """Load the model in this process; yield a function that times one ``stream_generate``."""
    model, tokenizer = mlx_lm.load(model_ref)
    ids = mx.array(tokenizer.encode(prompt))  # as mlx_lm.server encodes it

    def run() -> dict:
        before = time.process_time()
        result = raw_run(model, tokenizer, ids, max_tokens)
        return with_cpu(result, time.process_time() - before)

    try:
        yield run
    finally:
        del model, tokenizer
        gc.collect()
        mx.clear_cache()


def tokenize_ms(tokenizer, prompt: str, repeats: int = 5) -> float:
    """Median time to encode ``prompt``: part of a server's TTFT, not of raw's (given ids)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokenizer.encode(prompt)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stream:
    """What a streamed request returned, with perf_counter times."""

    t0: float
    """When the request was sent."""
    t_first: float | None
    """The first chunk with text."""
    t_last: float | None
    """The last chunk with text or a finish reason."""
    t_token: float | None
    """The first chunk with a token: text, or logprobs of a token whose text is held back."""
    usage: dict
    text: str


def read_stream(base_url: str, path: str, body: dict) -> Stream:
    """POST ``body`` (a streamed request) to ``path`` and time its chunks.

    Reads completions (``text``) and chat completions (``delta.content``) alike.
    """
    text, usage, t_first, t_last, t_token = [], {}, None, None, None
    with httpx.Client(timeout=READY_TIMEOUT) as client:
        t0 = time.perf_counter()
        with client.stream("POST", base_url + path, json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:500]!r}")
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now, chunk = time.perf_counter(), json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"server error: {chunk['error']}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", []):
                    piece = choice.get("text") or (choice.get("delta") or {}).get("content")
                    if piece:
                        t_first = t_first or now
                        text.append(piece)
                    if piece or (choice.get("logprobs") or {}).get("content"):
                        t_token = t_token or now
                    if piece or choice.get("finish_reason"):
                        t_last = now
    return Stream(t0, t_first, t_last, t_token, usage, "".join(text))


def stream_completion(base_url: str, prompt: str, max_tokens: int) -> dict:
    """POST a streamed greedy ``/v1/completions`` request and time its SSE chunks."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    s = read_stream(base_url, "/v1/completions", body)
    if s.t_first is None or not s.usage:
        raise RuntimeError(f"no text or no usage in the stream from {base_url}")
    cached = (s.usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return run_metrics(s.t0, s.t_first, s.t_last, s.usage["completion_tokens"],
                       prompt_tokens=s.usage["prompt_tokens"], cached_tokens=cached, text=s.text)


def server_command(system: str, model: str, port: int, max_tokens: int,
                   flags: Sequence[str] = ()) -> tuple[list, str]:
    """The command line that starts ``system`` and the GET path that answers 200 once it listens."""
    if system == "mlxserve":
        return ([sys.executable, "-m", "mlxserve", "serve", "--model", model, "--port", str(port),
                 "--max-tokens", str(max(4096, max_tokens)), *flags], "/healthz")
    return ([sys.executable, "-m", "mlx_lm", "server", "--model", model, "--port", str(port),
             "--max-tokens", str(max_tokens), *flags], "/v1/models")


def wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail if the server exits or READY_TIMEOUT passes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return
            if '"failed"' in response.text:  # mlxserve: the model failed to load
                raise RuntimeError(f"server says {response.text}; see {log}")
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT:.0f}s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server, then SIGKILL it if it is still there after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_server(system: str, model: str, max_tokens: int, log_dir: Path,
                   flags: Sequence[str] = ()) -> Iterator[str]:
    """Start ``system`` with ``flags``, wait until it is ready, yield its base URL; stop it."""
    with server_process(system, model, max_tokens, log_dir, flags) as (base_url, _):
        yield base_url


@contextlib.contextmanager
def server_process(system: str, model: str, max_tokens: int, log_dir: Path,
                   flags: Sequence[str] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """As ``running_server``, yielding the base URL and the server's process."""
    port = free_port()
    cmd, ready_path = server_command(system, model, port, max_tokens, flags)
    log = log_dir / f"{system}.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    base_url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(proc, base_url + ready_path, log)
        yield base_url, proc
    except Exception as exc:
        raise RuntimeError(f"{system} failed ({exc}); server log: {log}") from exc
    finally:
        stop(proc)


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) that process ``pid`` has used; None without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(run: dict, cpu_seconds: float | None) -> dict:
    """``run`` with the CPU time per generated token that its system's process used."""
    per_token = cpu_seconds * 1e3 / run["tokens"] if cpu_seconds is not None else None
    return {**run, "cpu_ms_per_token": per_token}


@contextlib.contextmanager
def server_runner(system: str, model: str, prompt: str, max_tokens: int,
                  log_dir: Path) -> Iterator[Callable[[], dict]]:
    """Start ``system``; yield a function that times one streamed request to it; stop it."""
    with server_process(system, model, max_tokens, log_dir,
                        SINGLE_STREAM_FLAGS[system]) as (url, proc):
        def run() -> dict:
            before = process_cpu_seconds(proc.pid)
            result = stream_completion(url, prompt, max_tokens)
            after = process_cpu_seconds(proc.pid)
            return with_cpu(result, after - before if before is not None else None)

        yield run


def bench_systems(systems: Sequence[str], model: str, prompt: str, max_tokens: int, count: int,
                  log_dir: Path) -> dict[str, list[dict]]:
    """Start ``systems`` together, then time them turn about: one request each per round,
    ``count`` rounds (the first: warm-ups). A host's speed that drifts during the
    benchmark (other tenants, clocks) then weighs on every system alike."""
    with contextlib.ExitStack() as stack:
        runners = {}
        for system in systems:
            print(f"starting {system} ...", flush=True)
            runners[system] = stack.enter_context(
                raw_runner(model, prompt, max_tokens) if system == "raw"
                else server_runner(system, model, prompt, max_tokens, log_dir))
        runs = {system: [] for system in systems}
        for i in range(count):
            for system, run in runners.items():
                runs[system].append(run())
            print(f"round {i}: " + ", ".join(
                f"{system} {r[-1]['decode_tps']:.1f} tok/s" for system, r in runs.items()), flush=True)
        return runs


def summarize(runs: list[dict]) -> dict:
    """Medians of the timed runs' numeric metrics."""
    keys = ("ttft_ms", "decode_tps", "total_s", "tokens", "cpu_ms_per_token")
    medians = {}
    for k in keys:
        values = [r[k] for r in runs if r.get(k) is not None]
        medians[k] = statistics.median(values) if values else None
    return medians


def comparisons(results: dict) -> dict:
    """Decode-speed ratios and TTFT differences between the systems' medians, and the
    medians of the same comparisons made round by round (runs that took turns)."""
    med = {name: r["median"] for name, r in results.items()}
    out = {}
    for a, b in (("mlxserve", "raw"), ("mlx_lm.server", "raw"), ("mlxserve", "mlx_lm.server")):
        if a in med and b in med:
            pairs = list(zip(results[a]["runs"], results[b]["runs"]))
            out[f"{a}/{b}"] = {
                "decode_tps_ratio": med[a]["decode_tps"] / med[b]["decode_tps"],
                "ttft_diff_ms": med[a]["ttft_ms"] - med[b]["ttft_ms"],
                "per_round_decode_tps_ratio": statistics.median(
                    x["decode_tps"] / y["decode_tps"] for x, y in pairs),
                "per_round_ttft_diff_ms": statistics.median(
                    x["ttft_ms"] - y["ttft_ms"] for x, y in pairs),
            }
    return out


def check_runs(results: dict, max_tokens: int) -> list[str]:
    """Warnings where a timed run did other work than the first system's same run."""
    warnings = []
    first, reference = next(iter(results.items()))
    for name, res in results.items():
        for i, (run, ref_run) in enumerate(zip(res["runs"], reference["runs"]), 1):
            if run["tokens"] != max_tokens:
                warnings.append(f"{name} run {i}: {run['tokens']} tokens, not {max_tokens}")
            if run["text"] != ref_run["text"]:
                warnings.append(f"{name} run {i}: text differs from {first}'s")
            if run.get("cached_tokens"):
                warnings.append(f"{name} run {i}: {run['cached_tokens']} prompt tokens cached")
    return warnings


def device_info() -> dict:
    """The default MLX device, platform, CPU model and (where MLX reports one) GPU name."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"default_device": str(mx.default_device()), "platform": platform.platform(),
            "cpu": cpu, "cpu_count": os.cpu_count()}
    try:
        info["mlx_device_info"] = {k: v for k, v in mx.device_info().items()
                                   if isinstance(v, (str, int, float))}
    except (AttributeError, RuntimeError):
        pass
    return info


def print_table(report: dict) -> None:
    """Print the medians, each run's decode speed and the comparisons."""
    print(f"\nmodel: {report['model']['ref']} ({report['model']['parameters'] / 1e6:,.2f}M params)"
          f"  device: {report['device']['default_device']}  mlx {report['versions']['mlx']}")
    print(f"{'system':<14}{'TTFT ms':>9}{'decode tok/s':>14}{'total s':>9}{'tokens':>8}"
          f"{'CPU ms/tok':>12}  decode tok/s per run")
    for name, res in report["results"].items():
        m = res["median"]
        runs = ", ".join(f"{r['decode_tps']:.1f}" for r in res["runs"] if r["decode_tps"])
        cpu = f"{m['cpu_ms_per_token']:.2f}" if m.get("cpu_ms_per_token") is not None else "-"
        print(f"{name:<14}{m['ttft_ms']:>9.1f}{m['decode_tps']:>14.1f}{m['total_s']:>9.2f}"
              f"{m['tokens']:>8g}{cpu:>12}  {runs}")
    for pair, c in report["comparisons"].items():
        print(f"{pair}: decode {c['decode_tps_ratio']:.1%}, TTFT {c['ttft_diff_ms']:+.1f} ms"
              f" (round by round: {c['per_round_decode_tps_ratio']:.1%},"
              f" {c['per_round_ttft_diff_ms']:+.1f} ms)")
    print(f"(the servers' TTFT includes tokenizing the prompt, {report['tokenize_ms']:.2f} ms;"
          " raw is given its token ids)")
    for warning in report["warnings"]:
        print("WARNING:", warning)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(REPO_ROOT / "mlxserve" / "demo_model"),
                        help="model path or Hugging Face repo id")
    parser.add_argument("--random-model", choices=sorted(RANDOM_MODELS),
                        help="benchmark a random-weight model of this shape instead of --model")
    parser.add_argument("--prompt-tokens", type=int, default=128,
                        help="approximate prompt length (0: the story request alone)")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens to generate")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed runs per system (after one warm-up)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="run the systems one after another, not side by side taking turns "
                             "(for a model that does not fit in memory three times)")
    parser.add_argument("--out", type=Path, help="write the full report here as JSON")
    args = parser.parse_args()
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or not args.systems:
        parser.error(f"--systems: unknown {sorted(unknown)}; choose from {SYSTEMS}")
    if args.runs < 1 or args.max_tokens < 2 or args.prompt_tokens < 0:
        parser.error("need --runs >= 1, --max-tokens >= 2 and --prompt-tokens >= 0")
    return args


def model_to_run(args: argparse.Namespace) -> tuple[str, Path]:
    """The model's name in reports and its folder: ``--random-model`` (built once) or ``--model``."""
    if args.random_model:
        return f"random:{args.random_model}", build_random_model(args.random_model)
    return args.model, resolve_model_path(args.model)


def main() -> int:
    args = parse_args()
    # All three systems attend with the kernels mlxserve picks on CUDA (the servers
    # inherit the variable); set MLX_CUDA_USE_CUDNN_SDPA=1 to compare them on cuDNN's.
    prefer_mlx_attention()
    ref, path = model_to_run(args)
    tokenizer = load_tokenizer(path)
    prompt = make_prompt(tokenizer, args.prompt_tokens)
    log_dir = Path(tempfile.mkdtemp(prefix="mlxserve-bench-"))
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = {}
    groups = [[s] for s in args.systems] if args.one_at_a_time else [args.systems]
    for group in groups:
        runs = bench_systems(group, str(path), prompt, args.max_tokens, args.runs + 1, log_dir)
        for system, system_runs in runs.items():
            results[system] = {"warmup": system_runs[0], "runs": system_runs[1:],
                               "median": summarize(system_runs[1:])}
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_info(),
        "load_average_1m": {"before": load_before,
                            "after": os.getloadavg()[0] if load_before is not None else None},
        "versions": {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__,
                     "mlxserve": mlxserve.__version__, "python": platform.python_version()},
        "model": describe_model(path, ref),
        "settings": {"prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
                     "runs": args.runs, "systems": args.systems, "temperature": 0.0,
                     "turn_about": not args.one_at_a_time,
                     "route": "/v1/completions (stream, include_usage)", "prompt": prompt,
                     "server_flags": SINGLE_STREAM_FLAGS,
                     CUDNN_ATTENTION_VAR: os.environ[CUDNN_ATTENTION_VAR]},
        "results": results,
        "comparisons": comparisons(results),
        "tokenize_ms": tokenize_ms(tokenizer, prompt),
        "warnings": check_runs(results, args.max_tokens),
        "server_logs": str(log_dir),
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    print_table(report)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        import bench_serving  # a scenario: multi-turn chat, clients, JSON grammar, ...

        sys.exit(bench_serving.main())
    sys.exit(main())
