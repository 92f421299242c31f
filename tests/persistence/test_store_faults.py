"""Fault injection through the store's file-system shim: nothing unstored is confirmed, a failed
write never poisons later ones, and every confirmed record is there after a restart."""
import asyncio
import errno
import os
import resource

import pytest

from manifold.broker.core import Broker
from manifold.broker.message import Message, Properties
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore, StoreError
from manifold.persistence.records import encode_record, ENQUEUE

from .fsshim import FaultyFS, PowerCutFS

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow


async def outcome(future):
    """'ok' if the append was confirmed, else 'failed'."""
    try:
        await asyncio.wait_for(future, 60)  # generous: only a hung append waits that long
        return "ok"
    except StoreError:
        return "failed"


async def reopen(path, name="q"):
    store = FileStore(str(path))
    await store.open()
    log = store.queue_log("/", name)
    records = dict(log.recover())
    await store.close()
    return records


@pytest.mark.parametrize("op,code", [("write", errno.ENOSPC), ("write", errno.EIO),
                                     ("fsync", errno.EIO), ("fsync", errno.ENOSPC),
                                     ("open", errno.EMFILE), ("open", errno.ENOSPC)])
async def test_a_failed_append_is_refused_and_later_appends_stay_true(tmp_path, op, code):
    fs = FaultyFS()
    store = FileStore(str(tmp_path), fs=fs, max_open_files=1)
    await store.open()
    log = store.queue_log("/", "q")
    assert await outcome(log.append(1, b"first")) == "ok"
    other = store.queue_log("/", "other")
    assert await outcome(other.append(1, b"x")) == "ok"  # evicts q's descriptor (max 1)
    # An EMFILE is retried once after giving back the cached descriptors: fail both tries.
    fs.fail(op, code, times=2 if code == errno.EMFILE else 1)
    assert await outcome(log.append(2, b"lost" * 10)) == "failed"
    assert not log.holds(2)
    # Appends after the failure land where the log thinks they are.
    for i in range(3, 6):
        assert await outcome(log.append(i, f"after {i}".encode())) == "ok"
    assert [log.read(i) for i in (1, 3, 4, 5)] == [b"first", b"after 3", b"after 4", b"after 5"]
    log.settle(3)
    assert await outcome(log.append(6, b"six")) == "ok"
    if op == "open" and code == errno.EMFILE:
        assert await outcome(other.append(2, b"y")) == "ok"  # take the one cached descriptor
        fs.fail("open", errno.EMFILE)  # once: the retry after closing the cache succeeds
        assert await outcome(log.append(7, b"seven")) == "ok"
        log.settle(7)
    await store.close()
    recovered = await reopen(tmp_path)
    assert recovered.get(1) == b"first"
    assert {k: v for k, v in recovered.items() if k != 2} == {
        1: b"first", 4: b"after 4", 5: b"after 5", 6: b"six"}
    if op == "write" or op == "open":
        assert 2 not in recovered  # rolled back: the refused record is not on disk


async def test_a_torn_write_at_every_byte_of_the_record_is_rolled_back(tmp_path):
    record_length = len(encode_record(ENQUEUE, 2, b"torn-record-body"))
    for keep in range(0, record_length):
        path = tmp_path / str(keep)
        fs = FaultyFS()
        store = FileStore(str(path), fs=fs)
        await store.open()
        log = store.queue_log("/", "q")
        assert await outcome(log.append(1, b"good")) == "ok"
        fs.fail("write", errno.ENOSPC, after_bytes=keep)
        assert await outcome(log.append(2, b"torn-record-body")) == "failed"
        assert await outcome(log.append(3, b"next")) == "ok"
        await store.close()
        assert await reopen(path) == {1: b"good", 3: b"next"}, keep


async def test_an_untruncatable_torn_write_retires_the_segment(tmp_path):
    fs = FaultyFS()
    store = FileStore(str(tmp_path), fs=fs)
    await store.open()
    log = store.queue_log("/", "q")
    assert await outcome(log.append(1, b"good")) == "ok"
    fs.fail("write", errno.EIO, after_bytes=5)
    fs.fail("ftruncate", errno.EIO)
    assert await outcome(log.append(2, b"torn")) == "failed"
    assert await outcome(log.append(3, b"next")) == "ok"
    assert log.read(3) == b"next"
    assert len(os.listdir(tmp_path / "queues" / "%2F" / "q")) == 2  # a new segment
    await store.close()
    assert await reopen(tmp_path) == {1: b"good", 3: b"next"}


async def test_records_appended_while_a_failing_batch_was_in_flight_move_with_the_repair(tmp_path):
    fs = FaultyFS()
    store = FileStore(str(tmp_path), fs=fs)
    await store.open()
    log = store.queue_log("/", "q")
    assert await outcome(log.append(1, b"good")) == "ok"
    fs.fail("fsync", errno.EIO)
    failing = log.append(2, b"in the failing batch")
    store._kick()  # the batch is in flight; what follows waits for the next one
    later = [log.append(i, f"later {i}".encode()) for i in range(3, 6)]
    assert await outcome(failing) == "failed"
    assert [await outcome(f) for f in later] == ["ok"] * 3
    assert [log.read(i) for i in range(3, 6)] == [b"later 3", b"later 4", b"later 5"]
    await store.close()
    recovered = await reopen(tmp_path)
    assert {k: recovered[k] for k in (1, 3, 4, 5)} == {
        1: b"good", 3: b"later 3", 4: b"later 4", 5: b"later 5"}


