"""Serving scenarios: multi-turn chat and the prompt cache, concurrent clients, speculative
decoding, KV-cache options, grammar-constrained JSON. Single-stream speed against raw mlx-lm is ``scripts/bench.py``.

Each scenario starts the server(s) as subprocesses (as bench.py does), drives them over
HTTP streaming with greedy requests, and prints a table; ``--out`` writes every number as JSON.

    python scripts/bench_serving.py chat    [--turns 30] [--max-context N] [--max-context-tokens N]
    python scripts/bench_serving.py clients [--clients 1,4,8] [--systems mlxserve,mlx_lm.server]
    python scripts/bench_serving.py draft   [--draft-model PATH | --agreeing-draft] [--num-draft-tokens 3]
    python scripts/bench_serving.py kv      [--prompt-tokens 4096]
    python scripts/bench_serving.py json    (a JSON-schema grammar against the same request without)
    python scripts/bench_serving.py lengths (raw mlx-lm: prompt lengths seen before against new ones)

Common options: ``--model PATH | --random-model {llama-1b,tiny}``, ``--max-tokens``,
``--prompt-tokens``, ``--runs``, ``--out FILE``.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlx.core as mx
import mlx_lm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402
    FILLER, RANDOM_MODELS, build_agreeing_pair, describe_model, device_info, make_prompt,
    model_to_run, raw_run, read_stream, running_server,
)

import mlxserve  # noqa: E402
from mlx_lm.utils import load_tokenizer  # noqa: E402
from mlxserve.engine import CUDNN_ATTENTION_VAR, resolve_model_path  # noqa: E402


def stream(base_url: str, path: str, body: dict) -> dict:
    """POST a streamed greedy request; TTFT, decode tok/s, tokens, usage and text.

    With ``logprobs`` in the body, ``token_ms`` is the time to the first token even
    when the streaming detokenizer holds its text back (``ttft_ms``: the first text).
    """
    body = dict(body, stream=True, temperature=0.0, stream_options={"include_usage": True})
    s = read_stream(base_url, path, body)
    t_first = s.t_first or s.t_last
    tokens = s.usage.get("completion_tokens", 0)
    return {
        "t0": s.t0, "t_end": s.t_last,
        "ttft_ms": (t_first - s.t0) * 1e3,
        "token_ms": (s.t_token - s.t0) * 1e3 if s.t_token else None,
        "decode_tps": (tokens - 1) / (s.t_last - t_first) if tokens > 1 and s.t_last > t_first else None,
        "tokens": tokens,
        "prompt_tokens": s.usage.get("prompt_tokens"),
        "cached_tokens": (s.usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
        "usage": s.usage,
        "text": s.text,
    }


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---- scenarios ----

def chat(args, model: str, log_dir: Path) -> dict:
    """A growing conversation, with the prompt cache and without it."""
    words = (FILLER * (args.user_tokens // 4 + 2)).split()
    out = {}
    for label, cache_size in (("prompt cache", 8), ("no prompt cache", 0)):
        flags = ["--prompt-cache-size", str(cache_size), "--max-context", str(args.max_context)]
        if args.max_context_tokens:
            flags += ["--max-context-tokens", str(args.max_context_tokens)]
        print(f"chat: mlxserve, {label} ...", flush=True)
        with running_server("mlxserve", model, args.max_tokens, log_dir, flags) as url:
            messages = [{"role": "system", "content": "You are a storyteller."}]
            turns = []
            for turn in range(1, args.turns + 1):
                start = (turn * 7) % max(1, len(words) - args.user_tokens)
                user = f"Turn {turn}. " + " ".join(words[start:start + args.user_tokens // 2])
                messages.append({"role": "user", "content": user})
                # logprobs: a chunk per token, so the first token is timed even
                # while the detokenizer holds its text back (a random model's
                # byte-level tokens wait for a word boundary, a varying number of steps).
                r = stream(url, "/v1/chat/completions",
                           {"messages": messages, "max_tokens": args.max_tokens, "logprobs": True})
                messages.append({"role": "assistant", "content": r["text"]})
                turns.append({k: r[k] for k in ("token_ms", "ttft_ms", "decode_tps", "tokens",
                                                "prompt_tokens", "cached_tokens")})
        later = turns[1:]
        out[label] = {
            "turns": turns,
            "first_token_first_ms": turns[0]["token_ms"],
            "first_token_last_ms": turns[-1]["token_ms"],
            "first_token_last_over_first": turns[-1]["token_ms"] / turns[0]["token_ms"],
            # Single turns vary by tens of percent on a shared host: medians of five.
            "first_token_last5_over_first5": median(t["token_ms"] for t in turns[-5:])
            / median(t["token_ms"] for t in turns[:5]),
            "ttft_first_ms": turns[0]["ttft_ms"],
            "ttft_last_ms": turns[-1]["ttft_ms"],
            "ttft_last_over_first": turns[-1]["ttft_ms"] / turns[0]["ttft_ms"],
            # A hit: at least half the prompt came from the cache.
            "hit_rate": sum(t["cached_tokens"] * 2 >= t["prompt_tokens"] for t in later) / len(later),
            "cached_share": sum(t["cached_tokens"] for t in later) / sum(t["prompt_tokens"] for t in later),
        }
    return out


def clients(args, model: str, log_dir: Path) -> dict:
    """N clients at once, each with its own prompt: aggregate tok/s and TTFT per round."""
    counts = [int(n) for n in args.clients.split(",")]
    tokenizer = load_tokenizer(resolve_model_path(model))
    base = make_prompt(tokenizer, args.prompt_tokens)
    out = {}
    for system in args.systems.split(","):
        flags = ["--prompt-cache-size", "0"]
        if system == "mlxserve":
            flags += ["--max-requests", str(max(counts)), "--queue-size", str(4 * max(counts))]
        print(f"clients: {system} ...", flush=True)
        with running_server(system, model, args.max_tokens, log_dir, flags) as url:
            rounds = {}
            for n in counts:
                rounds[n] = [_round(url, base, n, args.max_tokens) for _ in range(args.runs + 1)]
        out[system] = {
            str(n): {
                "first_round": rs[0],
                "rounds": rs[1:],
                "aggregate_tps": median(r["aggregate_tps"] for r in rs[1:]),
                "ttft_ms": median(r["ttft_ms"] for r in rs[1:]),
            }
            for n, rs in rounds.items()
        }
    return out


def _round(url: str, base: str, n: int, max_tokens: int) -> dict:
    """One round of ``n`` concurrent clients."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def client(i):
        barrier.wait()
        results[i] = stream(url, "/v1/completions",
                            {"prompt": f"Client {i}. {base}", "max_tokens": max_tokens})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(r["t_end"] for r in results) - min(r["t0"] for r in results)
    return {
        "wall_s": wall,
        "tokens": sum(r["tokens"] for r in results),
        "aggregate_tps": sum(r["tokens"] for r in results) / wall,
        "ttft_ms": median(r["ttft_ms"] for r in results),
        "ttft_max_ms": max(r["ttft_ms"] for r in results),
    }


