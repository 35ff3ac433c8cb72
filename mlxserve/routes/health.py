"""Liveness and readiness, whichever APIs the server speaks."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mlxserve.routes.deps import ServiceDep
from mlxserve.schemas.openai import Health

router = APIRouter()


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Loading, or the model failed to load."}},
)
@router.get("/health", include_in_schema=False)
async def health(svc: ServiceDep):
    body = svc.health()
    headers = {"Retry-After": "5"} if body["status"] == "loading" else None
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503, headers=headers)
