"""Stream semantics: offsets, timestamps, independent readers, retention, stored offsets."""
import datetime

import pytest

from manifold.broker.errors import PreconditionFailed

from .core_helpers import Recorder, make_vhost, send


def stream(arguments=None):
    vhost, clock = make_vhost()
    vhost.declare_queue("s", durable=True, arguments={"x-queue-type": "stream", **(arguments or {})})
    return vhost, clock


def reader(vhost, offset, tag="r", **kw):
    c = Recorder(tag, arguments={"x-stream-offset": offset, **kw.pop("arguments", {})}, **kw)
    vhost.consume("s", c)
    return c


def test_stream_must_be_durable_and_not_exclusive():
    vhost, _ = make_vhost()
    with pytest.raises(PreconditionFailed, match="durable"):
        vhost.declare_queue("s", arguments={"x-queue-type": "stream"})
    with pytest.raises(PreconditionFailed, match="exclusive"):
        vhost.declare_queue("s", durable=True, exclusive=True, owner=object(),
                            arguments={"x-queue-type": "stream"})


def test_readers_start_at_first_last_next_and_offset():
    vhost, _ = stream()
    for i in range(5):
        send(vhost, "", "s", f"m{i}")
    first, last, nxt, at2 = (reader(vhost, "first", "a"), reader(vhost, "last", "b"),
                             reader(vhost, "next", "c"), reader(vhost, 2, "d"))
    send(vhost, "", "s", "m5")
    assert first.bodies() == [b"m0", b"m1", b"m2", b"m3", b"m4", b"m5"]
    assert last.bodies() == [b"m4", b"m5"]
    assert nxt.bodies() == [b"m5"]
    assert at2.bodies() == [b"m2", b"m3", b"m4", b"m5"]
    assert [d.offset for d in at2.deliveries] == [2, 3, 4, 5]


def test_reading_removes_nothing():
    vhost, _ = stream()
    send(vhost, "", "s", "m0")
    a = reader(vhost, "first", "a")
    a.ack_all()
    b = reader(vhost, "first", "b")
    assert a.bodies() == b.bodies() == [b"m0"]
    assert vhost.queues["s"].message_count == 1


def test_reader_from_timestamp():
    vhost, clock = stream()
    send(vhost, "", "s", "old")
    clock.advance(10_000)
    cut = datetime.datetime.fromtimestamp(clock.now_ms() / 1000, datetime.timezone.utc)
    send(vhost, "", "s", "new")
    assert reader(vhost, cut).bodies() == [b"new"]


def test_credit_applies_to_stream_readers():
    vhost, _ = stream()
    for i in range(4):
        send(vhost, "", "s", f"m{i}")
    c = reader(vhost, "first", prefetch=2)
    assert c.bodies() == [b"m0", b"m1"]
    c.deliveries[0].ack()
    assert c.bodies() == [b"m0", b"m1", b"m2"]


def test_retention_by_bytes_deletes_whole_segments():
    # Stored records are about 125 bytes (100-byte bodies): two fill a 150-byte segment.
    vhost, _ = stream({"x-max-length-bytes": 600, "x-stream-max-segment-size-bytes": 150})
    for body in "abcd":
        send(vhost, "", "s", body * 100)
    s = vhost.queues["s"]
    assert s.first_offset == 0  # under 600 bytes in two segments
    send(vhost, "", "s", "e" * 100)  # starts a third segment: the first (a, b) goes whole
    assert s.first_offset == 2
    assert [b[:1] for b in reader(vhost, "first").bodies()] == [b"c", b"d", b"e"]


def test_retention_by_age_deletes_segments_whose_newest_record_is_too_old():
    vhost, clock = stream({"x-max-age": "10s", "x-stream-max-segment-size-bytes": 3})
    send(vhost, "", "s", "old")
    clock.advance(6_000)
    send(vhost, "", "s", "young")
    clock.advance(5_000)
    assert [m.body for m in vhost.queues["s"].ready_messages()] == [b"young"]


def test_a_reader_in_a_deleted_segment_moves_to_the_new_first_offset():
    # one record per segment, about two records' worth kept
    vhost, _ = stream({"x-max-length-bytes": 300, "x-stream-max-segment-size-bytes": 100})
    send(vhost, "", "s", "a" * 100)
    slow = reader(vhost, "first", prefetch=1)
    assert slow.bodies() == [b"a" * 100]
    for body in "bcd":
        send(vhost, "", "s", body * 100)
    assert vhost.queues["s"].first_offset == 2  # b's segment is gone while slow held a
    slow.deliveries[0].ack()
    assert [b[:1] for b in slow.bodies()] == [b"a", b"c"]


def test_stored_offsets_resume_a_named_reader():
    vhost, _ = stream()
    for i in range(3):
        send(vhost, "", "s", f"m{i}")
    a = reader(vhost, "first", "a", arguments={"x-stream-reference": "app"})
    a.deliveries[0].ack()
    a.deliveries[1].ack()
    vhost.cancel(a)
    assert vhost.queues["s"].query_offset("app") == 1
    b = reader(vhost, "first", "b", arguments={"x-stream-reference": "app"})
    assert b.bodies() == [b"m2"]
    c = reader(vhost, "first", "c", arguments={"x-stream-reader": "app"})  # the other name
    assert c.bodies() == [b"m2"]


def test_bad_offset_spec():
    vhost, _ = stream()
    with pytest.raises(PreconditionFailed, match="x-stream-offset"):
        reader(vhost, "yesterday")
