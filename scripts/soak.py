"""Soak test: N minutes of mixed traffic against one server; memory and errors over time.

Starts ``python -m mlxserve serve`` on the demo model (or any ``--model``) as a
subprocess, or uses a running server (``--url`` and ``--pid``), then keeps
``--clients`` threads busy with a mix of requests: chat (plain, streamed, and
streams dropped half-way), multi-turn chats that hit the prompt cache, raw
completions, embeddings, Anthropic and Ollama chats, and bad requests that must
get a 400. Every ``--interval`` seconds it samples the server's RSS (from
``ps``) and its own metrics (MLX memory, prompt cache bytes, active and queued
requests, tokens). At the end it prints a Markdown report and exits 1 on any
unexpected answer, or if memory grew past ``--max-growth-mb`` between the
first sample after the warm-up and the last.

    python scripts/soak.py --minutes 5
    python scripts/soak.py --minutes 60 --clients 8 --model mlx-community/Qwen3-0.6B-4bit

Not run in CI (it runs for minutes by design).
"""

import argparse
import datetime
import json
import platform
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "mlxserve" / "demo_model"
HELLO = [{"role": "user", "content": "Say hello."}]
STORY = [{"role": "user", "content": "Tell me a long story."}]
TIMEOUT = 120.0


# ---- the traffic ----


def chat(http: httpx.Client, rng: random.Random) -> bool:
    r = http.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 40})
    return r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def chat_stream(http: httpx.Client, rng: random.Random) -> bool:
    body = {"messages": STORY, "max_tokens": rng.randint(20, 120), "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    errors = [line for line in lines if line.startswith('data: {"error"')]
    return r.status_code == 200 and lines[-1] == "data: [DONE]" and not errors


def dropped_stream(http: httpx.Client, rng: random.Random) -> bool:
    body = {"messages": STORY, "max_tokens": 500, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: {")
            if seen >= rng.randint(2, 10):
                break  # leave mid-answer: the server must free the slot
    return r.status_code == 200


def multi_turn(http: httpx.Client, rng: random.Random) -> bool:
    messages = list(HELLO)
    for _ in range(3):
        r = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 30})
        if r.status_code != 200:
            return False
        messages += [r.json()["choices"][0]["message"], {"role": "user", "content": "And then?"}]
    return True


def completion(http: httpx.Client, rng: random.Random) -> bool:
    r = http.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 30})
    return r.status_code == 200


def embedding(http: httpx.Client, rng: random.Random) -> bool:
    r = http.post("/v1/embeddings", json={"input": ["hello", "a longer sentence " * rng.randint(1, 20)]})
    return r.status_code == 200 and len(r.json()["data"]) == 2


def anthropic(http: httpx.Client, rng: random.Random) -> bool:
    r = http.post("/v1/messages", json={"model": "m", "max_tokens": 40, "messages": HELLO})
    return r.status_code == 200 and r.json()["type"] == "message"


def ollama(http: httpx.Client, rng: random.Random) -> bool:
    r = http.post("/api/chat", json={"model": "m", "stream": False, "messages": HELLO})
    return r.status_code == 200 and r.json()["done"]


def bad_request(http: httpx.Client, rng: random.Random) -> bool:
    body = rng.choice([{"messages": []}, {"messages": "x"}, {"messages": HELLO, "temperature": "hot"}])
    r = http.post("/v1/chat/completions", json=body)
    return r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


MIX = {
    chat: 4, chat_stream: 4, dropped_stream: 2, multi_turn: 2, completion: 2,
    embedding: 1, anthropic: 2, ollama: 2, bad_request: 1,
}


class Traffic:
    """Client threads that send the mix until stopped, counting each kind's outcomes."""

    def __init__(self, url: str, clients: int, seed: int):
        self.url = url
        self.stop = threading.Event()
        self.done: Counter = Counter()
        self.failed: Counter = Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(seed + i,)) for i in range(clients)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        kinds, weights = list(MIX), list(MIX.values())
        with httpx.Client(base_url=self.url, timeout=TIMEOUT) as http:
            while not self.stop.is_set():
                kind = rng.choices(kinds, weights)[0]
                try:
                    ok = kind(http, rng)
                except httpx.HTTPError as exc:
                    ok, why = False, f"{kind.__name__}: {type(exc).__name__}: {exc}"
                else:
                    why = f"{kind.__name__}: unexpected answer"
                self.done[kind.__name__] += 1
                if not ok:
                    self.failed[kind.__name__] += 1
                    if len(self.failures) < 20:
                        self.failures.append(why)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(TIMEOUT + 10)


# ---- the server and its numbers ----