def _single(url: str, prompt: str, args) -> dict:
    runs = [stream(url, "/v1/completions", {"prompt": prompt, "max_tokens": args.max_tokens})
            for _ in range(args.runs + 1)][1:]
    return {
        "ttft_ms": median(r["ttft_ms"] for r in runs),
        "decode_tps": median(r["decode_tps"] for r in runs),
        "tokens": median(r["tokens"] for r in runs),
        "usage": runs[-1]["usage"],
    }


def draft(args, model: str, log_dir: Path) -> dict:
    """Single stream with and without a draft model."""
    prompt = make_prompt(load_tokenizer(resolve_model_path(model)), args.prompt_tokens)
    draft_model = args.draft_model or model
    out = {}
    for label, flags in (("no draft", []),
                         (f"draft, {args.num_draft_tokens} tokens",
                          ["--draft-model", draft_model,
                           "--num-draft-tokens", str(args.num_draft_tokens)])):
        print(f"draft: {label} ...", flush=True)
        with running_server("mlxserve", model, args.max_tokens, log_dir,
                            ["--prompt-cache-size", "0", *flags]) as url:
            out[label] = _single(url, prompt, args)
        details = out[label]["usage"].get("completion_tokens_details") or {}
        accepted = details.get("accepted_prediction_tokens", 0)
        proposed = accepted + details.get("rejected_prediction_tokens", 0)
        out[label]["acceptance_rate"] = accepted / proposed if proposed else None
    plain, drafted = (r["decode_tps"] for r in out.values())  # without, then with the draft
    out["speed_up"] = drafted / plain if drafted and plain else None
    out["draft_model"] = draft_model
    return out


