"""OpenAI Responses API wire types: the request as accepted, the response as the SDK reads it.

Class and field names mirror openai-python's ``types.responses``. Unknown
request fields are ignored; unsupported ones (built-in tools, image or file
input) are 400 errors naming them.
"""

from typing import Annotated, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from mlxserve.schemas.openai import (
    CONTEXT_DROPPED_FIELDS,
    TOOL_NAME_PATTERN,
    FunctionDefinition,
    JSONSchemaFormat,
    OmitsUnset,
    ReasoningEffort,
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---- request: input items ----


class InputText(_Request):
    """A text part of a message: ``input_text`` (user side) or ``output_text`` (assistant side)."""

    type: str
    text: Optional[str] = None

    @model_validator(mode="after")
    def _text_only(self):
        if self.type not in (
            "input_text",
            "output_text",
            "text",
            "refusal",
            "summary_text",
            "reasoning_text",
        ):
            raise ValueError(
                f"Content part type '{self.type}' is not supported by this server: "
                "only text parts are accepted."
            )
        if self.text is None and self.type != "refusal":
            raise ValueError("A text content part needs a 'text' string.")
        return self


def _text(content: Union[str, list[InputText]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.text or "" for p in content)


class MessageItem(_Request):
    """A message: ``{"role", "content"}``, with or without ``"type": "message"``."""

    type: Literal["message"] = "message"
    id: Optional[str] = None
    role: Literal["user", "assistant", "system", "developer"]
    content: Union[str, list[InputText]]

    def text(self) -> str:
        return _text(self.content)


class FunctionCallItem(_Request):
    """A function call the model made earlier (an output item sent back as input)."""

    type: Literal["function_call"]
    id: Optional[str] = None
    call_id: str
    name: str
    arguments: str = "{}"


class FunctionCallOutputItem(_Request):
    """The result of a function call, for the model to answer."""

    type: Literal["function_call_output"]
    id: Optional[str] = None
    call_id: str
    output: Union[str, list[InputText]]

    def text(self) -> str:
        return _text(self.output)


class ReasoningInputItem(_Request):
    """Reasoning from an earlier answer: accepted, and left out of the prompt (chat
    templates drop earlier turns' reasoning)."""

    type: Literal["reasoning"]
    id: Optional[str] = None


SUPPORTED_ITEMS = ("message", "function_call", "function_call_output", "reasoning")


def _item_type(value) -> Optional[str]:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return f"[{kind}]" if kind in SUPPORTED_ITEMS else None


# Tags in brackets, like pydantic's own union branch names ("list[str]"), so that
# error locations leave them out: "input.0.role", not "input.0.message.role".
InputItem = Annotated[
    Union[
        Annotated[MessageItem, Tag("[message]")],
        Annotated[FunctionCallItem, Tag("[function_call]")],
        Annotated[FunctionCallOutputItem, Tag("[function_call_output]")],
        Annotated[ReasoningInputItem, Tag("[reasoning]")],
    ],
    Discriminator(
        _item_type,
        custom_error_type="unsupported_item",
        custom_error_message="Input item type is not supported by this server: only "
        + ", ".join(f"'{t}'" for t in SUPPORTED_ITEMS)
        + " items are accepted",
    ),
]


# ---- request: tools, formats ----


class FunctionTool(_Request):
    """A function tool, in the Responses API's flat shape."""

    type: str
    name: Optional[str] = Field(None, pattern=TOOL_NAME_PATTERN)
    description: Optional[str] = None
    parameters: Optional[dict] = None
    strict: Optional[bool] = None

    @model_validator(mode="after")
    def _function_only(self):
        if self.type != "function":
            raise ValueError(
                f"Tool type '{self.type}' is not supported by this server: only 'function' tools "
                "are accepted."
            )
        if self.name is None:
            raise ValueError("A function tool needs a 'name'.")
        # The same checks as chat completions' tools (a valid JSON Schema of an object).
        FunctionDefinition(name=self.name, parameters=self.parameters)
        return self


class FunctionToolChoice(_Request):
    type: str
    name: Optional[str] = None

    @model_validator(mode="after")
    def _function_only(self):
        if self.type != "function" or self.name is None:
            raise ValueError(
                "tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", "
                '"name": ...}.'
            )
        return self


class TextFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    name: Optional[str] = Field(None, pattern=TOOL_NAME_PATTERN)
    description: Optional[str] = None
    schema_: Optional[dict] = Field(None, alias="schema")
    strict: Optional[bool] = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema":
            if self.schema_ is None or self.name is None:
                raise ValueError("A 'json_schema' text format needs a 'name' and a 'schema'.")
            JSONSchemaFormat.model_validate({"name": self.name, "schema": self.schema_})
        return self


class TextConfig(_Request):
    format: Optional[TextFormat] = None


class ReasoningConfig(_Request):
    effort: Optional[ReasoningEffort] = None
    """"none" or "minimal" turn thinking off in the chat template, other efforts turn it on."""
    summary: Optional[Literal["auto", "concise", "detailed"]] = None
    """When set, the reasoning streams as summary text (the full reasoning, not a summary)."""


class ResponsesRequest(_Request):
    model: Optional[str] = None
    input: Union[str, list[InputItem]]
    instructions: Optional[str] = None
    max_output_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    tools: Optional[list[FunctionTool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], FunctionToolChoice]] = None
    parallel_tool_calls: Optional[bool] = None
    text: Optional[TextConfig] = None
    reasoning: Optional[ReasoningConfig] = None
    stream: Optional[bool] = False
    store: Optional[bool] = True
    previous_response_id: Optional[str] = None
    metadata: Optional[dict[str, str]] = None
    user: Optional[str] = None
    # Accepted only when unset: ignoring them would silently answer something else.
    background: Optional[bool] = None
    conversation: Optional[Union[str, dict]] = None
    prompt: Optional[dict] = None

    @field_validator("background", "conversation", "prompt")
    @classmethod
    def _unsupported(cls, value, info):
        if value:
            raise ValueError(f"'{info.field_name}' is not supported by this server.")
        return value

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value):
        if value == "" or value == []:
            raise ValueError("input must not be empty.")
        return value

    def items(self) -> list:
        """The input as a list of items (a string is one user message)."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)


# ---- response ----


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list = []
    logprobs: list = []


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class FunctionCallOutput(BaseModel):
    """A function call the model made (``ResponseFunctionToolCall``)."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    """The arguments as a JSON object, as text."""
    status: Literal["in_progress", "completed", "incomplete"]


class SummaryText(BaseModel):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningOutput(BaseModel):
    """The model's reasoning (its think block)."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    status: Literal["in_progress", "completed", "incomplete"]
    summary: list[SummaryText]
    """The reasoning again, when the request asked for a summary."""
    content: list[ReasoningText]


