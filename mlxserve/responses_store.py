"""Recent responses, kept in memory so a client can continue with ``previous_response_id``.

Bounded twice: at most ``size`` responses (the oldest goes first) and each for
at most ``ttl`` seconds. Nothing is written to disk; a restart forgets them all.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

from mlxserve.errors import InvalidRequestError, NotFoundError
from mlxserve.schemas.responses import InputItemList, Response


@dataclass(frozen=True)
class StoredResponse:
    """A finished response and what the model saw before it.

    Attributes:
        response: The response as returned.
        input: This request's input items (wire dicts, each with an ``id``).
        context: Every item before the response's output: the earlier
            conversation (from its own ``previous_response_id``), then ``input``.
        stored_at: When it was stored (the store's clock).
    """

    response: Response
    input: list[dict]
    context: list[dict]
    stored_at: float

    def conversation(self) -> list[dict]:
        """The items a follow-up continues: the context, then this response's output."""
        return self.context + [item.model_dump() for item in self.response.output]


class ResponseStore:
    """Responses by id, oldest first.

    Args:
        size: Most responses kept (0: none are kept).
        ttl: Seconds a response is kept.
        clock: Seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._items: "OrderedDict[str, StoredResponse]" = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._items)

    def _expire(self) -> None:
        limit = self.clock() - self.ttl
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.stored_at > limit:
                break
            self._items.popitem(last=False)

    def put(self, response: Response, input: list[dict], context: list[dict]) -> None:
        """Keep a finished response (the oldest ones go when the store is full)."""
        if self.size == 0:
            return
        self._items[response.id] = StoredResponse(response, input, context, self.clock())
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, response_id: str, *, param: str = "response_id") -> StoredResponse:
        """The stored response ``response_id``.

        Raises:
            NotFoundError: No such response (never stored, expired or deleted).
        """
        self._expire()
        stored = self._items.get(response_id)
        if stored is None:
            raise NotFoundError(
                f"Response with id '{response_id}' not found.",
                param=param,
                code="response_not_found",
            )
        return stored

    def delete(self, response_id: str) -> None:
        """Forget ``response_id``.

        Raises:
            NotFoundError: No such response.
        """
        self.get(response_id)
        del self._items[response_id]


def input_item_page(
    items: list[dict], *, limit: int, order: str, after: Optional[str]
) -> InputItemList:
    """One page of stored input items, as OpenAI lists them.

    Raises:
        InvalidRequestError: ``after`` names no item of this response.
    """
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise InvalidRequestError(
                f"No input item with id '{after}' in this response.", param="after"
            )
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    return InputItemList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(ordered) > limit,
    )
