"""Concurrency gate: at most ``capacity`` generations, a bounded FIFO queue behind them.

Lives on the event loop. A slot is either held by a caller or handed directly
to the next waiter on release, so the count can never drift.
"""

import asyncio
from collections import deque

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
        if self.active < self.capacity and not self._waiters:
            self.active += 1
            return
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
        try:
            await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # The slot was handed over just as we gave up: pass it on.
                self.release()
            else:
                waiter.cancel()
                if waiter in self._waiters:  # release() may have skipped past it already
                    self._waiters.remove(waiter)
            if isinstance(exc, _QueueTimeout):
                raise ServiceUnavailableError(
                    f"No generation slot became free within {self.queue_timeout:g} seconds.",
                    code="queue_timeout",
                    retry_after=QUEUE_TIMEOUT_RETRY_AFTER,
                ) from None
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """Give a slot back: to the first live waiter, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1
