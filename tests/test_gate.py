"""The concurrency gate: FIFO, bounded queue, bounded wait, no leaked slots."""

import asyncio

import pytest

from mlxserve.errors import ServerBusyError, ServiceUnavailableError
from mlxserve.gate import Gate


def run(coro):
    return asyncio.run(coro)


def test_capacity_then_fifo_order():
    async def main():
        gate = Gate(capacity=1, queue_size=5, queue_timeout=5)
        order = []

        async def worker(i):
            await gate.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            gate.release()

        await asyncio.gather(*(worker(i) for i in range(5)))
        assert order == [0, 1, 2, 3, 4]
        assert gate.active == 0 and gate.queued == 0

    run(main())


def test_full_queue_is_busy_with_retry_after():
    async def main():
        gate = Gate(capacity=1, queue_size=0, queue_timeout=5)
        await gate.acquire()
        with pytest.raises(ServerBusyError) as info:
            await gate.acquire()
        assert info.value.status_code == 429 and info.value.code == "server_busy"
        assert "Retry-After" in info.value.headers()
        gate.release()
        assert gate.active == 0

    run(main())


def test_queue_timeout_is_503_and_leaves_the_queue():
    async def main():
        gate = Gate(capacity=1, queue_size=2, queue_timeout=0.05)
        await gate.acquire()
        with pytest.raises(ServiceUnavailableError) as info:
            await gate.acquire()
        assert info.value.status_code == 503 and info.value.code == "queue_timeout"
        assert gate.queued == 0
        gate.release()
        assert gate.active == 0

    run(main())


def test_cancelled_waiter_leaves_the_queue_and_the_slot_moves_on():
    async def main():
        gate = Gate(capacity=1, queue_size=3, queue_timeout=5)
        await gate.acquire()
        first = asyncio.create_task(gate.acquire())
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        assert gate.queued == 2
        first.cancel()
        await asyncio.sleep(0)
        assert gate.queued == 1
        gate.release()
        await asyncio.wait_for(second, 1)
        assert gate.active == 1
        gate.release()
        assert gate.active == 0 and gate.queued == 0

    run(main())


def test_slot_handed_over_while_cancelling_is_passed_on():
    async def main():
        gate = Gate(capacity=1, queue_size=3, queue_timeout=5)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # hands the slot to `waiter`...
        waiter.cancel()  # ...which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.active == 0 and gate.queued == 0

    run(main())


def test_exception_inside_a_slot_releases_it():
    async def main():
        gate = Gate(capacity=1, queue_size=1, queue_timeout=5)

        async def failing():
            await gate.acquire()
            try:
                raise RuntimeError("boom")
            finally:
                gate.release()

        for _ in range(3):
            with pytest.raises(RuntimeError):
                await failing()
        assert gate.active == 0

    run(main())


def test_positions_move_up_and_moved_fires():
    async def main():
        gate = Gate(capacity=1, queue_size=3, queue_timeout=5)
        assert gate.enter() is None  # a free slot: taken at once
        a, b, c = gate.enter(), gate.enter(), gate.enter()
        assert [gate.position(w) for w in (a, b, c)] == [1, 2, 3]
        moved = gate.moved()
        gate.leave(b)
        assert moved.done() and gate.queued == 2
        assert [gate.position(w) for w in (a, b, c)] == [1, 0, 2]
        moved = gate.moved()
        gate.release()  # the slot goes to a
        assert moved.done() and a.done() and gate.position(c) == 1
        gate.leave(a)  # a gives up a slot it was just granted: it passes on to c
        assert c.done() and gate.active == 1 and gate.queued == 0

    run(main())
