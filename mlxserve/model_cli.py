"""``mlxserve pull | ls | rm | run``: the models on this machine, from the terminal."""

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, TextIO

from mlxserve.models import ago, available_models, hf_cache_models, is_mlx_model

DEFAULT_URL = "http://127.0.0.1:8080"


def add_model_commands(commands) -> None:
    """Add ``pull``, ``ls``, ``rm`` and ``run`` to the top-level subcommands."""
    pull = commands.add_parser("pull", help="Download an MLX model from the Hugging Face hub.")
    pull.add_argument("repo", help="Repo id, e.g. mlx-community/Qwen3-0.6B-4bit")
    commands.add_parser("ls", help="List the models on this machine (aliases, Hugging Face cache).")
    rm = commands.add_parser("rm", help="Delete a model from the Hugging Face cache.")
    rm.add_argument("repo", help="Repo id as `mlxserve ls` shows it")
    run = commands.add_parser(
        "run", help="Chat with a model in the terminal (via a running server, else in-process)."
    )
    run.add_argument("model", help="Model name, alias, repo id or path")
    run.add_argument("--url", default=DEFAULT_URL, help=f"Server to use (default {DEFAULT_URL})")
    run.add_argument("--api-key", default=None, help="API key for the server")


def run_command(args: argparse.Namespace) -> int:
    return {"pull": pull, "ls": ls, "rm": rm, "run": run}[args.command](args)


def pull(args) -> int:
    """Download (or resume) a repo's model files; fail unless it is an MLX model."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from mlxserve.engine import MODEL_FILE_PATTERNS

    try:
        path = snapshot_download(args.repo, allow_patterns=MODEL_FILE_PATTERNS)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        print(f"mlxserve: cannot download {args.repo}: {exc}", file=sys.stderr)
        return 1
    if not is_mlx_model(Path(path)):
        print(
            f"mlxserve: {args.repo} is not an MLX model (no config.json with safetensors weights). "
            "Look for an MLX conversion, e.g. under mlx-community/.",
            file=sys.stderr,
        )
        return 1
    print(f"{args.repo}: ready at {path}")
    return 0


def ls(args) -> int:
    """A table of every model a request may name."""
    rows = [("NAME", "SIZE", "QUANT", "ARCH", "CONTEXT", "LAST USED")]
    for m in available_models():
        rows.append(
            (
                m.id,
                _size(m.size_bytes),
                m.quantization or "-",
                m.architecture or "-",
                str(m.context_length or "-"),
                ago(m.last_used),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def rm(args) -> int:
    """Delete every cached revision of a repo."""
    from huggingface_hub import constants, scan_cache_dir

    if not any(m.id == args.repo for m in hf_cache_models()):
        print(f"mlxserve: {args.repo} is not in the Hugging Face cache (see `mlxserve ls`).", file=sys.stderr)
        return 1
    cache = scan_cache_dir(constants.HF_HUB_CACHE)
    repo = next(r for r in cache.repos if r.repo_id == args.repo and r.repo_type == "model")
    strategy = cache.delete_revisions(*(r.commit_hash for r in repo.revisions))
    strategy.execute()
    print(f"deleted {args.repo} ({_size(strategy.expected_freed_size)})")
    return 0


def run(args) -> int:
    """Chat turn by turn; the answer streams in. An empty line or EOF or /bye ends it."""
    stdin, out = sys.stdin, sys.stdout
    url = args.url.rstrip("/")
    server = None
    if not _answers(url):
        server, url = _start_in_process(args.model, out)
        if server is None:
            return 1
    messages = []
    interactive = stdin.isatty()
    try:
        while True:
            if interactive:
                out.write(">>> ")
                out.flush()
            line = stdin.readline()
            if not line or line.strip() in ("", "/bye"):
                return 0
            messages.append({"role": "user", "content": line.rstrip("\n")})
            answer = _stream_answer(url, args.model, messages, args.api_key, out)
            if answer is None:
                return 1
            messages.append({"role": "assistant", "content": answer})
    finally:
        if server is not None:
            server.should_exit = True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # something is there (loading, or not ok): talk to it
    except (urllib.error.URLError, OSError):
        return False


def _start_in_process(model: str, out: TextIO):
    """A server for ``model`` on a free loopback port, in this process; (server, url)."""
    import uvicorn

    from mlxserve.app import create_app
    from mlxserve.config import Settings

    print(f"(no server at the given URL: loading {model} here)")
    app = create_app(Settings(model=model, port=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    while True:
        state = app.state.service.health()["status"]
        if state == "ok":
            return server, url
        if state != "loading":
            print(f"mlxserve: {model} failed to load", file=sys.stderr)
            server.should_exit = True
            return None, url
        time.sleep(0.1)


def _stream_answer(url, model, messages, api_key, out: TextIO) -> Optional[str]:
    body = json.dumps({"model": model, "messages": messages, "stream": True}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url + "/v1/chat/completions", body, headers)
    answer = []
    try:
        with urllib.request.urlopen(request) as response:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: "):])
                if "error" in chunk:
                    print(f"\nmlxserve: {chunk['error']['message']}", file=sys.stderr)
                    return None
                delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
                text = delta.get("content") or ""
                answer.append(text)
                out.write(text)
                out.flush()
    except urllib.error.HTTPError as exc:
        print(f"mlxserve: {json.loads(exc.read())['error']['message']}", file=sys.stderr)
        return None
    out.write("\n")
    return "".join(answer)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
