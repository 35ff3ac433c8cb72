"""mlxserve: a local, OpenAI-compatible LLM server built on MLX."""

__version__ = "0.1.0"
