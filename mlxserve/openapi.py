"""The OpenAPI description: every route's error answers, in its own protocol's shape.

FastAPI documents a 422 validation error that the server never sends (bad
input is a 400 in the error envelope). :func:`document_errors` replaces it,
on every operation, with the statuses the server does answer with, each
described by the error body of the API that owns the path.
"""

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from mlxserve.protocols import protocol_of

ERROR_STATUSES = {
    "400": "Invalid request (the body, a parameter, or a limit such as the JSON depth).",
    "401": "Missing or wrong API key.",
    "403": "A Host or web Origin this server does not answer.",
    "404": "Unknown route, model or stored object.",
    "413": "The request body is larger than --max-body-bytes.",
    "429": "The queue is full, or the client's --rate-limit is reached (see Retry-After).",
    "500": "The server failed.",
    "503": "The model is loading, failed to load, or no slot came in time (see Retry-After).",
}

# What the OpenAPI description says of a streamed answer's pieces: each is a JSON
# chunk of the API's own stream format (an SSE event, or an NDJSON line).
STREAM_SCHEMAS = {
    "text/event-stream": {"type": "object", "description": "A server-sent event."},
    "application/x-ndjson": {"type": "string", "description": "One JSON object per line."},
}


def streamed(media_type: str, model=None) -> dict:
    """A route's ``responses``: its 200 answer as ``model``, or streamed as ``media_type``."""
    answer = {"content": {media_type: {"schema": STREAM_SCHEMAS[media_type]}}}
    if model is not None:
        answer["model"] = model
    return {200: answer}


SSE = "text/event-stream"
NDJSON = "application/x-ndjson"

_NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}
ERROR_SCHEMAS = {
    "openai": (
        "ErrorResponse",
        {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": _NULLABLE_STRING,
                        "code": _NULLABLE_STRING,
                    },
                }
            },
        },
    ),
    "anthropic": (
        "AnthropicErrorResponse",
        {
            "type": "object",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    ),
    "ollama": (
        "OllamaErrorResponse",
        {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    ),
}


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` list the error statuses of every operation."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            add_error_responses(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def add_error_responses(schema: dict) -> None:
    """Replace each operation's 422 with the error statuses it may answer, in place."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for protocol, (name, body) in ERROR_SCHEMAS.items():
        components[name] = body
    for path, operations in schema.get("paths", {}).items():
        name = ERROR_SCHEMAS[protocol_of(path)][0]
        content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(status, {"description": description, "content": content})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
