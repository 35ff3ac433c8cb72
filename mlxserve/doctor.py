"""``mlxserve doctor``: is this machine ready to serve, and if not, what to do about it.

Each check returns a :class:`Check` (PASS, WARN or FAIL, what it found, and a fix);
:func:`run_checks` runs them all in order and :func:`report` prints them. The
checks only look: they start, download and change nothing.
"""

import importlib.metadata
import os
import platform
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, TextIO

from mlxserve.config import Settings
from mlxserve.models import ModelInfo, find_model
from mlxserve.service_mgr import health
from mlxserve.service_mgr.manager import ServiceError, ServiceManager

Level = Literal["PASS", "WARN", "FAIL"]
GB = 10**9
# Below this much free disk in the Hugging Face cache, downloads may fail.
MIN_FREE_DISK = 5 * GB
# Weights above this share of the memory MLX may use leave too little for the KV cache.
WEIGHTS_SHARE_WARN = 0.75


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes:
        name: What was checked.
        level: ``PASS``, ``WARN`` (works, but worth knowing) or ``FAIL`` (will not work).
        detail: What was found.
        fix: What to do about a WARN or FAIL.
    """

    name: str
    level: Level
    detail: str
    fix: str = ""


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / 10**6:.1f} MB"


def check_platform(system: str, machine: str, macos: str, metal: bool, cuda: bool) -> Check:
    """Apple Silicon with Metal is the target; elsewhere, say which backend MLX uses."""
    if system == "Darwin":
        where = f"macOS {macos} on {machine}"
        if machine != "arm64":
            return Check(
                "platform", "FAIL", f"{where}: MLX needs Apple Silicon",
                "run mlxserve on an Apple Silicon Mac (M1 or later)",
            )
        if not metal:
            return Check(
                "platform", "FAIL", f"{where}, but MLX sees no Metal GPU",
                "update macOS (MLX needs 14.0 or later) and reinstall mlx: pip install -U mlx",
            )
        return Check("platform", "PASS", f"{where}, Metal GPU visible to MLX")
    backend = "CUDA" if cuda else "CPU"
    detail = f"{system} {machine}: MLX runs on its {backend} backend (no Metal)"
    if cuda:
        return Check("platform", "PASS", detail)
    return Check(
        "platform", "WARN", detail + "; generation is much slower than on Apple Silicon",
        "for speed, serve on an Apple Silicon Mac, or install the CUDA backend: "
        "pip install 'mlxserve[cuda]'",
    )


def check_versions(versions: dict[str, Optional[str]]) -> Check:
    """mlx and mlx-lm must be importable; their versions are reported."""
    missing = [name for name, version in versions.items() if version is None]
    detail = ", ".join(f"{name} {version or 'missing'}" for name, version in versions.items())
    if missing:
        return Check("versions", "FAIL", detail, f"pip install -U {' '.join(missing)}")
    return Check("versions", "PASS", detail)


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def check_model(model: str, info: Optional[ModelInfo]) -> Check:
    """The model is there: an alias, a local MLX model directory, or a repo id in the HF cache."""
    if info is not None:
        return Check("model", "PASS", f"{info.path} ({info.source}, {_gb(info.size_bytes)})")
    if looks_like_path(model):
        path = Path(model).expanduser()
        found = "does not exist"
        if path.exists():
            found = "is not an MLX model (no config.json or *.safetensors)"
        return Check(
            "model", "FAIL", f"{model} {found}",
            "give --model an MLX model directory, an alias, or a Hugging Face repo id "
            "(e.g. mlx-community/Qwen3-0.6B-4bit)",
        )
    return Check(
        "model", "WARN", f"{model} is not downloaded yet",
        f"the first `mlxserve serve` downloads it (needs the network), or: mlxserve pull {model}",
    )


def check_memory(weights: int, limit: int, available: Optional[int]) -> Check:
    """The weights fit in the memory MLX may use, with room left for the KV cache."""
    detail = f"weights {_gb(weights)}, MLX may use {_gb(limit)}"
    if available is not None:
        detail += f", {_gb(available)} free now"
    if weights > limit:
        return Check(
            "memory", "FAIL", detail + ": the model does not fit",
            "serve a smaller or more quantized model (e.g. a -4bit one)",
        )
    if weights > WEIGHTS_SHARE_WARN * limit or (available is not None and weights > available):
        return Check(
            "memory", "WARN", detail + ": little room is left for the KV cache",
            "close other apps, lower --max-context-tokens, or serve a smaller model",
        )
    return Check("memory", "PASS", detail)


def check_hf_cache(cache_dir: Path, free: Optional[int]) -> Check:
    """The Hugging Face cache is writable and its disk has room for downloads."""
    existing = next((p for p in [cache_dir, *cache_dir.parents] if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        return Check(
            "hf-cache", "FAIL", f"{cache_dir} is not writable",
            "set HF_HOME to a writable folder, or fix the folder's permissions",
        )
    detail = f"{cache_dir}" + (f", {_gb(free)} free on its disk" if free is not None else "")
    if free is not None and free < MIN_FREE_DISK:
        return Check(
            "hf-cache", "WARN", detail, "free disk space, or set HF_HOME to a bigger disk"
        )
    return Check("hf-cache", "PASS", detail)


def check_port(host: str, port: int, probe: health.Probe, bindable: bool) -> Check:
    """The port is free, or mlxserve holds it; another program holding it is a failure."""
    where = f"{host}:{port}"
    if probe.state == "foreign":
        return Check(
            "port", "FAIL", f"{where}: {probe.detail}",
            f"stop that program, or serve on another port: --port {port + 1}",
        )
    if probe.state == "down":
        if bindable:
            return Check("port", "PASS", f"{where} is free")
        return Check(
            "port", "FAIL", f"{where} is taken (cannot listen on it) but nothing answers HTTP",
            f"serve on another port: --port {port + 1}",
        )
    return Check("port", "PASS", f"{where} is held by mlxserve ({probe.detail})")


def check_service(status: Optional[object], error: str = "") -> Check:
    """What launchd/systemd say about the per-user service (installing it is optional)."""
    if status is None:
        return Check("service", "WARN", f"cannot ask the service manager: {error}")
    if not status.installed:
        return Check("service", "PASS", f"not installed ({status.path}; optional)")
    pid = f", pid {status.pid}" if status.pid else ""
    detail = f"{status.path}: loaded {'yes' if status.loaded else 'no'}{pid}, state {status.state}"
    if not status.loaded:
        return Check("service", "WARN", detail, "mlxserve service start")
    return Check("service", "PASS", detail)


def check_server(
    address: str, probe: health.Probe, body: Optional[dict], seconds: float
) -> Check:
    """A live ``/healthz`` round trip, and what the server says about its model."""
    if probe.state == "down":
        return Check(
            "server", "WARN", f"no server answers at {address}",
            "start one: mlxserve serve (or mlxserve service install)",
        )
    if probe.state == "foreign":
        return Check("server", "FAIL", f"{address}: {probe.detail}", "see the port line")
    if probe.state == "failed":
        return Check(
            "server", "FAIL", f"{address}: {probe.detail}",
            "check --model and the logs (mlxserve service logs)",
        )
    if probe.state == "loading":
        return Check("server", "WARN", f"{address}: {probe.detail}", "wait, then run doctor again")
    detail = f"{address}: {probe.detail}, /healthz in {seconds * 1000:.0f} ms"
    broken = [k for k in ("tool_calling", "reasoning") if (body or {}).get(k) == "broken"]
    if broken:
        return Check(
            "server", "WARN", detail + f"; self-test: {', '.join(broken)} broken",
            "the model's chat template or parser does not round-trip its own format: "
            "check the model's tokenizer_config.json, or update mlx-lm",
        )
    if body:
        detail += "".join(f", {k} {body[k]}" for k in ("tool_calling", "reasoning") if k in body)
    return Check("server", "PASS", detail)


# ---- facts about this machine (side-effect free reads) ----


def _version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _available_memory() -> Optional[int]:
    """Memory free for new work: MemAvailable on Linux; None where it cannot be read cheaply."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _health_body(host: str, port: int) -> tuple[Optional[dict], float]:
    import http.client
    import json

    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(health.probe_host(host), port, timeout=3)
    try:
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read(1 << 16))
        return (body if isinstance(body, dict) else None), time.perf_counter() - t0
    except (OSError, ValueError, http.client.HTTPException):
        return None, time.perf_counter() - t0
    finally:
        conn.close()


