"""Server settings, declared once.

Each field becomes a ``--flag`` of ``mlxserve serve`` (see ``cli.py``) and an
``MLXSERVE_<FIELD>`` environment variable; its description is the ``--help``
text. Precedence: flags > environment > defaults.
"""

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "mlx-community/Qwen3-0.6B-4bit"
DEMO_MODEL_PATH = Path(__file__).parent / "demo_model"
DEMO_MODEL_NAME = "mlxserve-demo"


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
    max_requests: int = Field(1, ge=1, description="Generations running at once.")
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

    @property
    def model_name(self) -> str:
        """The id the API reports for the loaded model."""
        return self.served_model_name or self.model