def rss_bytes(pid: int) -> int:
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
    return int(out.stdout.strip() or 0) * 1024


def metrics(url: str) -> dict:
    text = httpx.get(url + "/metrics", timeout=30).text
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.labels:
                values[s.name] = s.value
            elif s.name == "mlxserve_requests_total":
                values[s.name] = values.get(s.name, 0) + s.value
    return values


def sample(url: str, pid: int, started: float) -> dict:
    m = metrics(url)
    return {
        "t_s": round(time.monotonic() - started, 1),
        "rss_mb": round(rss_bytes(pid) / 2**20, 1),
        "mlx_mb": round(m.get("mlxserve_mlx_memory_bytes", 0) / 2**20, 2),
        "prompt_cache_mb": round(m.get("mlxserve_prompt_cache_bytes", 0) / 2**20, 2),
        "requests": int(m.get("mlxserve_requests_total", 0)),
        "tokens": int(m.get("mlxserve_tokens_generated_total", 0)),
        "active": int(m.get("mlxserve_active_requests", 0)),
        "queued": int(m.get("mlxserve_queued_requests", 0)),
    }


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = args.port
    cmd = [
        sys.executable, "-m", "mlxserve", "serve", "--model", args.model, "--port", str(port),
        "--max-requests", str(args.max_requests), "--queue-size", str(args.clients * 4),
        "--log-level", "warning",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.5)


def report(args, samples: list[dict], traffic: Traffic, warm: dict, last: dict) -> str:
    rss_growth = last["rss_mb"] - warm["rss_mb"]
    mlx_growth = last["mlx_mb"] - warm["mlx_mb"]
    lines = [
        f"Soak run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{platform.platform()} ({platform.machine()}), Python {platform.python_version()}: "
        f"model `{args.model}`, {args.minutes:g} min, {args.clients} clients, "
        f"--max-requests {args.max_requests}.",
        "",
        "| t (s) | RSS (MiB) | MLX in use (MiB) | prompt cache (MiB) | requests | tokens | active | queued |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in samples:
        lines.append(
            f"| {s['t_s']} | {s['rss_mb']} | {s['mlx_mb']} | {s['prompt_cache_mb']} | "
            f"{s['requests']} | {s['tokens']} | {s['active']} | {s['queued']} |"
        )
    total, failed = sum(traffic.done.values()), sum(traffic.failed.values())
    lines += [
        "",
        f"Requests by kind: {', '.join(f'{k} {v}' for k, v in sorted(traffic.done.items()))}.",
        f"Unexpected answers: {failed} of {total}"
        + (f" ({', '.join(f'{k} {v}' for k, v in traffic.failed.items())})" if failed else "")
        + ".",
        f"From the first sample after the warm-up (t={warm['t_s']} s) to the last: "
        f"RSS {rss_growth:+.1f} MiB, MLX memory {mlx_growth:+.2f} MiB.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the baseline sample")
    parser.add_argument("--model", default=str(DEMO))
    parser.add_argument("--max-requests", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--url", help="use this running server (with --pid) instead of starting one")
    parser.add_argument("--pid", type=int, help="the running server's process id, for its RSS")
    parser.add_argument("--max-growth-mb", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the samples and counts as JSON")
    args = parser.parse_args()

    proc = None
    if args.url:
        if args.pid is None:
            parser.error("--url needs --pid (the server's process id, for its RSS)")
        url, pid = args.url.rstrip("/"), args.pid
    else:
        proc, url = start_server(args)
        pid = proc.pid
    try:
        traffic = Traffic(url, args.clients, args.seed)
        started = time.monotonic()
        traffic.start()
        samples, warm = [sample(url, pid, started)], None
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
            samples.append(sample(url, pid, started))
            print(json.dumps(samples[-1]), flush=True)
            if warm is None and samples[-1]["t_s"] >= args.warmup:
                warm = samples[-1]
        traffic.join()
        time.sleep(1)
        samples.append(sample(url, pid, started))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    warm = warm or samples[0]
    last = samples[-1]
    text = report(args, samples, traffic, warm, last)
    print(text)
    if traffic.failures:
        print("\nFirst failures:\n" + "\n".join(traffic.failures))
    if args.out:
        counts = {"done": dict(traffic.done), "failed": dict(traffic.failed)}
        args.out.write_text(json.dumps({"samples": samples, "counts": counts}, indent=1))
    grew = max(last["rss_mb"] - warm["rss_mb"], last["mlx_mb"] - warm["mlx_mb"])
    idle = last["active"] == 0 and last["queued"] == 0
    return 0 if not traffic.failed and grew <= args.max_growth_mb and idle else 1


if __name__ == "__main__":
    sys.exit(main())
