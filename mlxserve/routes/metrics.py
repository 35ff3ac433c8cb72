"""Prometheus metrics (open like /healthz unless --protect-metrics)."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxserve.metrics import CONTENT_TYPE

router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request):
    """Every metric, in the Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
