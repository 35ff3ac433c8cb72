"""OpenAI routes: thin wrappers over the service and the OpenAI formatting."""

import asyncio
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlxserve import embeddings, openai_format
from mlxserve.errors import NotFoundError
from mlxserve.openapi import SSE, streamed
from mlxserve.routes.answer import respond
from mlxserve.routes.deps import ServiceDep
from mlxserve.schemas.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    CreateEmbeddingResponse,
    Embedding,
    EmbeddingRequest,
    EmbeddingUsage,
    Model,
    ModelDeleted,
    ModelDetails,
    ModelList,
)

router = APIRouter()


def _include_usage(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=streamed(SSE))
async def chat_completions(
    body: ChatCompletionRequest, request: Request, response: Response, svc: ServiceDep
):
    plan = await svc.plan_chat(body)
    logprobs = bool(body.logprobs)
    return await respond(
        request,
        response,
        svc,
        plan,
        stream=bool(body.stream),
        to_stream=partial(
            openai_format.chat_stream,
            model=plan.model,
            include_usage=_include_usage(body),
            logprobs=logprobs,
            dropped=plan.dropped,
        ),
        to_fold=partial(
            openai_format.chat_fold, model=plan.model, logprobs=logprobs, dropped=plan.dropped
        ),
    )


@router.post("/v1/completions", response_model=Completion, responses=streamed(SSE))
async def completions(
    body: CompletionRequest, request: Request, response: Response, svc: ServiceDep
):
    plan = await svc.plan_completion(body)
    shared = dict(
        model=plan.model,
        logprobs=body.logprobs is not None,
        echo=plan.engine.tokenizer.decode(plan.request.prompt) if body.echo else None,
    )
    return await respond(
        request,
        response,
        svc,
        plan,
        stream=bool(body.stream),
        to_stream=partial(
            openai_format.completion_stream, include_usage=_include_usage(body), **shared
        ),
        to_fold=partial(openai_format.completion_fold, **shared),
    )


@router.post("/v1/embeddings", response_model=CreateEmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, svc: ServiceDep):
    model, vectors, tokens = await svc.embed(body)
    return CreateEmbeddingResponse(
        data=[
            Embedding(index=i, embedding=embeddings.encode(v, body.encoding_format))
            for i, v in enumerate(vectors)
        ],
        model=model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _wire_model(info, loaded: bool, created: int) -> Model:
    details = ModelDetails(
        loaded=loaded,
        source=info.source,
        size_bytes=info.size_bytes or None,
        quantization=info.quantization,
        context_length=info.context_length,
        architecture=info.architecture,
        path=str(info.path) if info.path else None,
    )
    return Model(id=info.id, created=created, mlxserve=details)


async def _models(svc) -> list[Model]:
    listing = await asyncio.to_thread(svc.models.listing)
    return [_wire_model(info, loaded, int(svc.started)) for info, loaded in listing]


@router.get("/v1/models", response_model=ModelList)
async def list_models(svc: ServiceDep):
    return ModelList(data=await _models(svc))


@router.get("/v1/models/{model_id:path}", response_model=Model)
async def get_model(model_id: str, svc: ServiceDep):
    for model in await _models(svc):
        if model.id == model_id:
            return model
    raise NotFoundError(
        f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
    )


@router.delete("/v1/models/{model_id:path}", response_model=ModelDeleted)
async def unload_model(model_id: str, svc: ServiceDep):
    """Unload a resident model once its generations end, freeing its memory."""
    await svc.models.unload_when_idle(model_id, svc.settings.drain_timeout)
    return ModelDeleted(id=model_id)

