"""Anthropic Messages wire types: requests as accepted, responses as the anthropic SDK reads them.

Class and field names mirror anthropic-python's ``types``. Unknown request
fields are ignored; invalid ones become 400 ``invalid_request_error`` errors.
"""

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlxserve.schemas.openai import (
    CONTEXT_DROPPED_FIELDS,
    MAX_STOP_SEQUENCES,
    TOOL_NAME_PATTERN,
    OmitsUnset,
    check_json_schema,
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBlockParam(_Request):
    type: Literal["text"]
    text: str


class ToolUseBlockParam(_Request):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict = {}


class ToolResultBlockParam(_Request):
    type: Literal["tool_result"]
    tool_use_id: str
    content: Union[str, list[TextBlockParam]] = ""
    is_error: Optional[bool] = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(b.text for b in self.content)


class ThinkingBlockParam(_Request):
    """Earlier reasoning sent back by the client; chat templates drop it from history."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlockParam = Annotated[
    Union[TextBlockParam, ToolUseBlockParam, ToolResultBlockParam, ThinkingBlockParam],
    Field(discriminator="type"),
]


class MessageParam(_Request):
    role: Literal["user", "assistant"]
    content: Union[str, list[ContentBlockParam]]

    @field_validator("content", mode="before")
    @classmethod
    def _known_blocks(cls, value):
        known = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")
        for block in value if isinstance(value, list) else []:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in known:
                raise ValueError(
                    f"Content block type '{kind}' is not supported by this server: "
                    f"only {', '.join(known)} blocks are accepted."
                )
        return value

    def blocks(self) -> list:
        """The content as a list of blocks (a string is one text block)."""
        if isinstance(self.content, str):
            return [TextBlockParam(type="text", text=self.content)]
        return list(self.content)


class ToolParam(_Request):
    name: str = Field(..., pattern=TOOL_NAME_PATTERN)
    description: Optional[str] = None
    input_schema: dict

    @field_validator("input_schema")
    @classmethod
    def _check_schema(cls, value):
        check_json_schema(value)
        if value.get("type", "object") != "object":
            raise ValueError("A tool's input_schema must be a JSON Schema of type 'object'.")
        return value


class ToolChoice(_Request):
    type: Literal["auto", "any", "tool", "none"]
    name: Optional[str] = None

    @model_validator(mode="after")
    def _tool_named(self):
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs the tool's 'name'.")
        return self


class ThinkingConfig(_Request):
    type: Literal["enabled", "disabled", "adaptive"]


class CountTokensRequest(_Request):
    """``POST /v1/messages/count_tokens``: a message request without ``max_tokens``."""

    model: Optional[str] = None
    """Any name is accepted; the loaded model answers."""
    messages: list[MessageParam] = Field(..., min_length=1)
    system: Optional[Union[str, list[TextBlockParam]]] = None
    tools: Optional[list[ToolParam]] = None
    tool_choice: Optional[ToolChoice] = None
    thinking: Optional[ThinkingConfig] = None
    """``disabled`` leaves reasoning out of the answer; anything else returns it."""

    @field_validator("tools")
    @classmethod
    def _unique_tool_names(cls, value):
        names = [t.name for t in value or []]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Tool names must be unique; repeated: {', '.join(duplicates)}.")
        return value

    @model_validator(mode="after")
    def _choice_matches_tools(self):
        choice, names = self.tool_choice, [t.name for t in self.tools or []]
        if choice is not None and choice.type in ("any", "tool") and not names:
            raise ValueError(f"tool_choice of type '{choice.type}' needs tools.")
        if choice is not None and choice.type == "tool" and choice.name not in names:
            raise ValueError(
                f"tool_choice names the tool '{choice.name}', which is not among the tools "
                f"({', '.join(names)})."
            )
        return self

    def system_text(self) -> Optional[str]:
        if self.system is None or isinstance(self.system, str):
            return self.system or None
        return "\n".join(b.text for b in self.system) or None


class MessageCreateParams(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(..., ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=1)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    stop_sequences: Optional[list[str]] = None
    stream: Optional[bool] = False

    @field_validator("stop_sequences")
    @classmethod
    def _check_stops(cls, value):
        if value and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed.")
        if any(s == "" for s in value or []):
            raise ValueError("Stop sequences must not be empty.")
        return value


# ---- responses ----

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""
    """Anthropic signs its own reasoning; a local model's is not signed."""


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict
    """The arguments, parsed."""


ContentBlock = Union[TextBlock, ThinkingBlock, ToolUseBlock]


class Usage(OmitsUnset):
    input_tokens: int
    output_tokens: int
    context_dropped_messages: Optional[int] = None
    """mlxserve extension: messages the context window left out (only when it left some out)."""
    context_dropped_tokens: Optional[int] = None
    """mlxserve extension: the prompt tokens those messages would have taken."""

    omitted_when_none = CONTEXT_DROPPED_FIELDS


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: Optional[StopReason] = None
    stop_sequence: Optional[str] = None
    """The stop sequence that ended the answer, when ``stop_reason`` is ``stop_sequence``."""
    usage: Usage


class MessageTokensCount(BaseModel):
    input_tokens: int
