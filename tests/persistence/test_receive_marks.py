"""MARK records (a message's receive state) in queue logs: the latest mark of each live message
comes back after a restart, from a scanned segment and from an index file alike; marks of
settled messages do not; marked messages come one by one, never inside a span; index files
written before marks existed (version 1) are still read."""
import asyncio
import os
import struct

import crc32c
import pytest

from manifold.persistence import msgindex
from manifold.persistence.filestore import FileStore
from manifold.persistence.msgindex import SegmentIndex
from manifold.persistence.records import array_to_disk

pytestmark = pytest.mark.timeout(60)

SEGMENT_BYTES = 1024


def queue_dir(root):
    return os.path.join(str(root), "queues", "%2F", "q")


async def write_marked_log(root):
    """60 messages over several segments; marks on some, remarked, one settled after its mark."""
    store = FileStore(str(root), segment_bytes=SEGMENT_BYTES)
    await store.open()
    log = store.queue_log("/", "q")
    waits = [log.append(i, f"message {i:03d}".encode() * 4) for i in range(1, 61)]
    await asyncio.wait_for(asyncio.gather(*waits), 10)
    log.mark(5, 1, 1_000, 100)       # received once ...
    log.mark(5, 2, 2_000, 100)       # ... and again: the later mark wins
    log.mark(30, 7, 0, 300)          # returned (visible)
    log.mark(31, 1, 5_000, 310)
    log.settle(31)                   # deleted: its mark means nothing any more
    log.mark(999, 1, 1, 1)           # no such message: ignored at recovery
    await asyncio.wait_for(log.append(61, b"after the marks"), 10)
    return store, log


async def reopen(root):
    store = FileStore(str(root), segment_bytes=SEGMENT_BYTES)
    await store.open()
    log = store.queue_log("/", "q")
    recovery = log.recover(0, spans=True)
    marks = log.marks()
    items = list(recovery)
    await store.close()
    return log, marks, items


EXPECTED = {5: (2, 2_000, 100), 30: (7, 0, 300)}


@pytest.mark.parametrize("clean", [True, False])
async def test_latest_marks_of_live_messages_come_back(tmp_path, clean):
    store, _ = await write_marked_log(tmp_path)
    if clean:
        await store.close()  # every segment gets its index file
    else:
        await store._flush()  # as after kill -9: no index for the newest segment
        store._executor.shutdown(wait=True)
    log, marks, items = await reopen(tmp_path)
    assert marks == EXPECTED
    if clean:
        assert log.scanned_segments == 0
    # marked messages come one by one (their length), the rest in spans
    singles = [msg_id for msg_id, data in items if isinstance(data, int)]
    spanned = [i for _, data in items if isinstance(data, tuple) for i in data[0]]
    assert singles == [5, 30]
    assert sorted(spanned + singles) == [i for i in range(1, 62) if i != 31]
    assert log.marks() == {}  # handed over once


async def test_marks_survive_a_second_restart_and_sealed_segments(tmp_path):
    store, _ = await write_marked_log(tmp_path)
    await store.close()
    await reopen(tmp_path)  # the first restart rewrites nothing that would lose them
    _, marks, _ = await reopen(tmp_path)
    assert marks == EXPECTED


async def test_version_1_index_files_are_read(tmp_path):
    """An index file written before marks existed: its layout, version 1, loads as before."""
    index = SegmentIndex()
    index.add(7, 16, 10)
    index.add(8, 46, 12)
    index.kill(0)
    index.note_settled(3)
    head = msgindex.INDEX_HEADER.pack(msgindex.INDEX_MAGIC, 1, 7, 999, 2, 1, 0)
    body = b"".join((head, array_to_disk(index.ids), array_to_disk(index.positions),
                     array_to_disk(index.lengths), array_to_disk(index.settled)))
    data = body + struct.pack(">I", crc32c.crc32c(body))
    loaded = SegmentIndex.decode(data, 7, 999)
    assert loaded is not None
    assert list(loaded.ids) == [7, 8] and list(loaded.lengths) == [-1, 12]
    assert list(loaded.settled) == [3, 3] and list(loaded.marks) == []
    # and the current version round-trips marks
    index.note_mark(8, 3, 4, 5)
    again = SegmentIndex.decode(index.encode(7, 999), 7, 999)
    assert list(again.marks) == [8, 3, 4, 5] and list(again.ids) == [7, 8]
