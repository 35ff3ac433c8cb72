"""Server settings, declared once.

Each field becomes a ``--flag`` of ``mlxserve serve`` (see ``cli.py``) and an
``MLXSERVE_<FIELD>`` environment variable and a key of the config file
(``~/.config/mlxserve/config.toml``); its description is the ``--help`` text.
Precedence: flags > environment > config file > defaults.
"""

import os
import sys
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DEFAULT_MODEL = "mlx-community/Qwen3-0.6B-4bit"
PROTOCOLS = ("openai", "anthropic", "ollama")
DEMO_MODEL_PATH = Path(__file__).parent / "demo_model"
DEMO_MODEL_NAME = "mlxserve-demo"
CONFIG_ENV = "MLXSERVE_CONFIG"
KV_BITS = (2, 3, 4, 5, 6, 8)  # the bit widths MLX quantizes to


class ConfigFileError(ValueError):
    """The config file is missing (when named explicitly), unreadable, or has an unknown key."""


def config_path() -> Path:
    """The config file: ``$MLXSERVE_CONFIG``, else ``$XDG_CONFIG_HOME/mlxserve/config.toml``."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
    return base / "mlxserve" / "config.toml"


def read_key_file(path: Path) -> list[str]:
    """The keys in an API key file: one per line, blank lines and ``#`` comments skipped."""
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read API key file {path}: {exc.strerror}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"API key file {path} holds no key")
    return keys


RATE_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """``"N/min"`` (or ``N/s``, ``N/h``) as (requests, per seconds).

    Raises:
        ValueError: Not of that form, or N is not a positive integer.
    """
    count, _, period = text.strip().partition("/")
    seconds = RATE_PERIODS.get(period.strip().lower())
    if not count.strip().isdigit() or int(count) < 1 or seconds is None:
        raise ValueError(f"rate limit {text!r} must look like 60/min (or N/s, N/h) with N >= 1")
    return int(count), seconds


