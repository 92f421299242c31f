"""Queue index files: a clean restart loads each segment's index instead of reading the segment;
an index that is damaged, or made for a file of another size, or missing its clean-shutdown
marker, is ignored and the segment is scanned; failed index writes lose nothing."""
import asyncio
import errno
import os

import pytest

from manifold.persistence.filestore import CLEAN_MARKER_NAME, FileStore, StoreError
from manifold.persistence.fs import FileSystem
from manifold.persistence.records import ENQUEUE, FLAG_READ_ON_RECOVERY, encode_record

from .fsshim import FaultyFS, PowerCutFS

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow

SEGMENT_BYTES = 1024


class CountingFS(FileSystem):
    """Remembers every whole-file read (recovery reads a segment it scans with read_file)."""

    def __init__(self) -> None:
        self.read_paths: list[str] = []

    def read_file(self, path: str) -> bytes:
        self.read_paths.append(path)
        return super().read_file(path)


def queue_dir(root):
    return os.path.join(str(root), "queues", "%2F", "q")


def files(root, ext):
    return sorted(n for n in os.listdir(queue_dir(root)) if n.endswith(ext))


async def fill(store, count=60, flagged=(), settled=()):
    """Append ``count`` messages (ids 1..count), settle some; wait until all is on disk.
    Returns what must come back: {id: payload}."""
    log = store.queue_log("/", "q")
    waits = [log.append(i, f"message {i:03d} ".encode() * 4,
                        FLAG_READ_ON_RECOVERY if i in flagged else 0) for i in range(1, count + 1)]
    await asyncio.wait_for(asyncio.gather(*waits), 10)
    for i in settled:
        log.settle(i)
    await asyncio.wait_for(log.append(count + 1, b"after the settles"), 10)
    expected = {i: f"message {i:03d} ".encode() * 4 for i in range(1, count + 1)
                if i not in settled}
    expected[count + 1] = b"after the settles"
    return log, expected


async def recover(root, fs=None, resident_bytes=None):
    store = FileStore(str(root), fs=fs, segment_bytes=SEGMENT_BYTES)
    await store.open()
    log = store.queue_log("/", "q")
    records = dict(log.recover(resident_bytes))
    if resident_bytes is not None:
        records = {i: log.read(i) if isinstance(data, int) else data
                   for i, data in records.items()} | {"raw": records}
    await store.close()
    return records, log


async def test_a_clean_restart_loads_index_files_and_reads_no_segment(tmp_path):
    store = FileStore(str(tmp_path), segment_bytes=SEGMENT_BYTES)
    await store.open()
    # Settled: some of the first segment (tombstones in later ones), some in the middle.
    _, expected = await fill(store, settled=[2, 3, 4, 30, 31, 45])
    await store.close()
    assert os.path.exists(tmp_path / CLEAN_MARKER_NAME)
    segments = files(tmp_path, ".seg")
    assert len(segments) > 3 and files(tmp_path, ".idx") == [s[:-4] + ".idx" for s in segments]

    fs = CountingFS()
    records, log = await recover(tmp_path, fs)
    assert records == expected
    assert [p for p in fs.read_paths if p.endswith(".seg")] == []  # not one segment read
    assert log.scanned_segments == 0 and log.indexed_segments == len(segments)

    # The same messages as a scan finds, once the index files are gone.
    for name in files(tmp_path, ".idx"):
        os.unlink(os.path.join(queue_dir(tmp_path), name))
    scanned, log = await recover(tmp_path)
    assert scanned == expected and log.indexed_segments == 0


async def test_flags_and_the_budget_survive_the_index(tmp_path):
    store = FileStore(str(tmp_path), segment_bytes=SEGMENT_BYTES)
    await store.open()
    _, expected = await fill(store, flagged=[40, 50])
    await store.close()
    records, log = await recover(tmp_path, resident_bytes=0)
    assert log.scanned_segments == 0
    # Past the budget only flagged messages come with their payload.
    raw = records.pop("raw")
    assert {i for i, data in raw.items() if isinstance(data, bytes)} == {40, 50}
    assert raw[40] == expected[40] and raw[7] == len(expected[7])
    assert records == expected


