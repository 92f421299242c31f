"""Kinesis GetRecords on a cold shard (records past the stream's tail cache, on disk) with an
unmodified boto3 client: the records come back whole and in order, and the disk reads run in
the store's reader thread, so other clients are served while a large GetRecords reads."""
from __future__ import annotations

import concurrent.futures
import threading

from manifold.broker.core import Broker
from manifold.broker.service import Service
from manifold.persistence.filestore import FileStore
from manifold.persistence.fs import FileSystem

from tests.conftest import RunningBroker, broker_settings
from .aws_helpers import aws_client

SHARD = "shardId-000000000000"
#: 6 MiB of records: more than the tail cache (4 MiB), in 1 MiB segments
RECORDS, SIZE = 3000, 2048


def data(i: int) -> bytes:
    return f"{i:06d}".encode() + bytes([i % 251]) * (SIZE - 6)


def put_all(kinesis) -> None:
    for start in range(0, RECORDS, 500):  # PutRecords takes 500 at most
        kinesis.put_records(StreamName="cold", Records=[
            {"Data": data(i), "PartitionKey": "p"} for i in range(start, start + 500)])


def cold(broker: RunningBroker) -> bool:
    """The shard's first records are no longer in its tail cache: GetRecords reads the disk."""
    def check():
        core = broker.broker.vhosts["/"].queues[f"cold.{SHARD}"]
        return bool(core._cache) and core._cache[0].offset > 0
    return broker.call(check)


def test_get_records_from_trim_horizon_on_a_cold_shard_returns_every_record_in_order(
        make_broker):
    broker = make_broker(persistence={"segment_bytes": 1 << 20})
    kinesis = aws_client(broker, "kinesis")
    kinesis.create_stream(StreamName="cold", ShardCount=1)
    put_all(kinesis)
    assert cold(broker)
    iterator = kinesis.get_shard_iterator(StreamName="cold", ShardId=SHARD,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got, sequences = [], []
    for _ in range(20):  # pages of 700 (Limit), to the end of what is there
        page = kinesis.get_records(ShardIterator=iterator, Limit=700)
        got += [r["Data"] for r in page["Records"]]
        sequences += [int(r["SequenceNumber"]) for r in page["Records"]]
        iterator = page["NextShardIterator"]
        if not page["Records"]:
            break
    assert len(got) == RECORDS
    assert got == [data(i) for i in range(RECORDS)]
    assert sequences == sorted(sequences) and len(set(sequences)) == RECORDS
    # One GetRecords with the default Limit returns them all (6 MiB, under its 10 MiB).
    iterator = kinesis.get_shard_iterator(StreamName="cold", ShardId=SHARD,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=iterator)
    assert [r["Data"] for r in page["Records"]] == [data(i) for i in range(RECORDS)]
    assert page["MillisBehindLatest"] == 0


class GatedFS(FileSystem):
    """Once ``armed``, every ``pread`` waits at a gate until the test opens it."""

    def __init__(self):
        self.armed = False
        self.reached = threading.Event()
        self.gate = threading.Event()

    def pread(self, fd: int, length: int, position: int) -> bytes:
        if self.armed:
            self.reached.set()
            self.gate.wait(60)  # (time-boxed: a broken test must not hang the run)
        return super().pread(fd, length, position)


def test_other_clients_are_served_while_a_large_get_records_reads_the_disk(tmp_path):
    settings = broker_settings(tmp_path, persistence={"segment_bytes": 1 << 20})
    fs = GatedFS()
    running = RunningBroker(settings)
    running.service = Service(settings, broker=Broker(settings, store=FileStore(
        settings.server.data_dir, fs=fs, segment_bytes=1 << 20)))
    running.start()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        reader = aws_client(running, "kinesis")
        other = aws_client(running, "kinesis")
        reader.create_stream(StreamName="cold", ShardCount=1)
        put_all(reader)
        assert cold(running)
        iterator = reader.get_shard_iterator(StreamName="cold", ShardId=SHARD,
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        fs.armed = True
        large = pool.submit(reader.get_records, ShardIterator=iterator)
        assert fs.reached.wait(30), "GetRecords did not read the disk"
        # The GetRecords is held inside a disk read; another client's requests are served.
        assert other.describe_stream_summary(StreamName="cold")[
            "StreamDescriptionSummary"]["OpenShardCount"] == 1
        assert other.list_streams()["StreamNames"] == ["cold"]
        assert not large.done()
        fs.armed = False
        fs.gate.set()
        page = large.result(60)
        assert [r["Data"] for r in page["Records"]] == [data(i) for i in range(RECORDS)]
    finally:
        fs.armed = False
        fs.gate.set()
        pool.shutdown(wait=True)
        running.stop()


async def test_at_most_pages_at_once_pages_are_read_at_a_time(tmp_path, monkeypatch):
    """Each page being read may hold 10 MiB of records: concurrent GetRecords wait their turn
    beyond PAGES_AT_ONCE, so memory stays bounded however many clients read."""
    import asyncio

    from manifold.adapters.aws import kinesis as kinesis_module
    from manifold.broker import stream as stream_module
    from manifold.config.settings import Settings

    monkeypatch.setattr(kinesis_module, "PAGES_AT_ONCE", 2)
    broker = Broker(Settings(), store=FileStore(str(tmp_path)))
    await broker.start()
    api = kinesis_module.Kinesis(broker, Settings())
    await api.create_stream({"StreamName": "s", "ShardCount": 1})
    reading, peak, release = 0, 0, asyncio.Event()

    async def held_read(self, offset, limit, max_bytes=None):
        nonlocal reading, peak
        reading += 1
        peak = max(peak, reading)
        await asyncio.wait_for(release.wait(), 30)
        reading -= 1
        return []

    monkeypatch.setattr(stream_module.Stream, "read_later", held_read)
    stream = api.streams["s"]
    pages = [asyncio.ensure_future(api.read_page(stream, stream.shards[0], 0, 100, 0))
             for _ in range(6)]
    for _ in range(50):  # (a few turns of the loop: all six have started)
        await asyncio.sleep(0.01)
    assert (reading, peak) == (2, 2)
    release.set()
    done = await asyncio.wait_for(asyncio.gather(*pages), 30)
    assert len(done) == 6 and peak == 2
    await broker.close()
