"""A durable queue holding far more bodies than its resident budget: bodies wait on disk, each
waiting message costs a few bytes of arrays (cold runs), and delivery keeps order and bodies."""
import asyncio

import pytest

from manifold.broker.coldrun import ColdRun
from manifold.broker.core import Broker
from manifold.broker.queue import ENTRY_OVERHEAD_BYTES
from manifold.broker.message import Message, Properties
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore

from tests.unit.core_helpers import Recorder

BUDGET = 20_000
COUNT = 4000
SIZE = 500


def body(i):
    return f"{i:06d}".encode() + bytes([i % 251]) * (SIZE - 6)


async def open_broker(path, **store_kw):
    settings = Settings().replace("queues", resident_bytes_per_queue=BUDGET)
    broker = Broker(settings, store=FileStore(str(path), **store_kw))
    await broker.start()
    return broker, broker.vhosts["/"]


async def fill(vhost, name="big"):
    wait = None
    for i in range(COUNT):
        wait = vhost.publish("", name, Message("", "", body(i), Properties(delivery_mode=2))
                             ).wait or wait
        if i % 500 == 499 and wait is not None:
            await asyncio.wait_for(wait, 10)
    if wait is not None:
        await asyncio.wait_for(wait, 10)


def cold_count(queue):
    return sum(len(run) for run in queue._fresh[0] if isinstance(run, ColdRun))


async def drain(vhost, queue, broker, redelivered=False):
    consumer = Recorder(prefetch=50)
    vhost.consume("big", consumer)
    peak = 0
    for i in range(COUNT):
        delivery = consumer.deliveries[i]
        assert delivery.message.body == body(i)  # in order, intact
        assert delivery.redelivered == redelivered
        delivery.ack()
        peak = max(peak, queue.resident_bytes, broker.memory.used_bytes)
        consumer.deliveries[i] = None  # a consumer that keeps nothing
    assert queue.ready_count == 0
    # flat: never more in memory than the budget plus what the consumer holds (prefetch), each
    # held message with its entry's overhead (the memory alarm counts both)
    assert peak <= BUDGET + 50 * (SIZE + ENTRY_OVERHEAD_BYTES)


@pytest.mark.parametrize("fsync", ["always", "never"])
async def test_backlog_past_the_budget_waits_in_cold_runs_and_drains_in_order(tmp_path, fsync):
    broker, vhost = await open_broker(tmp_path, fsync=fsync)
    vhost.declare_queue("big", durable=True)
    await fill(vhost)
    queue = vhost.queues["big"]
    assert queue.ready_count == COUNT and queue.ready_bytes == COUNT * SIZE
    # the broker's own accounting: 2 MB waiting, the budget's worth in memory
    assert queue.resident_bytes <= BUDGET and broker.memory.used_bytes <= BUDGET
    assert cold_count(queue) >= COUNT - BUDGET // SIZE
    assert len(queue._fresh[0]) < BUDGET // SIZE + 5  # entries for the budget, then one run
    await drain(vhost, queue, broker)
    await broker.close()


async def test_cold_backlog_recovers_into_cold_runs_and_drains_after_restart(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("big", durable=True)
    await fill(vhost)
    await broker.close()
    broker, vhost = await open_broker(tmp_path)
    queue = vhost.queues["big"]
    assert queue.ready_count == COUNT
    assert queue.resident_bytes <= BUDGET and cold_count(queue) >= COUNT - BUDGET // SIZE
    await drain(vhost, queue, broker, redelivered=True)
    await broker.close()


async def test_lazy_queue_hands_an_unwritten_message_to_a_consumer(tmp_path):
    """A lazy queue freezes every message at once: one read before its write completed comes
    from the chunk still on its way to the file."""
    broker, vhost = await open_broker(tmp_path, fsync="never")
    vhost.declare_queue("lazy", durable=True, arguments={"x-queue-mode": "lazy"})
    vhost.publish("", "lazy", Message("", "", b"first", Properties(delivery_mode=2)))
    vhost.publish("", "lazy", Message("", "", b"second", Properties(delivery_mode=2)))
    consumer = Recorder()
    vhost.consume("lazy", consumer)
    assert [d.message.body for d in consumer.deliveries] == [b"first", b"second"]
    await broker.close()


async def test_withdraw_and_purge_reach_cold_messages(tmp_path):
    broker, vhost = await open_broker(tmp_path)
    vhost.declare_queue("big", durable=True, arguments={"x-queue-mode": "lazy"})
    for i in range(10):
        await vhost.publish("", "big", Message("", "", body(i), Properties(delivery_mode=2))).wait
    queue = vhost.queues["big"]
    assert cold_count(queue) == 10
    assert queue.withdraw(queue._fresh[0][0].ids[3])
    assert [m.body[:6] for m in queue.ready_messages()] == [
        f"{i:06d}".encode() for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    assert vhost.purge_queue("big") == 9
    await broker.close()
    broker, vhost = await open_broker(tmp_path)
    assert vhost.queues["big"].ready_count == 0
    await broker.close()
