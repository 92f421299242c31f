"""A failed write to a stream segment, injected through the store's file-system shim: publishers
of the lost records are refused, nothing confirmed is lost, readers (at the tail and from disk)
see every confirmed record in order and never a refused one, and a restart recovers exactly the
confirmed records."""
import asyncio
import errno

import pytest

from manifold.broker import stream as stream_module
from manifold.broker.core import Broker
from manifold.broker.message import Message
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore

from tests.unit.core_helpers import Recorder

from .fsshim import FaultyFS

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow

STREAM = {"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 16 * 1024}


async def open_broker(path, fs=None):
    broker = Broker(Settings(), store=FileStore(str(path), fs=fs))
    await broker.start()
    return broker, broker.vhosts["/"]


def publish_now(vhost, numbers):
    return {n: vhost.publish("", "s", Message("", "", f"{n:06d}".encode() + b"x" * 300)).wait
            for n in numbers}


async def publish_batch(vhost, numbers, waits=None):
    """Publish records in one turn of the loop (one chunk); their confirms, by number."""
    waits = {**(waits or {}), **publish_now(vhost, numbers)}
    outcome = {}
    for n, wait in waits.items():
        try:
            await asyncio.wait_for(wait, 10)
            outcome[n] = True
        except OSError:
            outcome[n] = False
    return outcome


def numbers(recorder):
    return [int(d.message.body[:6]) for d in recorder.deliveries]


async def until(condition, timeout_s=30.0):
    deadline = asyncio.get_running_loop().time() + timeout_s  # generous: a loaded machine
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("op,code,after_bytes", [
    ("write", errno.ENOSPC, None),     # nothing written: the chunk is cut back
    ("write", errno.EIO, None),
    ("write", errno.ENOSPC, 30),       # a torn write: part of a record landed, then cut back
    ("ftruncate+write", errno.EIO, 30),  # torn, and the cut fails: the segment is retired
    ("fsync", errno.EIO, None),        # written, fsync failed: retired, the file cut back
    ("fsync", errno.ENOSPC, None),
])
async def test_a_failed_stream_write_refuses_its_records_and_keeps_the_confirmed(
        tmp_path, monkeypatch, op, code, after_bytes):
    monkeypatch.setattr(stream_module, "TAIL_CACHE_BYTES", 4000)  # late readers read from disk
    fs = FaultyFS()
    broker, vhost = await open_broker(tmp_path, fs)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    tail = Recorder(arguments={"x-stream-offset": "first"}, prefetch=0)
    vhost.consume("s", tail)
    outcome = await publish_batch(vhost, range(0, 100))
    for failing in op.split("+"):
        fs.fail(failing, code, after_bytes=after_bytes if failing == "write" else None)
    failing = publish_now(vhost, range(100, 130))
    await asyncio.sleep(0)  # that batch is with the writer: the next records wait for it
    outcome.update(await publish_batch(vhost, range(130, 160), failing))
    fs.clear()
    outcome.update(await publish_batch(vhost, range(160, 200)))
    confirmed = [n for n in range(200) if outcome[n]]
    refused = [n for n in range(200) if not outcome[n]]
    if op == "write":  # cut back: only its own records are lost, the next ones moved back
        assert refused == list(range(100, 130))
    else:  # the segment is retired: the records waiting for it are refused too
        assert refused and set(refused) <= set(range(100, 160))
    assert confirmed[:100] == list(range(100)) and confirmed[-40:] == list(range(160, 200))

    # Readers never see a refused record, and read on past the gap it left.
    await until(lambda: len(tail.deliveries) >= len(confirmed))
    assert numbers(tail) == confirmed
    late = Recorder(arguments={"x-stream-offset": "first"}, prefetch=0)
    vhost.consume("s", late)
    await until(lambda: len(late.deliveries) >= len(confirmed))
    assert numbers(late) == confirmed
    assert [d.offset for d in late.deliveries] == [d.offset for d in tail.deliveries]
    offsets = {n: d.offset for n, d in zip(numbers(late), late.deliveries)}
    await broker.close()

    # A restart finds exactly the confirmed records, at the offsets they had.
    broker, vhost = await open_broker(tmp_path)
    again = Recorder(arguments={"x-stream-offset": "first"}, prefetch=0)
    vhost.consume("s", again)
    await until(lambda: len(again.deliveries) >= len(confirmed))
    await asyncio.sleep(0.05)
    assert numbers(again) == confirmed
    assert {n: d.offset for n, d in zip(numbers(again), again.deliveries)} == offsets
    # New records go after every offset handed out before.
    await publish_batch(vhost, [500])
    await until(lambda: numbers(again)[-1:] == [500])
    assert again.deliveries[-1].offset > max(offsets.values())
    await broker.close()


async def test_a_failed_new_segment_file_is_removed_and_the_stream_goes_on(tmp_path):
    fs = FaultyFS()
    broker, vhost = await open_broker(tmp_path, fs)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    outcome = await publish_batch(vhost, range(0, 60))  # 60 x 326 B: past one 16 KiB segment
    fs.fail("fsync_dir", errno.EIO, path="streams")
    outcome.update(await publish_batch(vhost, range(60, 120)))
    outcome.update(await publish_batch(vhost, range(120, 150)))
    confirmed = [n for n in range(150) if outcome[n]]
    assert len(confirmed) < 150
    await broker.close()
    broker, vhost = await open_broker(tmp_path)
    reader = Recorder(arguments={"x-stream-offset": "first"}, prefetch=0)
    vhost.consume("s", reader)
    await until(lambda: len(reader.deliveries) >= len(confirmed))
    await asyncio.sleep(0.05)
    assert numbers(reader) == confirmed
    await broker.close()