def run_checks(settings: Settings, service_manager: Callable = ServiceManager) -> list[Check]:
    """Every check, in order, for the server ``settings`` describe."""
    from huggingface_hub import constants

    checks = []
    try:
        import mlx.core as mx

        metal = mx.metal.is_available()
        cuda = bool(getattr(mx, "cuda", None) and mx.cuda.is_available())
        limit = mx.get_memory_limit()
        info = mx.device_info()
        recommended = info.get("max_recommended_working_set_size")
        limit = min(limit, recommended) if recommended else limit
    except ImportError:
        metal = cuda = False
        limit = 0
    checks.append(
        check_platform(
            platform.system(), platform.machine(), platform.mac_ver()[0], metal, cuda
        )
    )
    checks.append(check_versions({name: _version(name) for name in ("mlx", "mlx-lm")}))

    info = find_model(settings.model)
    checks.append(check_model(settings.model, info))
    if info is not None and limit:
        budget = int(settings.memory_limit * GB) if settings.memory_limit else limit
        checks.append(check_memory(info.size_bytes, budget, _available_memory()))
    cache_dir = Path(constants.HF_HUB_CACHE)
    existing = next((p for p in [cache_dir, *cache_dir.parents] if p.exists()), None)
    free = shutil.disk_usage(existing).free if existing else None
    checks.append(check_hf_cache(cache_dir, free))

    probe = health.probe(settings.host, settings.port)
    bindable = probe.state != "down" or _bindable(settings.host, settings.port)
    checks.append(check_port(settings.host, settings.port, probe, bindable))
    try:
        checks.append(check_service(service_manager().status()))
    except (ServiceError, OSError) as exc:
        checks.append(check_service(None, str(exc)))
    body, seconds = None, 0.0
    if probe.state != "down":
        body, seconds = _health_body(settings.host, settings.port)
    address = f"http://{health.probe_host(settings.host)}:{settings.port}"
    checks.append(check_server(address, probe, body, seconds))
    return checks


def report(checks: list[Check], out: Optional[TextIO] = None) -> int:
    """Print one line per check (and its fix); returns the exit status: 1 if any FAIL."""
    out = out or sys.stdout
    width = max(len(c.name) for c in checks)
    for c in checks:
        out.write(f"{c.level}  {c.name:<{width}}  {c.detail}\n")
        if c.fix and c.level != "PASS":
            out.write(f"{'':>{len(c.level)}}  {'':<{width}}  fix: {c.fix}\n")
    failed = sum(c.level == "FAIL" for c in checks)
    warned = sum(c.level == "WARN" for c in checks)
    out.write(f"\n{failed} failed, {warned} warnings, {len(checks) - failed - warned} passed\n")
    return 1 if failed else 0