def kv(args, model: str, log_dir: Path) -> dict:
    """Single stream at full precision, with a quantized KV cache, and with a rotating one."""
    prompt = make_prompt(load_tokenizer(resolve_model_path(model)), args.prompt_tokens)
    out = {}
    for label, flags in (("full", []), ("--kv-bits 8", ["--kv-bits", "8"]),
                         ("--kv-bits 4", ["--kv-bits", "4"]),
                         ("--max-kv-size 1024", ["--max-kv-size", "1024"])):
        print(f"kv: {label} ...", flush=True)
        try:
            with running_server("mlxserve", model, args.max_tokens, log_dir,
                                ["--prompt-cache-size", "0", *flags]) as url:
                out[label] = _single(url, prompt, args)
        except RuntimeError as exc:  # e.g. a backend without quantized attention
            out[label] = {"error": str(exc)}
    return out


def constrained(args, model: str, log_dir: Path) -> dict:
    """Decode speed with a JSON-schema grammar against the same request without one.

    The schema forces one string of a fixed length, so a model of any quality writes about
    ``--max-tokens`` tokens; the unconstrained run then generates exactly as many.
    """
    length = args.max_tokens * 2  # characters; random-model tokens average two or more
    schema = {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": length, "maxLength": length}},
        "required": ["text"],
        "additionalProperties": False,
    }
    grammar = {"type": "json_schema", "json_schema": {"name": "bench", "schema": schema}}
    messages = [{"role": "user", "content": "Tell me a long story."}]
    out = {}
    with running_server("mlxserve", model, 10 * args.max_tokens, log_dir,
                        ["--prompt-cache-size", "0"]) as url:
        def runs(extra):
            body = {"messages": messages, **extra}
            done = [stream(url, "/v1/chat/completions", body) for _ in range(args.runs + 1)][1:]
            return {
                "ttft_ms": median(r["ttft_ms"] for r in done),
                "decode_tps": median(r["decode_tps"] for r in done),
                "tokens": median(r["tokens"] for r in done),
                "all_decode_tps": [r["decode_tps"] for r in done],
            }

        print("json: with the grammar ...", flush=True)
        out["json_schema"] = runs({"response_format": grammar, "max_tokens": 10 * args.max_tokens})
        tokens = int(out["json_schema"]["tokens"])
        print(f"json: without it, {tokens} tokens ...", flush=True)
        out["unconstrained"] = runs({"max_tokens": tokens, "logit_bias": _no_eos(model)})
    out["decode_ratio"] = out["json_schema"]["decode_tps"] / out["unconstrained"]["decode_tps"]
    return out


def _no_eos(model: str) -> dict:
    """A logit bias that keeps the unconstrained run from ending before max_tokens."""
    tokenizer = load_tokenizer(resolve_model_path(model))
    return {str(t): -100 for t in tokenizer.eos_token_ids}


def lengths(args, model: str, log_dir: Path) -> dict:
    """Raw mlx-lm time to first token for prompt lengths seen before against new ones.

    On CUDA, MLX builds a cuDNN attention graph per new pair of query and key
    lengths unless ``MLX_CUDA_USE_CUDNN_SDPA=0`` (read once per process: run
    the scenario once per setting). No server: this is the backend's own cost.
    """
    loaded, tokenizer = mlx_lm.load(model)
    ids = tokenizer.encode(make_prompt(tokenizer, 4200))

    def ttft(n: int) -> float:
        return raw_run(loaded, tokenizer, mx.array(ids[:n]), max_tokens=1)["ttft_ms"]

    ttft(4096)
    for _ in range(3):
        ttft(128)
    runs = {
        "128, same length": [ttft(128) for _ in range(8)],
        "129-206, new lengths": [ttft(129 + 7 * i) for i in range(12)],
        "129-206, seen before": [ttft(129 + 7 * i) for i in range(12)],
        "300-707, new lengths": [ttft(300 + 37 * i) for i in range(12)],
        "4096, same length": [ttft(4096) for _ in range(4)],
        "3000-3305, new lengths": [ttft(3000 + 61 * i) for i in range(6)],
    }
    decode = []
    for _ in range(3):
        for r in mlx_lm.stream_generate(loaded, tokenizer, mx.array(ids[:128]), max_tokens=256):
            pass
        decode.append(r.generation_tps)
    return {CUDNN_ATTENTION_VAR: os.environ.get(CUDNN_ATTENTION_VAR),
            "ttft_ms": {k: {"median": median(v), "runs": v} for k, v in runs.items()},
            "decode_tps_128": {"median": median(decode), "runs": decode}}


