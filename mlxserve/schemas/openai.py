"""OpenAI wire types: requests as accepted, responses as the openai SDK reads them.

Class and field names mirror openai-python's ``types``. Unknown request fields
are ignored; invalid ones become 400 errors (see ``app.py``).
"""

import json
from typing import ClassVar, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Request):
    """One part of a message's content; only text parts are supported."""

    type: str
    text: Optional[str] = None

    @model_validator(mode="after")
    def _text_only(self):
        if self.type not in ("text", "input_text", "output_text", "refusal"):
            raise ValueError(
                f"Content part type '{self.type}' is not supported by this server: "
                "only text parts are accepted."
            )
        if self.text is None and self.type != "refusal":
            raise ValueError("A text content part needs a 'text' string.")
        return self


class FunctionCall(_Request):
    name: str
    arguments: str = "{}"
    """JSON-encoded arguments, as the model produced them."""


class ToolCall(_Request):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[ContentPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None

    @model_validator(mode="after")
    def _has_content(self):
        if self.content is None and self.role != "assistant":
            raise ValueError(f"A '{self.role}' message needs 'content'.")
        return self

    def text(self) -> str:
        """The content as one string (text parts joined by newlines)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content)

    def to_template(self) -> dict:
        """The message as chat templates expect it: string content, parsed tool arguments."""
        out: dict = {"role": self.role, "content": self.text()}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _parse_arguments(call.function.arguments),
                    },
                }
                for call in self.tool_calls
            ]
        return out


def _parse_arguments(arguments: str):
    """Tool-call arguments as a dict when they are JSON, else the raw string."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionDefinition(_Request):
    name: str = Field(..., pattern=TOOL_NAME_PATTERN)
    description: Optional[str] = None
    parameters: Optional[dict] = None
    """A JSON Schema for the arguments object (absent: no arguments)."""
    strict: Optional[bool] = None

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, value):
        if value is not None:
            check_json_schema(value)
            if value.get("type", "object") != "object":
                raise ValueError("A function's parameters must be a JSON Schema of type 'object'.")
        return value


class ChatTool(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Union[Literal["none", "auto", "required"], NamedToolChoice]


class JSONSchemaFormat(_Request):
    name: str = Field(..., pattern=TOOL_NAME_PATTERN)
    description: Optional[str] = None
    schema_: Optional[dict] = Field(None, alias="schema")
    strict: Optional[bool] = None

    @field_validator("schema_")
    @classmethod
    def _check_schema(cls, value):
        if value is not None:
            check_json_schema(value)
        return value


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs a 'json_schema' object.")
        return self


def check_json_schema(schema: dict) -> None:
    """Raise ``ValueError`` unless ``schema`` is a valid JSON Schema."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(f"Invalid JSON Schema{' at ' + where if where else ''}: {exc.message}") from None


class StreamOptions(_Request):
    include_usage: bool = False


class _SamplingFields(_Request):
    """Fields shared by chat and text completions."""

    model: Optional[str] = None
    """Any name is accepted; the loaded model answers and is named in the response."""
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    repetition_penalty: Optional[float] = Field(None, gt=0)
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    n: Optional[int] = 1
    logit_bias: Optional[dict[str, float]] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value):
        if value is None:
            return value
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed.")
        if any(s == "" for s in stops):
            raise ValueError("Stop sequences must not be empty.")
        return value

    @field_validator("n")
    @classmethod
    def _check_n(cls, value):
        if value not in (None, 1):
            raise ValueError("Only n=1 is supported.")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, value):
        for key, bias in (value or {}).items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"logit_bias keys must be token ids; got {key!r}.")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values must be in [-100, 100]; got {bias}.")
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
THINKING_OFF_EFFORTS = ("none", "minimal")


def thinking_for(effort: Optional[ReasoningEffort]) -> Optional[bool]:
    """The chat template's ``enable_thinking`` for a reasoning effort (``None``: the default).

    "none" and "minimal" turn thinking off; any other effort turns it on. A
    template without the switch ignores it.
    """
    return None if effort is None else effort not in THINKING_OFF_EFFORTS


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    reasoning_effort: Optional[ReasoningEffort] = None
    """Thinking on or off in the chat template (:func:`thinking_for`); unset: its default."""
    logprobs: Optional[bool] = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: Optional[list[ChatTool]] = None
    tool_choice: Optional[ToolChoice] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[ResponseFormat] = None

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true.")
        return self

    @field_validator("tools")
    @classmethod
    def _unique_tool_names(cls, value):
        names = [t.function.name for t in value or []]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Tool names must be unique; repeated: {', '.join(duplicates)}.")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_needs_tools(cls, value, info):
        tools = info.data.get("tools")
        if value is not None and value != "none" and not tools:
            raise ValueError("tool_choice is only allowed when tools are specified.")
        if isinstance(value, NamedToolChoice):
            names = [t.function.name for t in tools]
            if value.function.name not in names:
                raise ValueError(
                    f"tool_choice names the function '{value.function.name}', which is not "
                    f"among the tools ({', '.join(names)})."
                )
        return value

    def offered_tools(self) -> Optional[list[dict]]:
        """The tools for the chat template and the parser: none when tool_choice is "none"."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [t.model_dump(exclude_none=True, by_alias=True) for t in self.tools]

    def requested_max_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingFields):
    prompt: Union[str, list[str], list[int]]
    echo: Optional[bool] = False
    logprobs: Optional[int] = Field(None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("prompt must not be empty.")
            if isinstance(value[0], str):
                if len(value) != 1:
                    raise ValueError("Only one prompt per request is supported.")
                if value[0] == "":
                    raise ValueError("prompt must not be empty.")
        elif value == "":
            raise ValueError("prompt must not be empty.")
        return value

    def requested_max_tokens(self) -> Optional[int]:
        return self.max_tokens


MAX_EMBEDDING_INPUTS = 2048


class EmbeddingRequest(_Request):
    input: Union[str, list[str], list[int], list[list[int]]]
    model: Optional[str] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value):
        items = [value] if isinstance(value, str) or (value and isinstance(value[0], int)) else value
        if not items:
            raise ValueError("input must not be empty.")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"At most {MAX_EMBEDDING_INPUTS} inputs per request.")
        if any(len(item) == 0 for item in items):
            raise ValueError("input must not contain empty strings or token lists.")
        return value

    def items(self) -> list[Union[str, list[int]]]:
        """The inputs as a list: strings or token-id lists."""
        value = self.input
        if isinstance(value, str) or isinstance(value[0], int):
            return [value]
        return list(value)


