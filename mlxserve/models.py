"""Which models exist on this machine, and which one a request's ``model`` names.

Pure discovery, no MLX: aliases from ``~/.config/mlxserve/models.yaml``
(``name: path-or-repo``), local MLX model directories, and MLX models in the
Hugging Face cache (listed by repo id). :func:`find_model` resolves a name the
way the server does after checking the loaded models.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from mlxserve.config import config_path

ALIASES_FILE = "models.yaml"


@dataclass(frozen=True)
class ModelInfo:
    """A model that can be served.

    Attributes:
        id: The name clients use: an alias, a repo id or a path.
        path: Its local directory.
        source: ``alias``, ``hf-cache`` or ``local``.
        size_bytes: Bytes on disk (weights and all).
        architecture: mlx-lm's ``model_type``.
        quantization: For example ``4-bit`` (group size 64), or ``None`` for full precision.
        context_length: Tokens of context the model was made for.
        last_used: When its files were last read (seconds since the epoch), when known.
    """

    id: str
    path: Path
    source: str
    size_bytes: int = 0
    architecture: Optional[str] = None
    quantization: Optional[str] = None
    context_length: Optional[int] = None
    last_used: Optional[float] = None


def is_mlx_model(path: Path) -> bool:
    """Whether ``path`` is a directory holding a model mlx-lm can load."""
    try:
        return (path / "config.json").is_file() and any(path.glob("*.safetensors"))
    except OSError:  # a name no file system takes (too long, say) names no model
        return False


def read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def quantization_of(config: dict) -> Optional[str]:
    q = config.get("quantization") or config.get("quantization_config") or {}
    bits = q.get("bits") if isinstance(q, dict) else None
    return f"{bits}-bit" if bits else None


def describe(model_id: str, path: Path, source: str, *, size=None, last_used=None) -> ModelInfo:
    """A :class:`ModelInfo` for the model in ``path``, from its config and files."""
    from mlxserve.engine import context_length  # pure helper; engine imports stay lazy

    config = read_config(path)
    if size is None:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return ModelInfo(
        id=model_id,
        path=path,
        source=source,
        size_bytes=size,
        architecture=config.get("model_type"),
        quantization=quantization_of(config),
        context_length=context_length(config) if config else None,
        last_used=last_used,
    )


def aliases_path() -> Path:
    """``models.yaml`` next to the config file."""
    return config_path().parent / ALIASES_FILE


def read_aliases(path: Optional[Path] = None) -> dict[str, str]:
    """``name: path-or-repo`` pairs; a missing file means none.

    Raises:
        ValueError: The file is not a mapping of names to strings.
    """
    path = path or aliases_path()
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read model aliases {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"model aliases {path} must map names to paths or repo ids")
    return data


def hf_cache_models() -> list[ModelInfo]:
    """MLX models in the Hugging Face cache, newest snapshot of each, by repo id."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(constants.HF_HUB_CACHE)
    except CacheNotFound:
        return []
    found = []
    for repo in cache.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        if is_mlx_model(revision.snapshot_path):
            found.append(
                describe(
                    repo.repo_id,
                    revision.snapshot_path,
                    "hf-cache",
                    size=repo.size_on_disk,
                    last_used=repo.last_accessed,
                )
            )
    return sorted(found, key=lambda m: m.id)


def available_models() -> list[ModelInfo]:
    """Every model a request may name: aliases first, then the Hugging Face cache."""
    models = {}
    for name, target in read_aliases().items():
        path = resolve_target(target)
        if path is not None:
            models[name] = describe(name, path, "alias")
    for info in hf_cache_models():
        models.setdefault(info.id, info)
    return list(models.values())


def resolve_target(target: str) -> Optional[Path]:
    """The local directory of a path or a cached repo id, or ``None``."""
    path = Path(target).expanduser()
    if is_mlx_model(path):
        return path
    for info in hf_cache_models():
        if info.id == target:
            return info.path
    return None


def find_model(name: str) -> Optional[ModelInfo]:
    """What ``name`` means: an alias, a local MLX model directory, or a cached repo id."""
    aliases = read_aliases()
    if name in aliases:
        path = resolve_target(aliases[name])
        return describe(name, path, "alias") if path else None
    path = Path(name).expanduser()
    if is_mlx_model(path):
        return describe(name, path, "local")
    for info in hf_cache_models():
        if info.id == name:
            return info
    return None


def ago(timestamp: Optional[float]) -> str:
    """``3 days ago``-style text for ``mlxserve ls``."""
    if not timestamp:
        return "-"
    seconds = max(0, time.time() - timestamp)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"
