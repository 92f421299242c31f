"""Readers behind the tail read the segment files ahead, through a cursor (streamcursor.py):
several reads in flight in the store's reader thread, within a fixed budget per reader."""
import asyncio
import errno
import os

from manifold.broker import stream as stream_module
from manifold.broker.core import Broker
from manifold.broker.message import Message
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore
from manifold.persistence.fs import FileSystem

from tests.unit.core_helpers import Recorder

SEGMENT = {"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 64 * 1024}


class WatchedStore(FileStore):
    """Counts the reads handed to the reader thread, and the peak of what the readers of
    ``watched`` (a stream) hold and have in flight whenever one is handed over."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.reads = 0
        self.watched = None
        self.peak_reads = 0
        self.peak_bytes = 0

    def _read_later(self, path, length, position):
        self.reads += 1
        if self.watched is not None:
            cursors = [r.cursor for r in self.watched._readers.values() if r.cursor]
            self.peak_reads = max(self.peak_reads, sum(len(c.in_flight) for c in cursors))
            self.peak_bytes = max(self.peak_bytes, sum(c.held_bytes + c.in_flight_bytes
                                                       for c in cursors))
        return super()._read_later(path, length, position)


async def open_broker(path, fs=None):
    broker = Broker(Settings(), store=WatchedStore(str(path), fs=fs))
    await broker.start()
    return broker, broker.vhosts["/"]


async def publish(vhost, name, count, size, start=0):
    wait = None
    for i in range(start, start + count):
        body = f"{i:08d}".encode() + bytes([i % 251]) * (size - 8)
        wait = vhost.publish("", name, Message("", "", body)).wait or wait
        if i % 100 == 99 and wait is not None:
            await asyncio.wait_for(wait, 20)
    if wait is not None:
        await asyncio.wait_for(wait, 20)


def numbers(recorder):
    return [int(d.message.body[:8]) for d in recorder.deliveries]


def intact(recorder, size):
    return all(d.message.body == f"{n:08d}".encode() + bytes([n % 251]) * (size - 8)
               for n, d in zip(numbers(recorder), recorder.deliveries))


async def until(check, timeout_s=20.0):
    """Wait (time-boxed) for ``check()`` to hold; the reads come back on later loop turns."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_reader_from_first_keeps_several_reads_in_flight_within_its_budget(
        tmp_path, monkeypatch):
    monkeypatch.setattr(stream_module, "TAIL_CACHE_BYTES", 50_000)
    monkeypatch.setattr(stream_module, "READER_BUDGET_BYTES", 40_000)
    monkeypatch.setattr(stream_module, "READ_BYTES", 7_000)  # records are cut across reads
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=SEGMENT)
    await publish(vhost, "s", 2000, 1000)  # 2 MB in about 32 segments
    store = broker.store
    assert store.reads == 0
    store.watched = vhost.queues["s"]
    reader = Recorder(arguments={"x-stream-offset": "first"}, prefetch=0)
    vhost.consume("s", reader)
    await until(lambda: len(reader.deliveries) >= 2000)
    assert numbers(reader) == list(range(2000))
    assert [d.offset for d in reader.deliveries] == list(range(2000))
    assert intact(reader, 1000)
    assert store.reads > 2000 * 1000 // 7_000
    assert store.peak_reads >= 2  # reads were queued before the ones before them were back
    assert store.peak_bytes <= 40_000  # ... within the reader's budget
    await broker.close()


async def test_records_bigger_than_a_read_and_than_the_budget_arrive_whole(
        tmp_path, monkeypatch):
    monkeypatch.setattr(stream_module, "TAIL_CACHE_BYTES", 100_000)
    monkeypatch.setattr(stream_module, "READER_BUDGET_BYTES", 20_000)
    monkeypatch.setattr(stream_module, "READ_BYTES", 8_000)
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=SEGMENT)
    await publish(vhost, "s", 40, 30_000)  # 1.2 MB: each record spans several reads
    reader = Recorder(arguments={"x-stream-offset": "first"}, prefetch=3)
    vhost.consume("s", reader)
    for count in range(3, 40, 3):  # credit respected: acks let it go on
        await until(lambda: len(reader.deliveries) >= count)
        assert len(reader.deliveries) == count
        for delivery in reader.deliveries[count - 3:]:
            delivery.ack()
    await until(lambda: len(reader.deliveries) == 40)
    assert numbers(reader) == list(range(40))
    assert intact(reader, 30_000)
    await broker.close()


