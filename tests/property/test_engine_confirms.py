"""broker/engine/confirms.py, publisher confirms, without sockets, against a simple model: every
publish is answered, a nack only for a refused publish or a failed write, an ack (single or
cumulative) only for what is safe, and a cumulative ack never covers a publish still waiting
for its write."""
from __future__ import annotations

import asyncio

from hypothesis import given, settings, strategies as st

from manifold.broker.engine.confirms import PublisherConfirms


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.due = 0

    def ack(self, seq: int, multiple: bool) -> None:
        self.events.append(("ack", seq, multiple))

    def nack(self, seq: int) -> None:
        self.events.append(("nack", seq))

    def on_due(self, confirms: PublisherConfirms) -> None:
        self.due += 1


def make() -> tuple[PublisherConfirms, Recorder]:
    rec = Recorder()
    return PublisherConfirms(rec.ack, rec.nack, rec.on_due), rec


def test_immediate_confirms_fold_into_one_multiple_ack():
    confirms, rec = make()
    for _ in range(3):
        confirms.published()
    assert rec.events == []  # due, not sent: one per write batch
    confirms.flush()
    assert rec.events == [("ack", 3, True)]
    confirms.flush()
    assert rec.events == [("ack", 3, True)]


def test_a_confirm_behind_a_waiting_write_is_acked_alone():
    confirms, rec = make()
    loop = asyncio.new_event_loop()
    try:
        disk = loop.create_future()
        assert confirms.published(disk) == 1
        assert confirms.published() == 2
        assert rec.events == [("ack", 2, False)]  # a multiple ack would cover 1
        assert len(confirms) == 1
        disk.set_result(None)
        loop.run_until_complete(asyncio.sleep(0))
        confirms.flush()
        assert rec.events == [("ack", 2, False), ("ack", 1, True)]
        assert len(confirms) == 0
    finally:
        loop.close()


def test_failed_or_cancelled_writes_and_refusals_are_nacked():
    confirms, rec = make()
    loop = asyncio.new_event_loop()
    try:
        failed, cancelled = loop.create_future(), loop.create_future()
        confirms.published(failed)
        confirms.published(cancelled)
        confirms.published(rejected=True)
        assert rec.events == [("nack", 3)]
        assert len(confirms) == 2
        failed.set_exception(OSError("EIO"))
        cancelled.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        assert sorted(rec.events) == [("nack", 1), ("nack", 2), ("nack", 3)]
    finally:
        loop.close()


OPS = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.sampled_from(["now", "wait", "same", "rejected"])),
    st.tuples(st.just("written"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("flush"))), max_size=80)


@settings(max_examples=400, deadline=None)
@given(ops=OPS)
def test_confirms_against_a_model(ops):
    confirms, rec = make()
    loop = asyncio.new_event_loop()
    futures: dict[int, asyncio.Future] = {}
    waiting: list[int] = []     # model: publishes whose write has not ended, oldest first
    good: set[int] = set()      # safe: may be acked
    bad: set[int] = set()       # refused or failed: must be nacked
    answered: set[int] = set()  # acked or nacked at least once

    def check_new_events(start: int) -> None:
        for event in rec.events[start:]:
            if event[0] == "nack":
                assert event[1] in bad
                answered.add(event[1])
            elif event[2]:  # cumulative: nothing up to it may still wait
                assert all(seq > event[1] for seq in waiting)
                answered.update(s for s in good | bad if s <= event[1])
            else:
                assert event[1] in good
                answered.add(event[1])

    for op in ops:
        start = len(rec.events)
        if op[0] == "publish":
            if op[1] == "now":
                good.add(confirms.published())
            elif op[1] == "rejected":
                bad.add(confirms.published(rejected=True))
            else:
                # "same": the write of the last waiting publish (appends into one store chunk
                # share a future), else a write of its own
                future = (futures[waiting[-1]] if op[1] == "same" and waiting
                          else loop.create_future())
                seq = confirms.published(future)
                futures[seq] = future
                waiting.append(seq)
        elif op[0] == "written":
            if waiting:
                future = futures[waiting[op[1] % len(waiting)]]
                ended = [seq for seq in waiting if futures[seq] is future]
                for seq in ended:  # every publish waiting for that write
                    waiting.remove(seq)
                    (good if op[2] else bad).add(seq)
                if op[2]:
                    future.set_result(None)
                else:
                    future.set_exception(OSError("EIO"))
                loop.run_until_complete(asyncio.sleep(0))  # the done callbacks run
        else:
            confirms.flush()
        check_new_events(start)
        assert len(confirms) == len(waiting)
    while waiting:
        future = futures[waiting[0]]
        for seq in [s for s in waiting if futures[s] is future]:
            waiting.remove(seq)
            good.add(seq)
        start = len(rec.events)
        future.set_result(None)
        loop.run_until_complete(asyncio.sleep(0))
        check_new_events(start)
    loop.close()
    start = len(rec.events)
    confirms.flush()
    check_new_events(start)
    assert answered == good | bad  # every publish was answered
    # a safe publish is never nacked
    assert not any(e[0] == "nack" and e[1] in good for e in rec.events)


def test_publishes_sharing_a_write_are_answered_together():
    """Appends into one store chunk share a future: one run, one cumulative ack; a failed
    write nacks each publish in it."""
    confirms, rec = make()
    loop = asyncio.new_event_loop()
    try:
        chunk, failing = loop.create_future(), loop.create_future()
        for _ in range(3):
            confirms.published(chunk)
        confirms.published(failing)
        confirms.published(failing)
        assert len(confirms) == 5
        failing.set_exception(OSError("ENOSPC"))
        loop.run_until_complete(asyncio.sleep(0))
        assert rec.events == [("nack", 4), ("nack", 5)]
        chunk.set_result(None)
        loop.run_until_complete(asyncio.sleep(0))
        confirms.flush()
        assert rec.events[2:] == [("ack", 3, True)]
        assert len(confirms) == 0
    finally:
        loop.close()
