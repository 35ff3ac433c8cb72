"""Concurrency gate: at most ``capacity`` generations, a bounded FIFO queue behind them.

Lives on the event loop. A slot is either held by a caller or handed directly
to the next waiter on release, so the count can never drift.
"""

import asyncio
from collections import deque
from typing import Optional

from mlxserve.errors import ServerBusyError, ServiceUnavailableError

BUSY_RETRY_AFTER = 2.0
QUEUE_TIMEOUT_RETRY_AFTER = 5.0


class _QueueTimeout(Exception):
    """A waiter's time in the queue ran out."""


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(_QueueTimeout())


class Gate:
    """A FIFO semaphore with a bounded wait queue and a bounded wait time.

    Args:
        capacity: Slots (generations at once).
        queue_size: Callers allowed to wait; one more gets :class:`ServerBusyError`.
        queue_timeout: Seconds a caller may wait before :class:`ServiceUnavailableError`.
    """

    def __init__(self, capacity: int, queue_size: int, queue_timeout: float):
        self.capacity = capacity
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.active = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._moved: Optional[asyncio.Future] = None

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in line if needed.

        Raises:
            ServerBusyError: The queue is full.
            ServiceUnavailableError: No slot came within ``queue_timeout``.
            asyncio.CancelledError: The caller was cancelled (it leaves the queue).
        """
        waiter = self.enter()
        if waiter is not None:
            await self.wait(waiter)

    def enter(self) -> Optional[asyncio.Future]:
        """Take a free slot now (returns ``None``) or join the queue (returns the waiter).

        A waiter is done when its slot is granted, or fails with the queue
        timeout; pass it to :meth:`wait`, or to :meth:`leave` when giving up.

        Raises:
            ServerBusyError: The queue is full.
        """
        if self.active < self.capacity and not self._waiters:
            self.active += 1
            return None
        if len(self._waiters) >= self.queue_size:
            raise ServerBusyError(
                f"The server is busy: {self.active} request(s) running and "
                f"{len(self._waiters)} waiting. Try again shortly.",
                retry_after=BUSY_RETRY_AFTER,
            )
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        # A timer on the waiter itself (asyncio.timeout is Python 3.11+; wait_for adds a task).
        timer = loop.call_later(self.queue_timeout, _expire, waiter)
        waiter.add_done_callback(lambda _: timer.cancel())
        return waiter

    async def wait(self, waiter: asyncio.Future) -> None:
        """Wait until ``waiter`` (from :meth:`enter`) holds a slot.

        Raises:
            ServiceUnavailableError: No slot came within ``queue_timeout``.
            asyncio.CancelledError: The caller was cancelled (it leaves the queue).
        """
        try:
            await waiter
        except BaseException as exc:
            self.leave(waiter)
            if isinstance(exc, _QueueTimeout):
                raise self.timeout_error() from None
            raise

    def leave(self, waiter: asyncio.Future) -> None:
        """Give up ``waiter``: out of the queue, or its slot passed on if it was just granted."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.release()
            return
        waiter.cancel()
        if waiter in self._waiters:  # release() may have skipped past it already
            self._waiters.remove(waiter)
            self._queue_moved()

    def timeout_error(self) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"No generation slot became free within {self.queue_timeout:g} seconds.",
            code="queue_timeout",
            retry_after=QUEUE_TIMEOUT_RETRY_AFTER,
        )

    def position(self, waiter: asyncio.Future) -> int:
        """``waiter``'s place in line: 1 is next to get a slot; 0 once it left the queue."""
        live = [w for w in self._waiters if not w.done()]
        return live.index(waiter) + 1 if waiter in live else 0

    def moved(self) -> asyncio.Future:
        """A future that is done the next time the queue moves (a waiter joins or leaves)."""
        if self._moved is None:
            self._moved = asyncio.get_running_loop().create_future()
        return self._moved

    def _queue_moved(self) -> None:
        moved, self._moved = self._moved, None
        if moved is not None and not moved.done():
            moved.set_result(None)

    def release(self) -> None:
        """Give a slot back: to the first live waiter, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._queue_moved()
                return
        self.active -= 1