async def test_a_damaged_or_stale_index_falls_back_to_the_scan(tmp_path):
    store = FileStore(str(tmp_path), segment_bytes=SEGMENT_BYTES)
    await store.open()
    _, expected = await fill(store, settled=[1, 20])
    await store.close()
    directory = queue_dir(tmp_path)
    segments = files(tmp_path, ".seg")
    # 1. A flipped byte in the first segment's index: its CRC fails.
    first_index = os.path.join(directory, segments[0][:-4] + ".idx")
    data = bytearray(open(first_index, "rb").read())
    data[40] ^= 0xFF
    open(first_index, "wb").write(bytes(data))
    # 2. A sealed segment that grew after its index was made (a record the index lacks).
    with open(os.path.join(directory, segments[1]), "ab") as fh:
        fh.write(encode_record(ENQUEUE, 10_000, b"only the segment knows"))
    fs = CountingFS()
    records, log = await recover(tmp_path, fs)
    assert records == {**expected, 10_000: b"only the segment knows"}
    scanned = sorted(os.path.basename(p) for p in fs.read_paths if p.endswith(".seg"))
    assert scanned == segments[:2]
    assert log.scanned_segments == 2 and log.indexed_segments == len(segments) - 2


async def test_without_the_clean_marker_the_newest_segment_is_scanned(tmp_path):
    store = FileStore(str(tmp_path), segment_bytes=SEGMENT_BYTES)
    await store.open()
    _, expected = await fill(store)
    await store.close()
    os.unlink(tmp_path / CLEAN_MARKER_NAME)  # as if the last run had crashed
    fs = CountingFS()
    records, log = await recover(tmp_path, fs)
    assert records == expected
    newest = files(tmp_path, ".seg")[-1]
    assert [os.path.basename(p) for p in fs.read_paths if p.endswith(".seg")] == [newest]
    assert log.scanned_segments == 1


async def test_power_cut_after_a_clean_start_recovers_confirmed_minus_settled(tmp_path):
    """The marker goes at open: a crash later is not taken for a clean end, and the newest
    segment (grown since its index was written at the last close) is scanned."""
    store = FileStore(str(tmp_path / "data"), segment_bytes=SEGMENT_BYTES)
    await store.open()
    _, expected = await fill(store, count=30)
    await store.close()
    fs = PowerCutFS(str(tmp_path / "data"))
    store = FileStore(str(tmp_path / "data"), fs=fs, segment_bytes=SEGMENT_BYTES)
    await store.open()
    log = store.queue_log("/", "q")
    assert dict(log.recover()) == expected and log.scanned_segments == 0
    for i in range(100, 140):
        await asyncio.wait_for(log.append(i, f"later {i}".encode()), 5)
        expected[i] = f"later {i}".encode()
    for i in (5, 6, 101, 120):
        log.settle(i)
        del expected[i]
    log.append(200, b"never waited for")  # may or may not survive
    await asyncio.wait_for(log.append(201, b"confirmed"), 5)
    expected[201] = b"confirmed"
    fs.image(str(tmp_path / "cut"))  # the power goes now, no clean close
    await store.close()
    records, log = await recover(tmp_path / "cut")
    records.pop(200, None)
    assert records == expected
    assert log.scanned_segments >= 1 and log.indexed_segments >= 1


async def test_failed_index_writes_lose_nothing_and_the_next_start_scans(tmp_path):
    fs = FaultyFS()
    store = FileStore(str(tmp_path), fs=fs, segment_bytes=SEGMENT_BYTES)
    await store.open()
    fs.fail("open", errno.ENOSPC, path=".idx", times=1000)  # no index file can be made
    log, expected = await fill(store, settled=[3, 33])
    await store.close()  # the newest segment's index fails too: no clean marker
    assert files(tmp_path, ".idx") == []
    assert not os.path.exists(tmp_path / CLEAN_MARKER_NAME)
    fs.clear()
    records, log = await recover(tmp_path)
    assert records == expected
    assert log.indexed_segments == 0 and log.scanned_segments == len(files(tmp_path, ".seg"))


