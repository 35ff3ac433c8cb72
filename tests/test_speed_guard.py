"""CI regression guard: single-stream decode through mlxserve stays within 90% of raw mlx-lm.

Both run on this machine in the same test, turn about (raw in-process, mlxserve as a real
server subprocess read over HTTP streaming, as scripts/bench.py does), on a small
random-weight Llama whose tokens cost real compute. The best run of each is compared, so
that load from other processes, which only ever slows a run down, does not fail the test:
on a busy machine it takes more pairs of runs (up to a time budget) before it passes,
while a real slowdown never reaches the floor.
"""

import importlib.util
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx_lm

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
MIN_PAIRS = 3
BUDGET_S = 40.0
MAX_TOKENS = 64
FLOOR = 0.90


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPTS / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench", module)
    spec.loader.exec_module(module)
    return module


def test_mlxserve_decodes_at_least_90_percent_as_fast_as_raw(tmp_path):
    bench = load_bench()
    path = bench.build_random_model("tiny")
    model, tokenizer = mlx_lm.load(str(path))
    prompt = bench.make_prompt(tokenizer, 32)
    ids = mx.array(tokenizer.encode(prompt))
    raw, served = [], []
    with bench.running_server(
        "mlxserve", str(path), MAX_TOKENS, tmp_path, ["--prompt-cache-size", "0"]
    ) as url:
        bench.stream_completion(url, prompt, MAX_TOKENS)  # warm-ups
        bench.raw_run(model, tokenizer, ids, MAX_TOKENS)
        deadline = time.monotonic() + BUDGET_S
        while True:
            raw.append(bench.raw_run(model, tokenizer, ids, MAX_TOKENS))
            served.append(bench.stream_completion(url, prompt, MAX_TOKENS))
            best_raw = max(r["decode_tps"] for r in raw)
            best_served = max(r["decode_tps"] for r in served)
            ratio = best_served / best_raw
            if len(raw) >= MIN_PAIRS and (ratio >= FLOOR or time.monotonic() > deadline):
                break
    assert all(r["tokens"] == MAX_TOKENS for r in raw + served)
    print(f"decode, best of {len(raw)}: raw {best_raw:.1f} tok/s, mlxserve {best_served:.1f} tok/s"
          f" ({ratio:.1%})")
    assert ratio >= FLOOR, (
        f"mlxserve decodes at {ratio:.1%} of raw mlx-lm ({best_served:.1f} vs {best_raw:.1f} tok/s)"
    )