async def test_a_reader_whose_segments_retention_deletes_goes_on_at_the_new_first(
        tmp_path, monkeypatch):
    monkeypatch.setattr(stream_module, "TAIL_CACHE_BYTES", 20_000)
    monkeypatch.setattr(stream_module, "READER_BUDGET_BYTES", 30_000)
    monkeypatch.setattr(stream_module, "READ_BYTES", 10_000)
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments={**SEGMENT,
                                                      "x-max-length-bytes": 400_000})
    await publish(vhost, "s", 300, 1000)
    reader = Recorder(arguments={"x-stream-offset": "first"}, prefetch=10)  # never acked yet
    vhost.consume("s", reader)
    await until(lambda: len(reader.deliveries) == 10)
    assert numbers(reader) == list(range(10))
    await asyncio.sleep(0.05)  # (its cursor reads ahead meanwhile, within its budget)
    s = vhost.queues["s"]
    await publish(vhost, "s", 1500, 1000, start=300)  # retention deletes its segments
    first = s.first_offset
    assert first > 100
    for delivery in reader.deliveries[:10]:
        delivery.ack()
    await until(lambda: len(reader.deliveries) >= 20)
    got = numbers(reader)
    assert got[10] >= first  # moved on to the new first offset, no record of a deleted segment
    acked = 10
    while len(reader.deliveries) < 10 + 1800 - got[10]:  # then every record, in order
        count = len(reader.deliveries)
        for delivery in reader.deliveries[acked:]:
            delivery.ack()
        acked = count
        await until(lambda: len(reader.deliveries) > count)
    assert numbers(reader)[10:] == list(range(got[10], 1800))
    assert intact(reader, 1000)
    await broker.close()


async def test_an_unreadable_segment_is_skipped_and_the_reader_goes_on(tmp_path, monkeypatch,
                                                                      caplog):
    class FailingFS(FileSystem):
        bad: set = set()

        def open(self, path, flags, mode=0o644):
            if path in self.bad and flags == os.O_RDONLY:  # reads of it fail, as on a bad disk
                raise OSError(errno.EIO, "injected")
            return super().open(path, flags, mode)

    monkeypatch.setattr(stream_module, "TAIL_CACHE_BYTES", 50_000)
    broker, vhost = await open_broker(tmp_path, fs=FailingFS())
    vhost.declare_queue("s", durable=True, arguments=SEGMENT)
    await publish(vhost, "s", 500, 1000)
    s = vhost.queues["s"]
    second = s.log.segments[1]
    FailingFS.bad.add(second.path)
    reader = Recorder(arguments={"x-stream-offset": "first"}, prefetch=0)
    vhost.consume("s", reader)
    await until(lambda: numbers(reader)[-1:] == [499])
    got = numbers(reader)
    skipped = list(range(second.base, second.last_offset + 1))
    assert got == [n for n in range(500) if n not in skipped]
    assert any("reading" in r.getMessage() and "failed" in r.getMessage()
               for r in caplog.records)
    await broker.close()


async def test_read_later_reads_a_cold_range_off_the_loop_within_limit_and_bytes(tmp_path):
    class CountingFS(FileSystem):
        read = 0

        def pread(self, fd, length, position):
            CountingFS.read += length
            return super().pread(fd, length, position)

    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments={
        "x-queue-type": "stream", "x-stream-max-segment-size-bytes": 8 << 20})
    await publish(vhost, "s", 6000, 1000)  # 6 MB, more than the tail cache
    await broker.close()
    broker, vhost = await open_broker(tmp_path, fs=CountingFS())
    s = vhost.queues["s"]
    for offset in (0, 1234, 5999):  # Kinesis GetRecords with Limit 1
        CountingFS.read = 0
        [(got, _, message)] = await asyncio.wait_for(s.read_later(offset, 1), 20)
        assert got == offset and int(message.body[:8]) == offset
        assert CountingFS.read <= stream_module.SINGLE_READ_BYTES + 64 * 1024 + 2000
    records = await asyncio.wait_for(s.read_later(0, 10000), 20)
    assert [r[0] for r in records] == list(range(6000))
    assert all(int(m.body[:8]) == o for o, _, m in records)
    limited = await asyncio.wait_for(s.read_later(100, 10000, max_bytes=50_000), 20)
    assert [r[0] for r in limited] == list(range(100, 150))
    await broker.close()


async def test_alike_records_read_from_disk_share_their_envelope_and_others_keep_theirs(
        tmp_path, monkeypatch):
    from manifold.broker.message import Properties
    monkeypatch.setattr(stream_module, "TAIL_CACHE_BYTES", 10_000)
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("s", durable=True, arguments=SEGMENT)
    kinds = [Properties(content_type="a", delivery_mode=2), Properties(content_type="b"),
             Properties(content_type="b", headers={"h": 1})]
    plan = [0, 0, 0, 1, 1, 0, 2, 2, 0, 0] * 30  # 300 records of 1,000 bytes
    wait = None
    for i, kind in enumerate(plan):
        message = Message("", "", f"{i:08d}".encode() + b"x" * 992, kinds[kind])
        wait = vhost.publish("", "s", message).wait or wait
    await asyncio.wait_for(wait, 20)
    reader = Recorder(arguments={"x-stream-offset": "first"}, prefetch=0)
    vhost.consume("s", reader)
    await until(lambda: len(reader.deliveries) == 300)
    assert numbers(reader) == list(range(300))
    got = [d.message.properties for d in reader.deliveries[:200]]  # (the first 200 from disk)
    assert [(p.content_type, p.delivery_mode, p.headers) for p in got] == \
        [(kinds[k].content_type, kinds[k].delivery_mode, kinds[k].headers) for k in plan[:200]]
    for i in range(1, 200):
        alike = plan[i] == plan[i - 1] and plan[i] != 2  # (headers: never shared)
        assert (got[i] is got[i - 1]) == alike
    await broker.close()