def _names(value: Optional[str]) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLXSERVE_", extra="forbid")

    model: str = Field(
        DEFAULT_MODEL,
        description="Hugging Face repo id or local path of an MLX model.",
    )
    served_model_name: Optional[str] = Field(
        None,
        description="Name the API reports for the model (default: the --model value).",
    )
    host: str = Field(
        "127.0.0.1",
        description="Address to listen on. Use 0.0.0.0 only if you mean to expose the server.",
    )
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on (0 = any free port).")
    max_tokens: int = Field(
        4096, ge=1, description="Server-side cap on tokens generated per request."
    )
    default_max_tokens: int = Field(
        512, ge=1, description="Tokens generated when a request sets no max_tokens."
    )
    timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds a generation may run; then it ends with finish_reason 'length'.",
    )
    max_requests: int = Field(
        1, ge=1, description="Generations running at once (above 1: decoded together in one batch)."
    )
    queue_size: int = Field(
        16, ge=0, description="Requests allowed to wait for a free slot (beyond it: 429)."
    )
    queue_timeout: float = Field(
        60.0, gt=0, description="Seconds a request may wait for a slot (beyond it: 503)."
    )
    max_context: int = Field(
        0,
        ge=0,
        description="Sliding window in messages: keep system messages plus the last N (0 = unlimited).",
    )
    max_context_tokens: Optional[int] = Field(
        None,
        ge=1,
        description="Window in tokens for prompt + max_tokens (default: the model's context length).",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted (beyond it: 413)."
    )
    keepalive_interval: float = Field(
        10.0, gt=0, description="Seconds between SSE keep-alive comments while a stream waits."
    )
    drain_timeout: float = Field(
        30.0, ge=0, description="Seconds in-flight requests get to finish on SIGTERM/SIGINT."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Logging level."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as 'text' or as 'json' objects (one per line, with the request id).",
    )
    reasoning: Literal["split", "inline", "hide"] = Field(
        "split",
        description="A thinking model's reasoning: 'split' into reasoning_content, kept 'inline' "
        "in the content with its tags, or 'hide'.",
    )
    model_policy: Literal["loaded", "strict"] = Field(
        "loaded",
        description="A request naming no known model: 'loaded' answers with the loaded model, "
        "'strict' answers 404 model_not_found.",
    )
    max_loaded_models: int = Field(
        1, ge=1, description="Models kept in memory at once; the least recently used is unloaded."
    )
    max_models_memory: Optional[float] = Field(
        None, gt=0, description="GiB the loaded models' weights may take together (default: no limit)."
    )
    api_key: Optional[str] = Field(
        None,
        description="API key clients must send (Authorization: Bearer KEY, or x-api-key); "
        "several keys separated by commas.",
    )
    api_key_file: Optional[Path] = Field(
        None, description="File of API keys, one per line (# starts a comment)."
    )
    protect_metrics: bool = Field(
        False, description="With an API key, /metrics needs the key too (default: it stays open)."
    )
    cors_origin: Optional[str] = Field(
        None,
        description="Web origins (scheme://host:port, comma-separated, or '*') whose pages may "
        "call the API; others are refused with 403 (default: same origin only).",
    )
    allowed_host: Optional[str] = Field(
        None,
        description="Extra Host names accepted while bound to loopback, comma-separated "
        "(always: localhost, 127.0.0.1, [::1]); others get 403 (DNS-rebinding guard).",
    )
    rate_limit: Optional[str] = Field(
        None,
        description="Requests each client (API key, else address) may make, as N/min "
        "(or N/s, N/h); beyond it: 429 with Retry-After (default: no limit).",
    )
    max_json_depth: int = Field(
        64, ge=2, description="Deepest nesting of arrays and objects in a request body (beyond: 400)."
    )
    max_messages: int = Field(
        4096, ge=1, description="Most messages in one chat request (beyond: 400)."
    )
    max_tools: int = Field(256, ge=0, description="Most tools in one request (beyond: 400).")
    protocols: str = Field(
        ",".join(PROTOCOLS),
        description="APIs to serve, comma-separated: openai (/v1/chat/completions...), "
        "anthropic (/v1/messages), ollama (/api/...).",
    )
    on_overflow: Literal["drop", "error"] = Field(
        "drop",
        description="When a chat does not fit the context: 'drop' the oldest messages (and say so "
        "in the X-MLXServe-Context-Dropped header and usage), or answer 400 'error'.",
    )
    memory_limit: Optional[float] = Field(
        None,
        gt=0,
        description="GB (10^9 bytes) of memory MLX may use (mx.set_memory_limit); a request whose "
        "KV cache and activations would not fit gets 503 insufficient_memory (default: MLX's "
        "limit, within the GPU's recommended working set).",
    )
    response_store_size: int = Field(
        256, ge=0, description="Responses kept in memory for previous_response_id (0: none)."
    )
    response_store_ttl: float = Field(
        3600.0, gt=0, description="Seconds a stored response is kept for previous_response_id."
    )

    prompt_cache_size: int = Field(
        8,
        ge=0,
        description="Finished generations whose KV cache is kept, so that a prompt extending "
        "one (the next turn of a chat) prefills only its new tokens (0 = no prompt cache).",
    )
    prompt_cache_bytes: int = Field(
        2 << 30, ge=0, description="Most bytes of KV cache the prompt cache keeps."
    )
    kv_bits: Optional[int] = Field(
        None,
        description="Quantize the KV cache to this many bits: 2, 3, 4, 5, 6 or 8 (less memory, "
        "slightly lower quality; default: full precision).",
    )
    max_kv_size: Optional[int] = Field(
        None,
        ge=1,
        description="Keep at most this many tokens of KV cache per generation, overwriting "
        "the oldest (bounded memory for long generations; default: unbounded).",
    )
    draft_model: Optional[str] = Field(
        None,
        description="A smaller model with the same tokenizer (repo id or path) that drafts "
        "tokens for the model to verify: speculative decoding, same answers, often faster.",
    )
    num_draft_tokens: int = Field(
        3, ge=1, description="Tokens the draft model proposes per step (with --draft-model)."
    )

    _api_keys: list[str] = PrivateAttr(default_factory=list)

    @field_validator("protocols")
    @classmethod
    def _known_protocols(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in PROTOCOLS]
        if unknown or not names:
            raise ValueError(
                f"unknown protocol {', '.join(unknown) or '(none given)'}; "
                f"choose among {', '.join(PROTOCOLS)}"
            )
        return ",".join(names)

    @property
    def protocol_names(self) -> set[str]:
        """The APIs this server speaks."""
        return set(self.protocols.split(","))

    @model_validator(mode="after")
    def _read_api_keys(self):
        keys = [k.strip() for k in (self.api_key or "").split(",") if k.strip()]
        if self.api_key_file is not None:
            keys += read_key_file(self.api_key_file)
        self._api_keys = keys
        return self

    @property
    def api_keys(self) -> list[str]:
        """Every API key the server accepts (none: the API is open)."""
        return self._api_keys

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            parse_rate(value)
        return value

    @property
    def rate(self) -> Optional[tuple[int, float]]:
        """``--rate-limit`` as (requests, per seconds), or ``None`` for no limit."""
        return parse_rate(self.rate_limit) if self.rate_limit else None

    @property
    def cors_origins(self) -> list[str]:
        return _names(self.cors_origin)

    @property
    def allowed_hosts(self) -> list[str]:
        return _names(self.allowed_host)

    @field_validator("kv_bits")
    @classmethod
    def _kv_bits(cls, value: Optional[int]) -> Optional[int]:
        if value is not None and value not in KV_BITS:
            raise ValueError(f"kv_bits must be one of {', '.join(map(str, KV_BITS))}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init arguments) beat the environment, which beats the config file."""
        path = config_path()
        # A file named on purpose must exist; the default location is optional.
        if os.environ.get(CONFIG_ENV) and not path.is_file():
            raise ConfigFileError(f"config file {path} (from ${CONFIG_ENV}) does not exist")
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            _ConfigFileSource(settings_cls, toml_file=path),
            file_secret_settings,
        )

    @property
    def model_name(self) -> str:
        """The id the API reports for the loaded model."""
        return self.served_model_name or self.model


class _ConfigFileSource(TomlConfigSettingsSource):
    """The TOML config file, with flag-style dashed keys accepted and unknown keys named."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigFileError(f"cannot read config file {file_path}: {exc}") from exc
        values = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in Settings.model_fields:
                known = ", ".join(Settings.model_fields)
                raise ConfigFileError(
                    f"unknown key {key!r} in config file {file_path} (known keys: {known})"
                )
            if name in values:
                raise ConfigFileError(f"key {name!r} is set twice in config file {file_path}")
            values[name] = value
        return values
