"""broker/engine/output.py, the per-tick output batching of every session, without sockets: a
fake transport records writes, a fake loop runs the scheduled callbacks when told.

Model: the bytes written are exactly the bytes added, in order; nothing waits past a loop turn
unless input is being handled (and then it goes at ``release``); a batch never grows past the
limit; one write per batch (never more writes than ticks, releases, limit crossings and explicit
flushes)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from manifold.broker.engine.output import FlushGroup, Output


class FakeConn:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, chunks: list) -> None:
        self.writes.append(b"".join(chunks))


class FakeLoop:
    def __init__(self) -> None:
        self.ready: list = []

    def call_soon(self, callback) -> None:
        self.ready.append(callback)

    def run_once(self) -> int:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()
        return len(ready)


def make(limit=100, **kw):
    loop = FakeLoop()
    conn = FakeConn()
    output = Output(limit, call_soon=loop.call_soon, **kw)
    output.conn = conn
    return output, conn, loop


def test_adds_outside_input_go_in_one_write_on_the_next_tick():
    output, conn, loop = make()
    output.add(b"a")
    output.add(b"b")
    assert conn.writes == []
    assert loop.run_once() == 1  # one callback for the whole batch
    assert conn.writes == [b"ab"]
    assert loop.run_once() == 0


def test_input_handling_holds_output_until_release_and_schedules_nothing():
    output, conn, loop = make()
    output.hold()
    output.add(b"x")
    output.add(b"y")
    assert loop.ready == [] and conn.writes == []
    output.release()
    assert conn.writes == [b"xy"]


def test_the_limit_writes_at_once_even_while_holding():
    output, conn, loop = make(limit=4)
    output.hold()
    output.add(b"abc")
    output.add(b"de")
    assert conn.writes == [b"abcde"]
    output.release()
    assert conn.writes == [b"abcde"]


def test_before_flush_adds_last_frames_and_soon_sends_them():
    pending = []
    output, conn, loop = make()
    output._before_flush = lambda: (output.chunks.extend(pending), pending.clear())  # noqa: SLF001
    pending.append(b"ack")
    output.soon()
    loop.run_once()
    assert conn.writes == [b"ack"]


def test_a_group_sends_other_connections_batches_at_the_end_of_the_read():
    group = FlushGroup()
    reader, _, loop = make(group=group)
    other, other_conn, _ = make(group=group)
    other._call_soon = loop.call_soon  # noqa: SLF001
    group.enter()
    reader.hold()
    other.add(b"delivery")  # caused by the reader's input
    assert loop.ready == [] and other_conn.writes == []
    reader.release()
    group.leave()
    assert other_conn.writes == [b"delivery"]
    assert loop.ready == []


def test_clear_drops_what_was_not_sent():
    output, conn, loop = make()
    output.add(b"gone")
    output.clear()
    loop.run_once()
    assert conn.writes == []


OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.sampled_from(["hold", "release", "tick", "flush", "soon", "enter", "leave"]),
              st.none())), max_size=80)


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_output_writes_what_was_added_in_order_one_write_per_batch(ops):
    group = FlushGroup()
    output, conn, loop = make(limit=64, group=group)
    added = bytearray()
    triggers = 0  # events that may each cause one write
    depth = 0
    for op, data in ops:
        if op == "add":
            before = output.size
            output.add(data)
            added += data
            if before + len(data) >= 64:
                triggers += 1
        elif op == "hold":
            output.hold()
        elif op == "release":
            if output.holding:
                output.release()
                triggers += 1
        elif op == "tick":
            triggers += loop.run_once()
        elif op == "flush":
            output.flush()
            triggers += 1
        elif op == "soon":
            output.soon()
        elif op == "enter":
            group.enter()
            depth += 1
        elif op == "leave" and depth:
            group.leave()
            depth -= 1
            if not depth:
                triggers += 1
        assert output.size < 64
        assert b"".join(conn.writes) + b"".join(output.chunks) == bytes(added)
        assert all(conn.writes)  # no empty writes
    assert len(conn.writes) <= triggers
    # Nothing is left behind: once input handling and the read end, the loop sends the rest.
    if output.holding:
        output.release()
    while depth:
        group.leave()
        depth -= 1
    loop.run_once()
    assert b"".join(conn.writes) == bytes(added)
    assert output.chunks == [] and output.size == 0
