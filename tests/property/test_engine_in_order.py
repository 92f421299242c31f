"""broker/engine/in_order.py against a model: replies are released exactly in the order they were
added, none before its own write ended nor before every earlier reply was released, each with
its own write's error; a release that returns False (the connection ends) drops the rest."""
from __future__ import annotations

import asyncio

from hypothesis import given, settings, strategies as st

from manifold.broker.engine.in_order import InOrderReplies

OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.booleans()),                  # with or without a write
    st.tuples(st.just("end"), st.integers(0, 40), st.sampled_from(["ok", "fail", "cancel"]))),
    max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, stop_at=st.one_of(st.none(), st.integers(0, 30)))
def test_replies_are_released_in_request_order_after_their_writes(ops, stop_at):
    loop = asyncio.new_event_loop()
    released: list[tuple[int, object]] = []

    def release(reply: int, error: object) -> bool:
        released.append((reply, error))
        return reply != stop_at

    replies = InOrderReplies(release)
    futures: dict[int, asyncio.Future] = {}
    outcome: dict[int, object] = {}  # model: how each reply's write ended (None: ok)
    open_writes: list[int] = []
    added = 0
    try:
        for op in ops:
            if op[0] == "add":
                if op[1]:
                    futures[added] = loop.create_future()
                    open_writes.append(added)
                    replies.add(added, futures[added])
                else:
                    outcome[added] = None
                    replies.add(added, None)
                added += 1
            elif open_writes:
                reply = open_writes.pop(op[1] % len(open_writes))
                future = futures[reply]
                if op[2] == "ok":
                    future.set_result(None)
                    outcome[reply] = None
                elif op[2] == "fail":
                    error = OSError(f"EIO {reply}")
                    future.set_exception(error)
                    outcome[reply] = error
                else:
                    future.cancel()
                    outcome[reply] = "cancelled"
                loop.run_until_complete(asyncio.sleep(0))  # done callbacks run
            # Model: the released prefix is every reply from 0 whose write ended, stopping at
            # the first still open, or right after the reply whose release ended the connection.
            expected = []
            for reply in range(added):
                if reply not in outcome:
                    break
                expected.append((reply, outcome[reply]))
                if reply == stop_at:
                    break
            assert [r for r, _ in released] == [r for r, _ in expected]
            for (_, got), (_, want) in zip(released, expected):
                assert got is want if not isinstance(want, str) else got == want
            if stop_at is not None and stop_at in [r for r, _ in released]:
                assert len(replies) == 0  # the rest was dropped
    finally:
        for future in futures.values():
            if not future.done():
                future.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
