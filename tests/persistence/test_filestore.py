"""The file store through the core: restart recovery, compaction, fsync policies, kill -9."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from manifold.broker.core import Broker
from manifold.broker.message import Message, Properties
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore

from tests.unit.core_helpers import Recorder


def persistent(body, **props):
    return Message("", "", body, Properties(delivery_mode=2, **props))


async def open_broker(path, **store_kw):
    broker = Broker(Settings(), store=FileStore(str(path), **store_kw))
    await broker.start()
    return broker, broker.vhosts["/"]


async def test_durable_definitions_and_unsettled_messages_survive_restart(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_exchange("events", "topic", durable=True)
    vhost.declare_queue("jobs", durable=True, arguments={"x-max-priority": 3})
    vhost.declare_queue("transient-q", durable=False)
    vhost.bind_queue("jobs", "events", "job.#")
    waits = []
    for i in range(5):
        result = vhost.publish("events", "job.new", persistent(f"job {i}".encode(),
                                                                headers={"n": i}))
        waits.append(result.wait)
    vhost.publish("events", "job.new", Message("", "", b"transient"))  # delivery_mode 1
    await asyncio.wait_for(asyncio.gather(*waits), 5)
    consumer = Recorder(prefetch=2)
    vhost.consume("jobs", consumer)
    consumer.deliveries[0].ack()          # job 0 done
    consumer.deliveries[1].reject(False)  # job 1 dropped
    await broker.close()

    broker, vhost = await open_broker(tmp_path)
    assert "jobs" in vhost.queues and "transient-q" not in vhost.queues
    assert vhost.exchanges["events"].kind == "topic"
    bodies = [m.body for m in vhost.queues["jobs"].ready_messages()]
    # job 2 was delivered but never settled: it comes back; the transient message does not.
    assert bodies == [b"job 2", b"job 3", b"job 4"]
    assert vhost.queues["jobs"].ready_messages()[0].headers == {"n": 2}
    assert vhost.publish("events", "job.more", persistent(b"after")).routed == 1
    await broker.close()


async def test_deleted_queue_leaves_nothing_behind(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("gone", durable=True)
    await vhost.publish("", "gone", persistent(b"x")).wait
    vhost.delete_queue("gone")
    await broker.close()
    assert os.listdir(tmp_path / "queues" / "%2F") == []
    broker, vhost = await open_broker(tmp_path)
    assert "gone" not in vhost.queues
    await broker.close()


async def test_settled_segments_are_compacted(tmp_path):
    broker, vhost = await open_broker(tmp_path, segment_bytes=4096)
    vhost.declare_queue("q", durable=True)
    consumer = Recorder(prefetch=0)
    vhost.consume("q", consumer)
    for i in range(200):
        await vhost.publish("", "q", persistent(b"x" * 100)).wait
    for d in consumer.deliveries:
        d.ack()
    await vhost.publish("", "q", persistent(b"last")).wait  # a batch after the acks

    def segments():
        return [n for n in os.listdir(tmp_path / "queues" / "%2F" / "q") if n.endswith(".seg")]
    deadline = asyncio.get_running_loop().time() + 30  # the unlinks run with the next batch
    while len(segments()) > 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert len(segments()) <= 2, segments()
    await broker.close()
    broker, vhost = await open_broker(tmp_path, segment_bytes=4096)
    # 'last' went to the consumer but was never acked: it is all that comes back.
    assert [m.body for m in vhost.queues["q"].ready_messages()] == [b"last"]
    await broker.close()


@pytest.mark.parametrize("policy", ["interval", "never"])
async def test_other_fsync_policies_still_persist_on_clean_close(tmp_path, policy):
    broker, vhost = await open_broker(tmp_path, fsync=policy, fsync_interval_ms=20)
    vhost.declare_queue("q", durable=True)
    result = vhost.publish("", "q", persistent(b"kept"))
    if result.wait is not None:
        await asyncio.wait_for(result.wait, 5)
    assert (result.wait is None) == (policy == "never")
    await broker.close()
    broker, vhost = await open_broker(tmp_path)
    assert [m.body for m in vhost.queues["q"].ready_messages()] == [b"kept"]
    await broker.close()


async def test_torn_tail_is_truncated_and_reported(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("q", durable=True)
    for i in range(3):
        await vhost.publish("", "q", persistent(f"m{i}".encode())).wait
    await broker.close()
    directory = tmp_path / "queues" / "%2F" / "q"
    (segment,) = [n for n in os.listdir(directory) if n.endswith(".seg")]
    with open(directory / segment, "ab") as fh:
        fh.write(b"\xa7\x01\x01\x00\x00\x00\x10")  # half a record, as a crash leaves it
    broker, vhost = await open_broker(tmp_path)
    assert [m.body for m in vhost.queues["q"].ready_messages()] == [b"m0", b"m1", b"m2"]
    await vhost.publish("", "q", persistent(b"m3")).wait  # appends after the cut, not after junk
    await broker.close()
    broker, vhost = await open_broker(tmp_path)
    assert [m.body for m in vhost.queues["q"].ready_messages()] == [b"m0", b"m1", b"m2", b"m3"]
    await broker.close()


PUBLISHER = textwrap.dedent("""
    import asyncio, sys
    from manifold.broker.core import Broker
    from manifold.broker.message import Message, Properties
    from manifold.config.settings import Settings
    from manifold.persistence.filestore import FileStore

    async def main(path):
        broker = Broker(Settings(), store=FileStore(path))
        await broker.start()
        vhost = broker.vhosts["/"]
        vhost.declare_queue("q", durable=True)
        i = 0
        pending = []
        while True:
            for _ in range(20):  # 20 publishes in flight per group commit
                result = vhost.publish("", "q", Message("", "q", str(i).encode(),
                                                         Properties(delivery_mode=2)))
                pending.append((i, result.wait))
                i += 1
            for n, wait in pending:
                await wait
                print(n, flush=True)  # confirmed: must survive kill -9
            pending.clear()

    asyncio.run(main(sys.argv[1]))