# ---- responses ----

FinishReason = Literal["stop", "length", "tool_calls"]


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    accepted_prediction_tokens: int = 0
    """Completion tokens a draft model proposed and the model accepted (``--draft-model``)."""
    rejected_prediction_tokens: int = 0
    """Draft tokens the model did not accept; acceptance rate = accepted / (accepted + rejected)."""


CONTEXT_DROPPED_FIELDS = ("context_dropped_messages", "context_dropped_tokens")
"""mlxserve's usage extension: what the context window left out (see :mod:`mlxserve.context`)."""


class OmitsUnset(BaseModel):
    """A wire type whose extension fields stay out of its JSON while they are ``None``."""

    omitted_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler) -> dict:
        out = handler(self)
        for key in self.omitted_when_none:
            if out.get(key) is None:
                out.pop(key, None)
        return out


class Usage(OmitsUnset):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()
    completion_tokens_details: Optional[CompletionTokensDetails] = None
    """Draft-token counts, only when a draft model proposed tokens (``--draft-model``)."""
    context_dropped_messages: Optional[int] = None
    """mlxserve extension: messages the context window left out (only when it left some out)."""
    context_dropped_tokens: Optional[int] = None
    """mlxserve extension: the prompt tokens those messages would have taken."""

    omitted_when_none = CONTEXT_DROPPED_FIELDS + ("completion_tokens_details",)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: Optional[list[TokenLogprob]] = None


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str
    """The arguments as a JSON object, as text."""


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    """The answer; null when the model only called tools."""
    reasoning_content: Optional[str] = None
    """The model's reasoning (its think block), when it has one."""
    tool_calls: Optional[list[ResponseToolCall]] = None


class Choice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    logprobs: Optional[ChoiceLogprobs] = None
    finish_reason: FinishReason

    @field_serializer("message")
    def _no_empty_extras(self, message: ChatCompletionMessage) -> dict:
        """``content`` is always there (null for tool calls only); the extensions only when set."""
        out = message.model_dump(exclude_none=True)
        out.setdefault("content", None)
        return out


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[Choice]
    usage: Usage


class ChoiceDeltaFunctionCall(BaseModel):
    name: Optional[str] = None
    arguments: Optional[str] = None


class ChoiceDeltaToolCall(BaseModel):
    index: int
    id: Optional[str] = None
    type: Optional[Literal["function"]] = None
    function: ChoiceDeltaFunctionCall


class ChoiceDelta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None
    reasoning_content: Optional[str] = None
    tool_calls: Optional[list[ChoiceDeltaToolCall]] = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChoiceDelta
    logprobs: Optional[ChoiceLogprobs] = None
    finish_reason: Optional[FinishReason] = None

    @field_serializer("delta")
    def _only_set_keys(self, delta: ChoiceDelta) -> dict:
        """Deltas carry only what changed, as OpenAI sends them (``{}`` on the last chunk)."""
        return delta.model_dump(exclude_none=True)


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Optional[Usage] = None


class CompletionLogprobs(BaseModel):
    """The legacy completions logprobs shape."""

    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: Optional[FinishReason] = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]
    """Floats, or base64 of little-endian float32 with ``encoding_format: base64``."""


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelDetails(BaseModel):
    """mlxserve's extension to the model object."""

    loaded: bool
    source: str
    """``loaded``, ``alias``, ``hf-cache`` or ``local``."""
    size_bytes: Optional[int] = None
    quantization: Optional[str] = None
    context_length: Optional[int] = None
    architecture: Optional[str] = None
    path: Optional[str] = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mlxserve"
    mlxserve: Optional[ModelDetails] = None


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


SelfTestStatus = Literal["ok", "unsupported", "broken"]


class ModelStatus(BaseModel):
    id: str
    status: Literal["ok", "loading", "failed", "stopped"]
    tool_calling: Optional[SelfTestStatus] = None
    """The startup self-test of the model's tool-call format (once loaded)."""
    reasoning: Optional[SelfTestStatus] = None
    """The startup self-test of the model's think format (once loaded)."""


class Health(BaseModel):
    status: Literal["ok", "loading", "failed", "stopped"]
    model: str
    models: list[ModelStatus]
    uptime_seconds: float
    active_requests: int
    queued_requests: int
    max_tokens: int
    max_context: int
    max_requests: int
    version: str
    tool_calling: Optional[SelfTestStatus] = None
    """The default model's startup self-test of its tool-call format (once loaded)."""
    reasoning: Optional[SelfTestStatus] = None
    """The default model's startup self-test of its think format (once loaded)."""
