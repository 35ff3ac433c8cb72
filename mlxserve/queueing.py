"""A streamed request's wait for a slot, told to the client while it waits.

A stream that must queue gets its response headers at once and then SSE
comments ``: queued position=N`` (1 = next in line) when it joins the queue,
whenever its place changes, and every keep-alive interval, until its
generation starts.
"""

import asyncio
import time
from typing import AsyncIterator, Callable, Optional, Union

from sse_starlette import ServerSentEvent

from mlxserve.errors import MLXServeError
from mlxserve.gate import Gate


class Admission:
    """A request's way through the gate: a slot held now, or a place in the queue.

    Args:
        gate: The gate the request entered.
        waiter: Its place in the queue (from :meth:`Gate.enter`), or ``None``
            when it holds a slot already.
        start: Starts the generation once a slot is held (it owns the slot from
            then on, and gives it back when it fails to start).
        left: Called when the request leaves the queue without a slot.

    ``generation`` is set once the generation runs. Always call :meth:`aclose`
    (idempotent): it leaves the queue, or closes the generation.
    """

    def __init__(
        self, gate: Gate, waiter: Optional[asyncio.Future], start: Callable, left: Callable
    ):
        self.gate = gate
        self.waiter = waiter
        self._start = start
        self._left = left
        self.generation = start() if waiter is None else None

    async def positions(self, interval: float) -> AsyncIterator[int]:
        """The place in line while waiting: at once, on each change, and every ``interval`` s.

        The generation starts when the wait ends.

        Raises:
            ServiceUnavailableError: No slot came within the queue timeout.
        """
        last, said = None, 0.0
        while self.waiter is not None and not self.waiter.done():
            position = self.gate.position(self.waiter)
            if position != last or time.monotonic() - said >= interval:
                last, said = position, time.monotonic()
                yield position
            timeout = max(0.0, said + interval - time.monotonic())
            await asyncio.wait(
                {self.waiter, self.gate.moved()},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        if self.waiter is None:
            return
        waiter, self.waiter = self.waiter, None
        if waiter.exception() is not None:
            self._leave(waiter)
            raise self.gate.timeout_error()
        self.generation = self._start()

    async def aclose(self) -> None:
        if self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            self._leave(waiter)
        if self.generation is not None:
            await self.generation.aclose()

    def _leave(self, waiter: asyncio.Future) -> None:
        # A slot granted just now passes on to the next in line.
        self.gate.leave(waiter)
        self._left()


async def _failed(exc: BaseException):
    raise exc
    yield  # an async generator that fails at once


async def queued_stream(
    admission: Admission, to_stream: Callable, interval: float
) -> AsyncIterator[Union[str, ServerSentEvent]]:
    """The SSE payloads of an admission: queue comments while it waits, then ``to_stream``'s.

    A failure while waiting (the queue timeout) reaches ``to_stream`` as its
    events' error, so it is reported in-band in the stream's own format.
    """
    try:
        async for position in admission.positions(interval):
            yield ServerSentEvent(comment=f"queued position={position}", sep="\n")
        events = admission.generation
    except MLXServeError as exc:
        events = _failed(exc)
    async for payload in to_stream(events):
        yield payload