async def test_segments_with_failed_fsyncs_recover_what_was_confirmed(tmp_path):
    fs = FaultyFS()
    store = FileStore(str(tmp_path), fs=fs, segment_bytes=SEGMENT_BYTES)
    await store.open()
    log = store.queue_log("/", "q")
    for i in range(1, 200):
        fs.clear()
        if i % 7 == 0:
            fs.fail("fsync", errno.EIO)  # some batches' fsync fails: their appends are refused
        try:
            await asyncio.wait_for(log.append(i, b"x" * 60), 5)
        except StoreError:
            pass
    fs.clear()
    confirmed = {i for i in range(1, 200) if log.holds(i)}
    await store.close()
    records, log = await recover(tmp_path)
    assert confirmed <= set(records)


async def test_compaction_removes_index_files_with_their_segments(tmp_path):
    store = FileStore(str(tmp_path), segment_bytes=SEGMENT_BYTES)
    await store.open()
    log, _ = await fill(store)
    before = files(tmp_path, ".idx")
    assert len(before) >= 3
    for i in range(1, 41):
        log.settle(i)
    await asyncio.wait_for(log.append(1000, b"a batch after the settles"), 5)
    await asyncio.wait_for(log.append(1001, b"and one after the compaction"), 5)
    await store.close()
    segments, indexes = files(tmp_path, ".seg"), files(tmp_path, ".idx")
    assert before[0] not in indexes
    assert indexes == [s[:-4] + ".idx" for s in segments]


async def test_a_queue_recovers_its_backlog_from_index_files_in_order(tmp_path):
    """Through the broker: acked messages stay gone, a message with its own expiration (read
    at recovery) keeps its place between the spans filed in bulk, bodies are intact."""
    from manifold.broker.core import Broker
    from manifold.broker.message import Message, Properties
    from manifold.config.settings import Settings

    async def open_broker(fs=None):
        settings = Settings().replace("queues", resident_bytes_per_queue=2_000)
        broker = Broker(settings, store=FileStore(str(tmp_path), fs=fs, segment_bytes=4096))
        await broker.start()
        return broker, broker.vhosts["/"]

    broker, vhost = await open_broker()
    vhost.declare_queue("q", durable=True)
    waits = []
    for i in range(300):
        props = Properties(delivery_mode=2, expiration="3600000" if i == 150 else None)
        waits.append(vhost.publish("", "q", Message("", "", f"m{i:03d}".encode() * 5,
                                                     props)).wait)
    await asyncio.wait_for(asyncio.gather(*[w for w in waits if w is not None]), 10)
    for _ in range(20):  # the first 20 are acked
        delivery, _ = vhost.get("q", no_ack=False)
        delivery.ack()
    await broker.close()

    fs = CountingFS()
    broker, vhost = await open_broker(fs)
    queue = vhost.queues["q"]
    assert [p for p in fs.read_paths if p.endswith(".seg")] == []
    assert queue.log.scanned_segments == 0 and queue.log.indexed_segments >= 4
    assert queue.ready_count == 280 and queue.cold_count == 279  # 150 was read: an entry
    got = []
    while True:
        delivery, _ = vhost.get("q", no_ack=True)
        if delivery is None:
            break
        got.append(delivery.message.body)
    assert got == [f"m{i:03d}".encode() * 5 for i in range(20, 300)]
    await broker.close()


async def test_a_sealed_segment_scanned_at_start_is_indexed_for_the_next(tmp_path):
    """A segment without a usable index (an older build's, or one cut back after a failed
    write) is scanned once: recovery fsyncs it and writes its index, so the next clean start
    reads no segment at all."""
    store = FileStore(str(tmp_path), segment_bytes=SEGMENT_BYTES)
    await store.open()
    _, expected = await fill(store, settled=[2, 3, 30])
    await store.close()
    segments = files(tmp_path, ".seg")
    for name in files(tmp_path, ".idx"):
        os.unlink(os.path.join(queue_dir(tmp_path), name))
    records, log = await recover(tmp_path)
    assert records == expected and log.scanned_segments == len(segments)
    fs = CountingFS()
    records, log = await recover(tmp_path, fs)
    assert records == expected
    assert [p for p in fs.read_paths if p.endswith(".seg")] == []
    assert log.scanned_segments == 0 and log.indexed_segments == len(segments)
