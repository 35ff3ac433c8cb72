"""One error type, one OpenAI error envelope.

Every failure the server reports is an :class:`MLXServeError` (or is turned
into one by ``app.py``'s handlers) and is rendered by :func:`error_body` as
``{"error": {"message", "type", "param", "code"}}``.
"""

from typing import Optional


class MLXServeError(Exception):
    """Base error: carries the HTTP status and the OpenAI error fields."""

    status_code = 500
    type = "server_error"
    code: Optional[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: Optional[str] = None,
        code: Optional[str] = None,
        retry_after: Optional[float] = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class InvalidRequestError(MLXServeError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"

    def __init__(self, limit: int, prompt_tokens: int, completion_tokens: int, *, what="messages"):
        total = prompt_tokens + completion_tokens
        super().__init__(
            f"This model's maximum context length is {limit} tokens. However, your {what} "
            f"resulted in {total} tokens ({prompt_tokens} in the {what}, {completion_tokens} "
            f"in the completion). Please reduce the length of the {what} or completion.",
            param="messages" if what == "messages" else "prompt",
        )


class AuthenticationError(MLXServeError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(MLXServeError):
    """Refused whoever asks: a foreign Host (DNS rebinding) or a web origin not allowed."""

    status_code = 403
    type = "invalid_request_error"
    code = "forbidden"


class NotFoundError(MLXServeError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(MLXServeError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(MLXServeError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ServerBusyError(MLXServeError):
    status_code = 429
    type = "server_busy"
    code = "server_busy"


class RateLimitError(MLXServeError):
    """A client made more requests than ``--rate-limit`` allows."""

    status_code = 429
    type = "requests"
    code = "rate_limit_exceeded"


class ServiceUnavailableError(MLXServeError):
    status_code = 503
    type = "server_error"
    code = "service_unavailable"


class ModelLoadingError(ServiceUnavailableError):
    code = "model_loading"


class InternalError(MLXServeError):
    pass


class GenerationError(InternalError):
    """The model failed while generating."""

    code = "generation_failed"


def error_body(exc: MLXServeError) -> dict:
    """The OpenAI error envelope for ``exc``."""
    return {
        "error": {
            "message": exc.message,
            "type": exc.type,
            "param": exc.param,
            "code": exc.code,
        }
    }