async def test_a_failed_directory_fsync_refuses_the_first_records_of_a_new_segment(tmp_path):
    fs = FaultyFS()
    store = FileStore(str(tmp_path), fs=fs)
    await store.open()
    log = store.queue_log("/", "q")
    fs.fail("fsync_dir", errno.EIO, path="%2F")
    assert await outcome(log.append(1, b"in a new file")) == "failed"
    assert await outcome(log.append(2, b"retry")) == "ok"
    await store.close()
    assert (await reopen(tmp_path)).get(2) == b"retry"


async def test_a_lost_settle_tombstone_is_written_again(tmp_path):
    fs = FaultyFS()
    store = FileStore(str(tmp_path), fs=fs)
    await store.open()
    log = store.queue_log("/", "q")
    assert await outcome(log.append(1, b"acked")) == "ok"
    assert await outcome(log.append(2, b"kept")) == "ok"
    fs.fail("write", errno.ENOSPC)
    log.settle(1)
    store._kick()
    await asyncio.wait([store._in_flight])
    await asyncio.sleep(0.2)  # the retry
    await store.close()
    assert await reopen(tmp_path) == {2: b"kept"}


async def test_a_failed_definitions_write_fails_the_confirms_until_it_is_written(tmp_path):
    fs = FaultyFS()
    broker = Broker(Settings(), store=FileStore(str(tmp_path), fs=fs))
    await broker.start()
    vhost = broker.vhosts["/"]
    fs.fail("replace", errno.ENOSPC, path="definitions.bin")
    vhost.declare_queue("q", durable=True)
    first = vhost.publish("", "q", Message("", "q", b"1", Properties(delivery_mode=2))).wait
    assert await outcome(first) == "failed"  # the queue itself is not on disk yet
    second = vhost.publish("", "q", Message("", "q", b"2", Properties(delivery_mode=2))).wait
    assert await outcome(second) == "ok"
    await broker.close()
    broker = Broker(Settings(), store=FileStore(str(tmp_path)))
    await broker.start()
    assert b"2" in [m.body for m in broker.vhosts["/"].queues["q"].ready_messages()]
    await broker.close()


@pytest.mark.timeout(600)  # 2,000 files created and fsynced: minutes on a loaded machine
async def test_thousands_of_durable_queues_need_few_descriptors(tmp_path):
    fs = FaultyFS()
    broker = Broker(Settings(), store=FileStore(str(tmp_path), fs=fs, max_open_files=16))
    await broker.start()
    vhost = broker.vhosts["/"]
    waits = []
    for i in range(2000):
        vhost.declare_queue(f"q{i}", durable=True)
        waits.append(vhost.publish("", f"q{i}", Message("", "", f"m{i}".encode(),
                                                        Properties(delivery_mode=2))).wait)
    await asyncio.wait_for(asyncio.gather(*waits), 540)
    assert fs.max_open_fds <= 16 + 2
    await broker.close()
    broker = Broker(Settings(), store=FileStore(str(tmp_path), fs=fs, max_open_files=16))
    await broker.start()
    vhost = broker.vhosts["/"]
    assert all(vhost.queues[f"q{i}"].message_count == 1 for i in range(2000))
    assert fs.max_open_fds <= 16 + 2
    await broker.close()


async def test_power_cut_image_keeps_every_confirmed_record(tmp_path):
    data = tmp_path / "data"
    fs = PowerCutFS(str(data))
    store = FileStore(str(data), fs=fs, segment_bytes=300)
    await store.open()
    log = store.queue_log("/", "q")
    confirmed = []
    for i in range(40):
        if await outcome(log.append(i, f"record {i}".encode() * 3)) == "ok":
            confirmed.append(i)
    log.settle(0)
    log.append(99, b"never waited for")
    fs.image(str(tmp_path / "cut"))  # the power goes now, no clean close
    await store.close()
    recovered = await reopen(tmp_path / "cut")
    assert set(confirmed) - {0} <= set(recovered)
    assert len(os.listdir(tmp_path / "cut" / "queues" / "%2F" / "q")) > 2  # segments rotated


async def test_power_cut_image_loses_records_under_fsync_never(tmp_path):
    """The check above can fail: without fsyncs a power cut loses what was 'confirmed'."""
    data = tmp_path / "data"
    fs = PowerCutFS(str(data))
    store = FileStore(str(data), fs=fs, fsync="never")
    await store.open()
    log = store.queue_log("/", "q")
    for i in range(10):
        assert log.append(i, b"x") is None  # 'confirmed' at once
    await asyncio.sleep(0.1)  # written to the page cache
    fs.image(str(tmp_path / "cut"))
    await store.close()
    assert os.listdir(tmp_path / "data" / "queues" / "%2F" / "q")  # on disk, but only cached
    assert await reopen(tmp_path / "cut") == {}


def test_the_test_process_can_lower_its_descriptor_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft > 0 and (hard == resource.RLIM_INFINITY or hard >= soft)