""")


async def test_confirmed_messages_survive_kill_9(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    confirmed = set()
    try:
        loop = asyncio.get_running_loop()
        while len(confirmed) < 500:
            line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 20)
            if not line:
                break
            confirmed.add(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(confirmed) >= 500
    broker, vhost = await open_broker(tmp_path)
    recovered = {int(m.body) for m in vhost.queues["q"].ready_messages()}
    assert confirmed <= recovered
    bodies = [int(m.body) for m in vhost.queues["q"].ready_messages()]
    assert bodies == sorted(bodies)  # order kept
    await broker.close()


async def test_stream_records_offsets_and_stored_retention_survive_restart(tmp_path):
    broker, vhost = await open_broker(tmp_path, segment_bytes=2048)
    vhost.declare_queue("events", durable=True,
                        arguments={"x-queue-type": "stream", "x-max-length-bytes": 3000})
    for i in range(100):
        result = vhost.publish("", "events", Message("", "", f"event {i:03d}".encode() * 5))
        if result.wait is not None:
            await asyncio.wait_for(result.wait, 5)
    stream = vhost.queues["events"]
    first, nxt = stream.first_offset, stream.next_offset
    assert first > 0 and nxt == 100  # retention trimmed the head
    await broker.close()
    files = [f for f in os.listdir(tmp_path / "streams" / "%2F" / "events") if f.endswith(".seg")]
    assert "00000000000000000000.seg" not in files and len(files) < 6, files  # trimmed: deleted

    broker, vhost = await open_broker(tmp_path, segment_bytes=2048)
    stream = vhost.queues["events"]
    assert (stream.first_offset, stream.next_offset) == (first, nxt)
    reader = Recorder(arguments={"x-stream-offset": "first"})
    vhost.consume("events", reader)
    # (read from disk in a reader thread; a new record is read once it is on disk)
    deadline = asyncio.get_running_loop().time() + 30  # generous: a loaded machine
    while len(reader.deliveries) < nxt - first and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert [d.offset for d in reader.deliveries] == list(range(first, nxt))
    assert reader.deliveries[-1].message.body == b"event 099" * 5
    await vhost.publish("", "events", Message("", "", b"after restart")).wait
    deadline = asyncio.get_running_loop().time() + 30
    while reader.deliveries[-1].offset != 100 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert reader.deliveries[-1].offset == 100
    await broker.close()


async def test_backlog_past_the_resident_limit_lives_on_disk(tmp_path):
    settings = Settings().replace("queues", resident_bytes_per_queue=10_000)
    broker = Broker(settings, store=FileStore(str(tmp_path)))
    await broker.start()
    vhost = broker.vhosts["/"]
    vhost.declare_queue("big", durable=True)
    body = b"z" * 1000
    for i in range(200):
        await vhost.publish("", "big", persistent(body + str(i).encode())).wait
    queue = vhost.queues["big"]
    assert queue.ready_count == 200 and queue.ready_bytes > 200_000
    assert queue.resident_bytes <= 11_000  # the rest was paged out to the segments
    consumer = Recorder(prefetch=10)
    vhost.consume("big", consumer)
    for i in range(200):
        delivery = consumer.deliveries[i]
        assert delivery.message.body == body + str(i).encode()  # read back, in order
        delivery.ack()
    assert queue.ready_count == 0
    await broker.close()


async def test_lazy_queue_restart_recovers_without_loading_every_body(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("lazy", durable=True, arguments={"x-queue-mode": "lazy"})
    for i in range(50):
        await vhost.publish("", "lazy", persistent(f"m{i}".encode(), headers={"i": i})).wait
    assert vhost.queues["lazy"].resident_bytes == 0
    await broker.close()
    broker, vhost = await open_broker(tmp_path)
    queue = vhost.queues["lazy"]
    assert queue.ready_count == 50 and queue.resident_bytes == 0  # nothing read yet
    consumer = Recorder()
    vhost.consume("lazy", consumer)
    assert [d.message.body for d in consumer.deliveries] == [f"m{i}".encode() for i in range(50)]
    assert consumer.deliveries[7].message.headers == {"i": 7}
    await broker.close()


@pytest.mark.timeout(60)  # the spin never ends; a loaded machine is only slow
async def test_close_right_after_a_batch_finished_does_not_spin(tmp_path):
    """Regression: a batch whose future was already done (its done callback still queued) made
    close() await it again and again without ever yielding."""
    store = FileStore(str(tmp_path))
    await store.open()
    log = store.queue_log("/", "q")
    log.append(1, b"payload")
    store._kick()
    batch = store._in_flight
    while not batch.done():
        await asyncio.sleep(0)  # wake as soon as it is done: its callback has not run yet
    await store.close()
    assert store._in_flight is None


async def test_recovered_messages_are_marked_redelivered(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("q", durable=True)
    await vhost.publish("", "q", persistent(b"maybe delivered")).wait
    consumer = Recorder()
    vhost.consume("q", consumer)
    assert consumer.deliveries[0].redelivered is False  # delivered, never acked: the crash
    await broker.close()
    broker, vhost = await open_broker(tmp_path)
    consumer = Recorder()
    vhost.consume("q", consumer)
    assert [d.redelivered for d in consumer.deliveries] == [True]
    await broker.close()
