"""Ollama wire types: requests as accepted, responses as the ollama client reads them.

Field names mirror Ollama's API (``docs/api.md``) and ollama-python's ``_types``.
Unknown request fields and options are ignored; invalid ones become 400 errors
``{"error": "..."}``.
"""

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlxserve.schemas.openai import MAX_STOP_SEQUENCES, FunctionDefinition


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(_Request):
    """The sampling ``options`` mlxserve honours (others, such as ``num_ctx``, are ignored)."""

    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    num_predict: Optional[int] = Field(None, ge=-2)
    """Most tokens to generate; -1 (no limit) and -2 (fill the context) mean the server's cap."""
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    repeat_penalty: Optional[float] = Field(None, gt=0)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)

    @field_validator("num_predict")
    @classmethod
    def _no_zero(cls, value):
        if value == 0:
            raise ValueError("num_predict must be positive, or -1 for the server's limit.")
        return value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed.")
        if any(s == "" for s in stops):
            raise ValueError("Stop sequences must not be empty.")
        return value


class ToolCallFunction(_Request):
    name: str
    arguments: dict = {}
    """The arguments as an object (not JSON text, unlike OpenAI)."""


class ToolCall(_Request):
    function: ToolCallFunction


def _refuse_images(value):
    if value:
        raise ValueError("Images are not supported by this server: send text only.")
    return value


class Message(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: Optional[list[str]] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_name: Optional[str] = None

    _no_images = field_validator("images")(_refuse_images)


class Tool(_Request):
    type: Literal["function"] = "function"
    function: FunctionDefinition


Format = Union[Literal["", "json"], dict]


class _GenerateFields(_Request):
    model: Optional[str] = None
    """Any name is accepted; the loaded model answers and is named in the response."""
    format: Optional[Format] = None
    """``"json"`` or a JSON Schema: the answer is JSON (of that schema)."""
    options: Optional[Options] = None
    stream: bool = True
    think: Optional[Union[bool, Literal["low", "medium", "high"]]] = None
    """``false`` leaves the model's reasoning out of the answer; otherwise it is in ``thinking``."""


class ChatRequest(_GenerateFields):
    """``POST /api/chat``. No messages only asks to load the model."""

    messages: list[Message] = []
    tools: Optional[list[Tool]] = None


class GenerateRequest(_GenerateFields):
    """``POST /api/generate``. No prompt only asks to load the model."""

    prompt: str = ""
    system: Optional[str] = None
    raw: bool = False
    """The prompt as is, without the chat template."""
    template: Optional[str] = None
    suffix: Optional[str] = None
    images: Optional[list[str]] = None

    @field_validator("template")
    @classmethod
    def _no_template(cls, value):
        if value:
            raise ValueError(
                "Custom Go templates are not supported: the model's own chat template is "
                "applied, or none with raw: true."
            )
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value):
        if value:
            raise ValueError("suffix (fill-in-the-middle) is not supported by this server.")
        return value

    _no_images = field_validator("images")(_refuse_images)


class EmbedRequest(_Request):
    """``POST /api/embed``."""

    model: Optional[str] = None
    input: Union[str, list[str]]
    dimensions: Optional[int] = Field(None, ge=1)


class EmbeddingsRequest(_Request):
    """``POST /api/embeddings``, the older single-prompt form."""

    model: Optional[str] = None
    prompt: str


class ShowRequest(_Request):
    model: Optional[str] = None
    name: Optional[str] = None
    """The older spelling of ``model``."""


# ---- responses ----

DoneReason = Literal["stop", "length", "load"]


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = "mlx"
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class ListedModel(BaseModel):
    """An entry of ``/api/tags``."""

    name: str
    model: str
    modified_at: str
    size: int
    """Bytes of weights on disk."""
    digest: str
    details: ModelDetails


class RunningModel(ListedModel):
    """An entry of ``/api/ps``."""

    expires_at: str
    size_vram: int
    context_length: int


class ResponseToolCall(BaseModel):
    function: ToolCallFunction


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = ""
    thinking: Optional[str] = None
    tool_calls: Optional[list[ResponseToolCall]] = None


class Timings(BaseModel):
    """Ollama's counts and durations (nanoseconds) of a finished answer."""

    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class _Chunk(BaseModel):
    """Fields of every chunk; the last (``done``) adds the reason and the timings."""

    model: str
    created_at: str
    done: bool
    done_reason: Optional[DoneReason] = None
    total_duration: Optional[int] = None
    load_duration: Optional[int] = None
    prompt_eval_count: Optional[int] = None
    prompt_eval_duration: Optional[int] = None
    eval_count: Optional[int] = None
    eval_duration: Optional[int] = None
    context_dropped_messages: Optional[int] = None
    """mlxserve extension, on the last chunk: messages the context window left out (only when it
    left some out)."""
    context_dropped_tokens: Optional[int] = None
    """mlxserve extension, on the last chunk: the prompt tokens those messages would have taken."""


class ChatResponse(_Chunk):
    message: ResponseMessage


class GenerateResponse(_Chunk):
    response: str
    thinking: Optional[str] = None


class TagsResponse(BaseModel):
    """``/api/tags``: every model a request may name."""

    models: list[ListedModel]


class PsResponse(BaseModel):
    """``/api/ps``: the loaded models."""

    models: list[RunningModel]


class VersionResponse(BaseModel):
    version: str


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    prompt_eval_count: int


class EmbeddingsResponse(BaseModel):
    embedding: list[float]


class ShowResponse(BaseModel):
    """``/api/show``: details, the chat template, capabilities and ``model_info``."""

    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict
    capabilities: list[str]
    modified_at: str
