"""What a model directory says about the model: family, size, parameters, template.

Pure file reads (``config.json``, the tokenizer config, ``generation_config.json``
and the safetensors headers), no MLX: the Ollama routes describe models with it,
loaded or not.
"""

import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class ModelCard:
    family: str
    """The architecture (``model_type``), e.g. ``qwen3``."""
    parameters: int
    quantization: str
    """``Q4`` (4-bit weights), or the weights' float type (``F16``, ``BF16``...)."""
    size: int
    """Bytes of weights on disk."""
    digest: str
    """sha256 of the config and the weight files' names and sizes: changes with the model."""
    modified_at: str
    """RFC 3339 time of the newest weight file."""
    template: str
    """The chat template (Jinja), or ``""``."""
    capabilities: tuple[str, ...]
    """Ollama names: ``completion``, plus ``tools`` and ``thinking`` if the template has them."""
    sampling: dict
    """The sampling defaults of ``generation_config.json`` (temperature, top_p, top_k)."""


def parameter_size(count: int) -> str:
    """Ollama's way of writing a parameter count: ``8.0B``, ``596.0M``, ``12.3K``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def _headers(path: Path) -> dict:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def _parameters(tensors: dict, bits: int) -> int:
    """Parameters behind the tensors; quantized weights pack 32/bits of them per uint32."""
    total = 0
    for name, info in tensors.items():
        if name == "__metadata__" or name.endswith((".scales", ".biases")):
            continue
        count = 1
        for n in info["shape"]:
            count *= n
        packed = (
            bits
            and name.endswith(".weight")
            and name.removesuffix(".weight") + ".scales" in tensors
        )
        total += count * (32 // bits) if packed else count
    return total


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def chat_template(model_dir: Path) -> str:
    """The model's chat template: ``chat_template.jinja``, else the tokenizer config's."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = _read_json(model_dir / "tokenizer_config.json").get("chat_template") or ""
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), "")
    return template


def capabilities(template: str) -> tuple[str, ...]:
    """What a chat template supports, in Ollama's words."""
    found = ["completion"]
    found += ["tools"] if "tools" in template else []
    found += ["thinking"] if "<think>" in template else []
    return tuple(found)


@lru_cache(maxsize=64)
def read_model_card(model_dir: Path) -> ModelCard:
    """The card of the MLX model in ``model_dir``."""
    config_text = (model_dir / "config.json").read_text()
    config = json.loads(config_text)
    quant = config.get("quantization") or {}
    bits = int(quant.get("bits", 0))
    files = sorted(model_dir.glob("*.safetensors"))
    tensors: dict = {}
    for f in files:
        tensors.update(_headers(f))
    dtypes = {info["dtype"] for name, info in tensors.items() if name != "__metadata__"}
    floats = sorted(d for d in dtypes if d.startswith(("F", "BF")))
    digest = hashlib.sha256(config_text.encode())
    for f in files:
        digest.update(f"{f.name}:{f.stat().st_size}".encode())
    newest = max((f.stat().st_mtime for f in files), default=0)
    template = chat_template(model_dir)
    generation = _read_json(model_dir / "generation_config.json")
    return ModelCard(
        family=config.get("model_type", "unknown"),
        parameters=_parameters(tensors, bits),
        quantization=f"Q{bits}" if bits else (floats[0] if floats else "unknown"),
        size=sum(f.stat().st_size for f in files),
        digest=digest.hexdigest(),
        modified_at=datetime.fromtimestamp(newest, timezone.utc).isoformat().replace("+00:00", "Z"),
        template=template,
        capabilities=capabilities(template),
        sampling={k: generation[k] for k in ("temperature", "top_p", "top_k") if k in generation},
    )
