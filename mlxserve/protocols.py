"""The APIs side by side: which paths each owns, each one's error shape, and the way in.

Every protocol translates its requests into the internal (OpenAI-shaped)
requests (see :func:`translated`) and renders the same
:class:`~mlxserve.errors.MLXServeError` types in its own shape (see
:func:`error_body_for`), so the gate, window and errors behave alike.
"""

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from mlxserve.errors import InternalError, InvalidRequestError, MLXServeError, error_body

# Anthropic's error type for each status we answer with.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def protocol_of(path: str) -> str:
    """The API a request path belongs to."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if path.startswith("/api/"):
        return "ollama"
    return "openai"


def anthropic_error_body(exc: BaseException) -> dict:
    """``{"type": "error", "error": {"type", "message"}}``, Anthropic's error shape."""
    exc = as_error(exc)
    kind = ANTHROPIC_ERROR_TYPES.get(exc.status_code, "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def ollama_error_body(exc: BaseException) -> dict:
    """``{"error": "message"}``, Ollama's error shape."""
    return {"error": as_error(exc).message}


def error_body_for(path: str, exc: MLXServeError) -> dict:
    """``exc`` in the error shape of the API that owns ``path``."""
    render = {"anthropic": anthropic_error_body, "ollama": ollama_error_body}
    return render.get(protocol_of(path), error_body)(exc)


def as_error(exc: BaseException) -> MLXServeError:
    """``exc`` as an :class:`MLXServeError` (anything else is an internal error)."""
    if isinstance(exc, MLXServeError):
        return exc
    return InternalError(f"The generation failed: {exc}")


Request = TypeVar("Request", bound=BaseModel)


def translated(request_type: type[Request], data: dict) -> Request:
    """The internal request (chat or completion) for a translated protocol request.

    Raises:
        InvalidRequestError: The translation is not a valid internal request.
    """
    try:
        return request_type.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidRequestError(
            f"Invalid value for '{where}': {message}" if where else message, param=where or None
        ) from None
