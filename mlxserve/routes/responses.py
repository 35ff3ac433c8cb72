"""OpenAI Responses API routes: /v1/responses, thin over the chat path and the response store."""

from functools import partial
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response as HTTPResponse

from mlxserve import responses_format
from mlxserve.openapi import SSE, streamed
from mlxserve.responses_format import ResponseBuilder
from mlxserve.responses_request import chat_request, input_items, stored_items
from mlxserve.responses_store import ResponseStore, input_item_page
from mlxserve.routes.answer import respond
from mlxserve.routes.deps import ServiceDep
from mlxserve.schemas.responses import InputItemList, Response, ResponseDeleted, ResponsesRequest

router = APIRouter()


def _store(request: Request) -> ResponseStore:
    """The app's response store, made on first use from its settings."""
    state = request.app.state
    if not hasattr(state, "responses"):
        settings = state.service.settings
        state.responses = ResponseStore(settings.response_store_size, settings.response_store_ttl)
    return state.responses


@router.post("/v1/responses", response_model=Response, responses=streamed(SSE))
async def create_response(
    body: ResponsesRequest, request: Request, response: HTTPResponse, svc: ServiceDep
):
    store = _store(request)
    context: list[dict] = []
    if body.previous_response_id is not None:
        context = store.get(body.previous_response_id, param="previous_response_id").conversation()
    chat = chat_request(body, input_items.validate_python(context))
    plan = await svc.plan_chat(chat)
    tokenizer = plan.engine.tokenizer
    builder = ResponseBuilder(
        responses_format.new_response(body, plan.model),
        count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
        summary=bool(body.reasoning and body.reasoning.summary),
        dropped=plan.dropped,
    )
    given = stored_items(body.items())

    def keep(done: Response) -> None:
        if body.store is not False:
            store.put(done, given, context + given)

    async def fold(events):
        done = await responses_format.response_fold(events, builder)
        keep(done)
        return done

    return await respond(
        request,
        response,
        svc,
        plan,
        stream=bool(body.stream),
        to_stream=partial(responses_format.response_stream, builder=builder, on_done=keep),
        to_fold=fold,
    )


@router.get("/v1/responses/{response_id}", response_model=Response)
async def get_response(response_id: str, request: Request):
    return _store(request).get(response_id).response


@router.delete("/v1/responses/{response_id}", response_model=ResponseDeleted)
async def delete_response(response_id: str, request: Request):
    _store(request).delete(response_id)
    return ResponseDeleted(id=response_id)


@router.get("/v1/responses/{response_id}/input_items", response_model=InputItemList)
async def list_input_items(
    response_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Optional[str] = None,
):
    """This response's input items, a page at a time (newest first unless ``order=asc``)."""
    items = _store(request).get(response_id).input
    return input_item_page(items, limit=limit, order=order, after=after)
