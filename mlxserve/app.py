"""The FastAPI application: lifespan, state, routers, and the one error mapping."""

import logging
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlxserve import __version__, tracing
from mlxserve.auth import OPEN_PATHS, APIKeyAuth
from mlxserve.config import Settings
from mlxserve.engine import Engine
from mlxserve.errors import (
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    MLXServeError,
    NotFoundError,
)
from mlxserve.guard import HostGuard, OriginGuard, RateLimit, exposure_warning, is_loopback
from mlxserve.http import BodySizeLimit, JSONBodies
from mlxserve.metrics import Metrics
from mlxserve.observe import Observe
from mlxserve.openapi import document_errors
from mlxserve.protocols import error_body_for
from mlxserve.routes import anthropic, health, metrics, ollama, openai, responses, web
from mlxserve.service import Service

log = logging.getLogger("mlxserve.app")


PROTOCOL_ROUTERS = {"openai": openai.router, "anthropic": anthropic.router, "ollama": ollama.router}


def to_error_response(request: Request, exc: MLXServeError) -> JSONResponse:
    """``exc`` in the error shape of the API the request was for."""
    tracing.note_error(exc)
    body = error_body_for(request.url.path, exc)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers())


# Union branches pydantic names in an error's location ("content.str", "stop.list[str]").
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def _validation_error(exc: RequestValidationError) -> MLXServeError:
    errors = exc.errors()
    # Our own validators say what is wrong best; otherwise the most specific location.
    first = next((e for e in errors if e["type"] == "value_error"), None) or max(
        errors, key=lambda e: len(e.get("loc", ()))
    )
    loc = [
        str(p)
        for p in first.get("loc", ())
        if p != "body" and not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))
    ]
    if first.get("type") == "json_invalid":
        return InvalidRequestError(
            f"The request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}.",
            code="invalid_json",
        )
    message = first["msg"].removeprefix("Value error, ")
    if not loc:
        return InvalidRequestError(f"The request body must be a JSON object: {message}.")
    param = ".".join(loc)
    return InvalidRequestError(f"Invalid value for '{param}': {message}", param=param)


def _http_error(request: Request, exc: StarletteHTTPException) -> MLXServeError:
    if exc.status_code == 404:
        return NotFoundError(f"Unknown route: {request.method} {request.url.path}")
    if exc.status_code == 405:
        return MethodNotAllowedError(
            f"Method {request.method} is not allowed for {request.url.path}."
        )
    error = MLXServeError(str(exc.detail))
    error.status_code = exc.status_code
    error.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    error.code = None
    return error


def create_app(settings: Settings, engine: Optional[Engine] = None) -> FastAPI:
    """Build the app. The engine is created (and later stopped) here unless one is given.

    The model loads in the background: the server answers at once, with 503
    ``model_loading`` until the engine is ready.
    """
    service = Service(settings, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.models.start()
        yield
        service.models.stop()

    app = FastAPI(title="mlxserve", version=__version__, lifespan=lifespan)
    app.state.service = service
    routers = [r for name, r in PROTOCOL_ROUTERS.items() if name in settings.protocol_names]
    if "openai" in settings.protocol_names:
        routers.append(responses.router)
    routers += [health.router, metrics.router, web.router]
    for router in routers:
        app.include_router(router)
    app.state.metrics = Metrics(service)
    open_paths = OPEN_PATHS if settings.protect_metrics else OPEN_PATHS | {"/metrics"}
    # Added innermost first: a request meets Observe, the host and origin guards,
    # the key check, the rate limit, then the body limits.
    app.add_middleware(JSONBodies)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth
    )
    if settings.rate is not None:
        requests, period = settings.rate
        app.add_middleware(RateLimit, requests=requests, period=period, open_paths=open_paths)
    app.add_middleware(APIKeyAuth, keys=settings.api_keys, open_paths=open_paths)
    app.add_middleware(OriginGuard, origins=settings.cors_origins)
    if is_loopback(settings.host):
        app.add_middleware(HostGuard, allowed=settings.allowed_hosts)
    routes = [route for router in routers for route in router.routes]
    app.add_middleware(Observe, metrics=app.state.metrics, routes=routes)
    document_errors(app)
    warning = exposure_warning(settings.host, settings.api_keys)
    if warning:
        log.warning("\n%s\n  WARNING: %s\n%s", "!" * 78, warning, "!" * 78)

    @app.exception_handler(MLXServeError)
    async def _mlxserve_error(request: Request, exc: MLXServeError):
        return to_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return to_error_response(request, _validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return to_error_response(request, _http_error(request, exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return to_error_response(
            request, InternalError(f"Internal server error: {type(exc).__name__}")
        )

    return app