OutputItem = Annotated[
    Union[OutputMessage, FunctionCallOutput, ReasoningOutput], Field(discriminator="type")
]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(OmitsUnset):
    input_tokens: int
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens: int
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int
    context_dropped_messages: Optional[int] = None
    """mlxserve extension: messages the context window left out (only when it left some out)."""
    context_dropped_tokens: Optional[int] = None
    """mlxserve extension: the prompt tokens those messages would have taken."""

    omitted_when_none = CONTEXT_DROPPED_FIELDS


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


class Response(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: Optional[int] = None
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: Optional[ResponseError] = None
    incomplete_details: Optional[IncompleteDetails] = None
    instructions: Optional[str] = None
    max_output_tokens: Optional[int] = None
    model: str
    output: list[OutputItem] = []
    parallel_tool_calls: bool = True
    previous_response_id: Optional[str] = None
    reasoning: dict = {"effort": None, "summary": None}
    store: bool = True
    temperature: Optional[float] = None
    text: dict = {"format": {"type": "text"}}
    tool_choice: Union[str, dict] = "auto"
    tools: list[dict] = []
    top_p: Optional[float] = None
    truncation: Literal["disabled"] = "disabled"
    usage: Optional[ResponseUsage] = None
    user: Optional[str] = None
    metadata: dict[str, str] = {}


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict]
    first_id: Optional[str] = None
    last_id: Optional[str] = None
    has_more: bool = False