SCENARIOS = {"chat": chat, "clients": clients, "draft": draft, "kv": kv, "json": constrained,
             "lengths": lengths}


def print_table(name: str, results: dict) -> None:
    if name == "chat":
        for label, r in results.items():
            print(f"{label:<16} first token: turn 1 {r['first_token_first_ms']:.1f} ms, last turn "
                  f"{r['first_token_last_ms']:.1f} ms ({r['first_token_last_over_first']:.2f}x; "
                  f"median of the last 5 turns over the first 5: "
                  f"{r['first_token_last5_over_first5']:.2f}x); "
                  f"first text: {r['ttft_first_ms']:.1f} ms, {r['ttft_last_ms']:.1f} ms "
                  f"({r['ttft_last_over_first']:.2f}x); hit rate "
                  f"{r['hit_rate']:.0%}; prompt tokens from the cache {r['cached_share']:.0%}")
    elif name == "clients":
        for system, by_n in results.items():
            for n, r in by_n.items():
                first = r["first_round"]
                print(f"{system:<14} {n:>2} clients: {r['aggregate_tps']:8.1f} tok/s aggregate, "
                      f"TTFT {r['ttft_ms']:.1f} ms; first round {first['aggregate_tps']:.1f} tok/s,"
                      f" slowest TTFT {first['ttft_max_ms']:.0f} ms")
    elif name == "lengths":
        print(f"{CUDNN_ATTENTION_VAR}={results[CUDNN_ATTENTION_VAR]}")
        for label, r in results["ttft_ms"].items():
            print(f"{label:<24} TTFT median {r['median']:7.1f} ms  "
                  f"({', '.join(f'{v:.0f}' for v in r['runs'])})")
        d = results["decode_tps_128"]
        print(f"decode after 128 tokens   {d['median']:.1f} tok/s "
              f"({', '.join(f'{v:.0f}' for v in d['runs'])})")
    elif name == "json":
        for label in ("json_schema", "unconstrained"):
            r = results[label]
            print(f"{label:<14} TTFT {r['ttft_ms']:.1f} ms, decode {r['decode_tps']:.1f} tok/s, "
                  f"{r['tokens']:.0f} tokens")
        print(f"grammar decode / unconstrained decode: {results['decode_ratio']:.1%}")
    else:
        if results.get("speed_up"):
            print(f"decode with the draft / without: {results['speed_up']:.2f}x")
        for label, r in results.items():
            if isinstance(r, dict) and "error" in r:
                print(f"{label:<22} failed: {r['error'][:200]}")
            elif isinstance(r, dict):
                extra = f", acceptance {r['acceptance_rate']:.0%}" if r.get("acceptance_rate") else ""
                print(f"{label:<22} TTFT {r['ttft_ms']:.1f} ms, decode {r['decode_tps']:.1f} "
                      f"tok/s{extra}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--model", default=str(Path(mlxserve.__file__).parent / "demo_model"))
    parser.add_argument("--random-model", choices=sorted(RANDOM_MODELS))
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="tokens per answer (default: 32 for chat, 256 otherwise)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--user-tokens", type=int, default=48, help="words per user turn, about")
    parser.add_argument("--max-context", type=int, default=0)
    parser.add_argument("--max-context-tokens", type=int, default=0)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--systems", default="mlxserve,mlx_lm.server")
    parser.add_argument("--draft-model")
    parser.add_argument("--num-draft-tokens", type=int, default=3)
    parser.add_argument("--agreeing-draft", action="store_true",
                        help="draft: a --random-model whose layers after the first add nothing, "
                        "drafted for by its first layer alone (always accepted: the best case)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.max_tokens is None:
        args.max_tokens = 32 if args.scenario == "chat" else 256
    return args


def main() -> int:
    args = parse_args()
    ref, path = model_to_run(args)
    if args.agreeing_draft:
        if not args.random_model:
            raise SystemExit("--agreeing-draft needs --random-model")
        path, draft_path = build_agreeing_pair(args.random_model)
        ref, args.draft_model = f"{ref} (agreeing pair)", str(draft_path)
    log_dir = Path(tempfile.mkdtemp(prefix="mlxserve-bench-"))
    results = SCENARIOS[args.scenario](args, str(path), log_dir)
    report = {
        "scenario": args.scenario,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_info(),
        "versions": {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__,
                     "mlxserve": mlxserve.__version__, "python": platform.python_version()},
        "model": describe_model(path, ref),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": results,
        "server_logs": str(log_dir),
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    print_table(args.scenario, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
