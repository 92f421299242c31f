"""A transient backlog far larger than the memory high-water mark: the broker pages the bodies
out to the queue's spill log, so its publisher is blocked only while that happens (RabbitMQ
pages transient messages out the same way), and every message is delivered, in order."""
from __future__ import annotations

import asyncio
import os

import aio_pika
import pytest

pytestmark = pytest.mark.timeout(300)  # a hang fails; a loaded machine is only slow

T = 20
HIGH_WATER = 1_000_000
COUNT = 3000  # 12 MB of 4 KiB bodies: twelve times the mark


def body(i: int) -> bytes:
    return b"%06d" % i + bytes([i % 256]) * (4096 - 6)


async def test_transient_backlog_pages_out_and_never_blocks_for_good(make_broker, tmp_path):
    rb = make_broker(server={"memory_high_water_bytes": HIGH_WATER})
    conn = await asyncio.wait_for(
        aio_pika.connect(f"amqp://guest:guest@{rb.host}:{rb.ports['amqp']}/"), T)
    async with conn:
        channel = await conn.channel()  # confirms: a publisher blocked for good times out here
        await channel.declare_queue("backlog", durable=True)
        for i in range(COUNT):
            await asyncio.wait_for(channel.default_exchange.publish(
                aio_pika.Message(body(i), delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                "backlog"), T)
        queue = rb.broker.vhosts["/"].queues["backlog"]
        assert rb.call(lambda: queue.ready_count) == COUNT
        # the broker's own accounting: the 12 MB wait on disk, memory is under the mark
        assert rb.call(lambda: rb.broker.memory.used_bytes) < HIGH_WATER
        assert rb.call(lambda: queue.cold_count) > COUNT // 2  # 12 bytes each in memory
        assert os.listdir(tmp_path / "data" / "spill")

        reader = await conn.channel()
        await reader.set_qos(prefetch_count=100)
        got: asyncio.Queue = asyncio.Queue()
        consumer = await reader.get_queue("backlog")

        async def on_message(message):
            await got.put(message.body)
            await message.ack()

        await consumer.consume(on_message)
        for i in range(COUNT):
            assert await asyncio.wait_for(got.get(), T) == body(i)
    stop = rb.stop
    stop()
    rb.stop = lambda: None
    rb2 = make_broker()
    # transient messages do not outlive the broker; their spill files are gone
    assert rb2.call(lambda: rb2.broker.vhosts["/"].queues["backlog"].ready_count) == 0
    assert not os.path.exists(tmp_path / "data" / "spill")
