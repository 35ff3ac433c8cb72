"""Ollama routes: thin wrappers over the service and the Ollama formatting.

Errors on ``/api/`` paths are rendered as ``{"error": "..."}`` by the app's
handlers (see :func:`mlxserve.protocols.error_body_for`).
"""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from mlxserve import ollama_format
from mlxserve.errors import NotFoundError
from mlxserve.http import ClientDisconnected, GenerationNDJSON, until_disconnect
from mlxserve.model_card import read_model_card
from mlxserve.routes.answer import CLIENT_CLOSED, dropped_headers
from mlxserve.routes.deps import ServiceDep
from mlxserve.openapi import NDJSON, streamed
from mlxserve.schemas.ollama import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    PsResponse,
    ShowRequest,
    ShowResponse,
    TagsResponse,
    VersionResponse,
)

router = APIRouter()


async def _answer(request: Request, svc, plan, as_events, *, body, shape, timer):
    """Wait for a slot, then stream the answer as NDJSON or fold it into one object.

    NDJSON has no comments to tell a queued client its place, so a stream waits
    for its slot before the response starts, as a folded answer does: bounded by
    the queue timeout (503) and leaving the queue when the client disconnects.
    """
    shared = dict(
        shape=shape,
        model=plan.model,
        timer=timer,
        think=body.think is not False,
        dropped=plan.dropped,
    )
    headers = dropped_headers(plan)
    try:
        generation = await until_disconnect(request, svc.admit(plan))
        timer.admit()
        events = as_events(generation)
        if body.stream:
            return GenerationNDJSON(ollama_format.ndjson(events, **shared), generation, headers)
        try:
            return JSONResponse(
                await until_disconnect(request, ollama_format.fold(events, **shared)),
                headers=headers,
            )
        finally:
            await generation.aclose()
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)


def _same(generation):
    return generation


@router.post("/api/chat", responses=streamed(NDJSON, ChatResponse))
async def chat(body: ChatRequest, request: Request, svc: ServiceDep):
    timer = ollama_format.Timer()
    if not body.messages:
        model_id, _ = await svc.model(body.model)
        return JSONResponse(ollama_format.load_response("chat", model_id))
    plan = await svc.plan_chat(ollama_format.chat_request(body, svc.settings.max_tokens))
    return await _answer(request, svc, plan, _same, body=body, shape="chat", timer=timer)


@router.post("/api/generate", responses=streamed(NDJSON, GenerateResponse))
async def generate(body: GenerateRequest, request: Request, svc: ServiceDep):
    timer = ollama_format.Timer()
    if not body.prompt:
        model_id, _ = await svc.model(body.model)
        return JSONResponse(ollama_format.load_response("generate", model_id))
    cap = svc.settings.max_tokens
    if body.raw:
        plan = await svc.plan_completion(ollama_format.raw_request(body, cap))
        as_events = ollama_format.raw_events
    else:
        plan = await svc.plan_chat(ollama_format.generate_request(body, cap))
        as_events = _same
    return await _answer(request, svc, plan, as_events, body=body, shape="generate", timer=timer)


@router.post("/api/embed", response_model=EmbedResponse)
async def embed(body: EmbedRequest, svc: ServiceDep):
    timer = ollama_format.Timer()
    request = ollama_format.embedding_request(body.model, body.input, body.dimensions)
    model, vectors, tokens = await svc.embed(request)
    return {
        "model": model,
        "embeddings": vectors.tolist(),
        "total_duration": timer.clock() - timer.started,
        "prompt_eval_count": tokens,
    }


@router.post("/api/embeddings", response_model=EmbeddingsResponse)
async def embeddings(body: EmbeddingsRequest, svc: ServiceDep):
    _, vectors, _ = await svc.embed(ollama_format.embedding_request(body.model, body.prompt))
    return {"embedding": vectors[0].tolist()}


@router.get("/api/version", response_model=VersionResponse)
async def version():
    return {"version": ollama_format.OLLAMA_API_VERSION}


def _cards(svc) -> list:
    """Every servable model with its card (blocking: reads the disk)."""
    return [(info, read_model_card(info.path)) for info, _ in svc.models.listing() if info.path]


@router.get("/api/tags", response_model=TagsResponse)
async def tags(svc: ServiceDep):
    """Every model a request may name, loaded or not."""
    cards = await asyncio.to_thread(_cards, svc)
    return {"models": [ollama_format.listed_model(i.id, card).model_dump() for i, card in cards]}


@router.get("/api/ps", response_model=PsResponse)
async def ps(svc: ServiceDep):
    """The loaded models."""
    ready = [(m, e) for m, e in list(svc.models.engines.items()) if e.state == "ready"]
    cards = await asyncio.to_thread(lambda: [read_model_card(e.model_path) for _, e in ready])
    models = [
        ollama_format.running_model(model_id, card, svc.context_tokens(engine))
        for (model_id, engine), card in zip(ready, cards)
    ]
    return {"models": [m.model_dump() for m in models]}


@router.post("/api/show", response_model=ShowResponse)
async def show(body: ShowRequest, svc: ServiceDep):
    name = body.model or body.name or ""
    for info, card in await asyncio.to_thread(_cards, svc):
        if info.id in (name, name.removesuffix(":latest")):
            context = svc.settings.max_context_tokens or info.context_length
            return ollama_format.show(card, context_length=context)
    raise NotFoundError(f"model '{name}' not found", param="model")
