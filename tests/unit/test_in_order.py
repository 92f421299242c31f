"""broker/engine/in_order.py: replies leave in request order, each after its own write, never for a
write that failed or was cancelled."""
from __future__ import annotations

import asyncio

from manifold.broker.engine.in_order import InOrderReplies


class Sink:
    def __init__(self, stop_on_error: bool = True):
        self.sent: list = []
        self.drains = 0
        self.stop_on_error = stop_on_error

    def release(self, reply, error) -> bool:
        self.sent.append((reply, None if error is None else str(error)))
        return error is None or not self.stop_on_error

    def drained(self) -> None:
        self.drains += 1


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_nothing_to_wait_for_goes_at_once():
    sink = Sink()
    replies = InOrderReplies(sink.release, sink.drained)
    replies.add("a")
    assert sink.sent == [("a", None)] and len(replies) == 0


async def test_later_replies_wait_behind_an_earlier_write():
    sink = Sink()
    replies = InOrderReplies(sink.release, sink.drained)
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    replies.add("1", first)
    replies.add("2")  # nothing of its own to wait for, but after 1
    replies.add("3", second)
    second.set_result(None)
    await settle()
    assert sink.sent == []  # 3's write is done, 1's is not
    first.set_result(None)
    await settle()
    assert sink.sent == [("1", None), ("2", None), ("3", None)]
    assert sink.drains >= 1 and len(replies) == 0


async def test_a_failed_or_cancelled_write_is_reported_and_can_end_the_rest():
    sink = Sink()
    replies = InOrderReplies(sink.release)
    loop = asyncio.get_running_loop()
    failed = loop.create_future()
    replies.add("lost", failed)
    replies.add("after")
    failed.set_exception(OSError("disk full"))
    await settle()
    assert sink.sent == [("lost", "disk full")]  # "after" dropped: release said stop
    assert len(replies) == 0
    keep_going = Sink(stop_on_error=False)
    replies = InOrderReplies(keep_going.release)
    cancelled = loop.create_future()
    replies.add("c", cancelled)
    replies.add("d")
    cancelled.cancel()
    await settle()
    assert keep_going.sent == [("c", "cancelled"), ("d", None)]


async def test_clear_forgets_waiting_replies():
    sink = Sink()
    replies = InOrderReplies(sink.release)
    pending = asyncio.get_running_loop().create_future()
    replies.add("gone", pending)
    replies.clear()
    pending.set_result(None)
    await settle()
    assert sink.sent == []
