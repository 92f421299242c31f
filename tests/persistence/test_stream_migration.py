"""Old data directories: the build before streams on disk (commit 47dc615) kept a stream as a
queue log in ``queues/<vhost>/<stream>`` (``Stream.enqueue``: ``log.append(offset,
encode_message(stamped))``; retention: ``log.settle(offset)``). The first start of this build
moves it into stream segments, keeping offsets and timestamps, and removes the old files."""
import asyncio
import datetime
import os
import shutil

from manifold.broker.core import Broker
from manifold.broker.message import Message
from manifold.broker.message_codec import encode_message
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore
from manifold.persistence.streammigration import MIGRATED_MARKER

from tests.unit.core_helpers import Recorder

STREAM = {"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 8192}
T0 = 1_700_000_000_000


async def open_broker(path):
    broker = Broker(Settings(), store=FileStore(str(path)))
    await broker.start()
    return broker, broker.vhosts["/"]


async def write_old_layout(path, count, trimmed):
    """The stream declared (definitions), its records written the way the old build did."""
    broker, vhost = await open_broker(path)
    vhost.declare_queue("s", durable=True, arguments=STREAM)
    await broker.close()
    store = FileStore(str(path), segment_bytes=4096)  # several old segments, settles in later ones
    await store.open()
    log = store.queue_log("/", "s")
    waits = []
    for offset in range(count):
        stamped = Message("", "s", f"{offset:06d}".encode() + b"o" * 200,
                          timestamp_ms=T0 + offset * 10)
        waits.append(log.append(offset, encode_message(stamped)))
    for offset in range(trimmed):  # the old retention settled the records it trimmed
        log.settle(offset)
    await asyncio.wait_for(asyncio.gather(*[w for w in waits if w is not None]), 10)
    await store.close()


async def read_all(vhost, count, **arguments):
    reader = Recorder(arguments={"x-stream-offset": "first", **arguments}, prefetch=0)
    vhost.consume("s", reader)
    deadline = asyncio.get_running_loop().time() + 30  # generous: a loaded machine
    while len(reader.deliveries) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)
    vhost.cancel(reader)
    return reader.deliveries


async def test_an_old_layout_stream_is_migrated_once_with_its_offsets_and_timestamps(tmp_path):
    await write_old_layout(tmp_path, 300, trimmed=50)
    legacy = tmp_path / "queues" / "%2F" / "s"
    assert any(name.endswith(".seg") for name in os.listdir(legacy))
    saved = tmp_path / "old-copy"
    shutil.copytree(legacy, saved)

    broker, vhost = await open_broker(tmp_path)
    s = vhost.queues["s"]
    assert (s.first_offset, s.next_offset) == (50, 300)
    deliveries = await read_all(vhost, 250)
    assert [d.offset for d in deliveries] == list(range(50, 300))
    assert [int(d.message.body[:6]) for d in deliveries] == list(range(50, 300))
    assert [d.message.timestamp_ms for d in deliveries] == [T0 + o * 10 for o in range(50, 300)]
    assert not legacy.exists()  # durable in streams/ first, then the old files went
    directory = tmp_path / "streams" / "%2F" / "s"
    assert MIGRATED_MARKER in os.listdir(directory)
    assert len([n for n in os.listdir(directory) if n.endswith(".seg")]) > 3
    # the timestamp index was rebuilt: a reader at a time finds the first record at or after it
    at = datetime.datetime.fromtimestamp((T0 + 2000) / 1000, datetime.timezone.utc)
    assert (await read_all(vhost, 100, **{"x-stream-offset": at}))[0].offset == 200
    await vhost.publish("", "s", Message("", "", b"000300 new")).wait
    await broker.close()

    # A crash after the move but before the old files went: they are removed, not moved again.
    shutil.copytree(saved, legacy)
    broker, vhost = await open_broker(tmp_path)
    s = vhost.queues["s"]
    assert (s.first_offset, s.next_offset) == (50, 301)
    deliveries = await read_all(vhost, 251)
    assert [d.offset for d in deliveries] == list(range(50, 301))
    assert not legacy.exists()
    await broker.close()


async def test_a_migration_cut_short_is_done_again_from_the_old_files(tmp_path):
    await write_old_layout(tmp_path, 120, trimmed=0)
    staging = tmp_path / "streams" / "%2F" / "s#migrating"
    os.makedirs(staging)
    (staging / "00000000000000000000.seg").write_bytes(b"half a segment")
    broker, vhost = await open_broker(tmp_path)
    deliveries = await read_all(vhost, 120)
    assert [d.offset for d in deliveries] == list(range(120))
    assert not staging.exists()
    await broker.close()


async def test_an_old_stream_emptied_by_retention_keeps_its_next_offset(tmp_path):
    await write_old_layout(tmp_path, 40, trimmed=40)
    broker, vhost = await open_broker(tmp_path)
    s = vhost.queues["s"]
    assert s.next_offset == 40 and s.message_count == 0
    await broker.close()
