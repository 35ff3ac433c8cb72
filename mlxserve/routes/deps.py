"""Dependencies the routers share."""

from typing import Annotated

from fastapi import Depends, Request

from mlxserve.service import Service


async def get_service(request: Request) -> Service:
    """The app's service (async: FastAPI would run a plain function in a worker thread)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
