"""Streams on disk: records live in segment files, memory holds an index and a bounded tail."""
import asyncio
import datetime
import os

from manifold.broker import stream as stream_module
from manifold.broker.core import Broker
from manifold.broker.message import Message
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore
from manifold.persistence.fs import FileSystem

from tests.unit.core_helpers import Recorder

STREAM = {"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 64 * 1024}


async def open_broker(path):
    broker = Broker(Settings(), store=FileStore(str(path)))
    await broker.start()
    return broker, broker.vhosts["/"]


async def publish(vhost, name, count, size=1000, start=0):
    wait = None
    for i in range(start, start + count):
        body = f"{i:08d}".encode() + b"x" * (size - 8)
        wait = vhost.publish("", name, Message("", "", body)).wait or wait
        if i % 200 == 199 and wait is not None:
            await asyncio.wait_for(wait, 10)  # keep the test's own memory small
    if wait is not None:
        await asyncio.wait_for(wait, 10)


def numbers(recorder):
    return [int(d.message.body[:8]) for d in recorder.deliveries]


async def delivered(recorder, count, timeout_s=30.0):
    """The first ``count`` record numbers ``recorder`` got (readers behind the tail read from
    disk in a reader thread: deliveries come back on a later turn of the loop)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(recorder.deliveries) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return numbers(recorder)


async def test_records_live_on_disk_and_memory_stays_at_the_tail_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(stream_module, "TAIL_CACHE_BYTES", 100_000)
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    await publish(vhost, "s", 3000)  # 3 MB, about 46 segments
    s = vhost.queues["s"]
    assert s.message_count == 3000
    # the broker's own accounting: only the bounded tail cache counts, not the 3 MB
    assert broker.memory.used_bytes <= 100_000 + 1000
    segments = [f for f in os.listdir(tmp_path / "streams" / "%2F" / "s") if f.endswith(".seg")]
    assert len(segments) > 40
    reader = Recorder(arguments={"x-stream-offset": "first"}, prefetch=0)
    vhost.consume("s", reader)
    # a reader from first reads from disk in bounded turns of the loop
    assert await delivered(reader, 3000) == list(range(3000))
    assert reader.deliveries[1234].offset == 1234
    await broker.close()


async def test_a_stalled_reader_at_the_tail_holds_the_cache_only_up_to_its_hard_limit(
        tmp_path, monkeypatch):
    monkeypatch.setattr(stream_module, "TAIL_CACHE_BYTES", 100_000)
    monkeypatch.setattr(stream_module, "TAIL_CACHE_MAX_BYTES", 300_000)
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    stalled = Recorder(arguments={"x-stream-offset": "next"}, prefetch=1)  # never acks
    vhost.consume("s", stalled)
    peak = 0
    wait = None
    for i in range(3000):  # 3 MB, ten times the hard limit
        wait = vhost.publish("", "s", Message("", "", f"{i:08d}".encode() + b"x" * 992)).wait
        if i % 100 == 99:
            await asyncio.wait_for(wait, 10)
            peak = max(peak, broker.memory.used_bytes)
    # the broker's own accounting: the hard limit plus the records of one batch not yet written
    assert 100_000 < peak <= 300_000 + 100 * 1000 + 2000
    assert numbers(stalled) == [0]
    stalled.deliveries[0].ack()  # its next record left the cache: it reads on from disk
    assert await delivered(stalled, 2) == [0, 1]
    await broker.close()


async def test_readers_at_first_a_timestamp_and_a_stored_offset_after_a_restart(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    await publish(vhost, "s", 500)
    await asyncio.sleep(0.02)  # a later timestamp for what follows
    cut = datetime.datetime.now(datetime.timezone.utc)
    await asyncio.sleep(0.02)
    await publish(vhost, "s", 500, start=500)
    named = Recorder(arguments={"x-stream-offset": "first", "x-stream-reference": "billing"},
                     prefetch=10)
    vhost.consume("s", named)
    for delivery in named.deliveries[:7]:  # acks offsets 0..6
        delivery.ack()
    vhost.cancel(named)
    await broker.close()
    idx = [f for f in os.listdir(tmp_path / "streams" / "%2F" / "s") if f.endswith(".idx")]
    assert idx  # sealed segments have their index next to them

    broker, vhost = await open_broker(tmp_path)
    s = vhost.queues["s"]
    assert (s.first_offset, s.next_offset) == (0, 1000)
    first = Recorder(arguments={"x-stream-offset": "first"}, prefetch=5)
    at_time = Recorder(arguments={"x-stream-offset": cut}, prefetch=5)
    resumed = Recorder(arguments={"x-stream-offset": "first", "x-stream-reference": "billing"},
                       prefetch=5)
    at_offset = Recorder(arguments={"x-stream-offset": 777}, prefetch=1)
    for reader in (first, at_time, resumed, at_offset):
        vhost.consume("s", reader)
    assert await delivered(first, 5) == [0, 1, 2, 3, 4]
    assert (await delivered(at_time, 5))[0] == 500
    assert await delivered(resumed, 5) == [7, 8, 9, 10, 11]
    assert await delivered(at_offset, 1) == [777]
    await broker.close()


async def test_a_damaged_index_is_rebuilt_from_its_segment(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    await publish(vhost, "s", 300)
    await broker.close()
    directory = tmp_path / "streams" / "%2F" / "s"
    for name in os.listdir(directory):
        if name.endswith(".idx"):
            with open(directory / name, "r+b") as fh:
                fh.seek(30)
                fh.write(b"\xff\xff")
    broker, vhost = await open_broker(tmp_path)
    reader = Recorder(arguments={"x-stream-offset": 150}, prefetch=3)
    vhost.consume("s", reader)
    assert await delivered(reader, 3) == [150, 151, 152]
    assert vhost.queues["s"].next_offset == 300
    await broker.close()


async def test_retention_deletes_whole_segments_and_first_survives_a_restart(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True,
                        arguments={**STREAM, "x-max-length-bytes": 300_000})
    slow = Recorder(arguments={"x-stream-offset": "first"}, prefetch=1)
    vhost.consume("s", slow)
    await publish(vhost, "s", 2000)  # 2 MB through a 300 kB retention
    s = vhost.queues["s"]
    first = s.first_offset
    assert first > 1000
    directory = tmp_path / "streams" / "%2F" / "s"
    on_disk = sum(os.path.getsize(directory / f) for f in os.listdir(directory)
                  if f.endswith(".seg"))
    assert on_disk <= 300_000 + 70_000
    slow.deliveries[0].ack()  # its next record's segment is gone: it moves to the first offset
    assert numbers(slow) == [0, first]
    await broker.close()
    broker, vhost = await open_broker(tmp_path)
    assert vhost.queues["s"].first_offset == first
    await broker.close()


async def test_a_deleted_stream_leaves_nothing_behind(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    await publish(vhost, "s", 200)
    named = Recorder(arguments={"x-stream-offset": "first", "x-stream-reference": "r"})
    vhost.consume("s", named)
    named.deliveries[5].ack()
    vhost.cancel(named)
    assert vhost.delete_queue("s") == 200
    await broker.close()
    assert not os.path.exists(tmp_path / "streams" / "%2F" / "s")
    broker, vhost = await open_broker(tmp_path)
    assert "s" not in vhost.queues
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    fresh = Recorder(arguments={"x-stream-offset": "first", "x-stream-reference": "r"})
    vhost.consume("s", fresh)
    assert (vhost.queues["s"].first_offset, vhost.queues["s"].next_offset) == (0, 0)
    assert fresh.deliveries == []
    await broker.close()


async def test_reading_one_record_reads_only_from_the_index_entry_before_it(tmp_path):
    class CountingFS(FileSystem):
        read = 0

        def pread(self, fd, length, position):
            CountingFS.read += length
            return super().pread(fd, length, position)

    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments={
        "x-queue-type": "stream", "x-stream-max-segment-size-bytes": 8 << 20})
    await publish(vhost, "s", 3000)  # 3 MB in one segment, indexed every 64 KiB
    await broker.close()
    broker = Broker(Settings(), store=FileStore(str(tmp_path), fs=CountingFS()))
    await broker.start()
    s = broker.vhosts["/"].queues["s"]
    for offset in (0, 1234, 2999):  # what Kinesis GetRecords with Limit 1 asks
        CountingFS.read = 0
        [(got, _, message)] = s.read(offset, 1)
        assert got == offset and int(message.body[:8]) == offset
        assert CountingFS.read <= stream_module.SINGLE_READ_BYTES + 64 * 1024 + 2000
    CountingFS.read = 0
    assert [r[0] for r in s.read(1000, 10)] == list(range(1000, 1010))
    assert CountingFS.read <= 10 * stream_module.SINGLE_READ_BYTES + 64 * 1024 + 2000
    await broker.close()


async def test_a_torn_tail_is_cut_and_reported_with_the_bytes_dropped(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    await publish(vhost, "s", 100)
    last = vhost.queues["s"].log.segments[-1].path
    await broker.close()
    size = os.path.getsize(last)
    with open(last, "ab") as fh:
        fh.write(b"\xa7torn record")  # as a crash in the middle of a write leaves it
    broker, vhost = await open_broker(tmp_path)
    s = vhost.queues["s"]
    assert s.log.recovery_problems == [f"{last}: torn record header at byte {size}; "
                                       "truncated, 12 bytes dropped"]
    assert os.path.getsize(last) == size
    assert s.next_offset == 100
    assert [int(m.body[:8]) for _, _, m in s.read(95, 10)] == [95, 96, 97, 98, 99]
    await broker.close()
