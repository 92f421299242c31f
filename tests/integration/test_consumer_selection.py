"""Single active consumer and consumer priorities, through AMQP with aio-pika."""
import asyncio

import aio_pika
import pytest

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow
WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)


async def connect(rb):
    return await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{rb.ports['amqp']}/",
                                  timeout=WAIT)


async def test_single_active_consumer_fails_over_in_order(running_broker):
    first_conn, second_conn = await connect(running_broker), await connect(running_broker)
    try:
        first_ch = await first_conn.channel()
        await first_ch.set_qos(prefetch_count=2)
        queue = await first_ch.declare_queue(
            "sac", durable=True, arguments={"x-single-active-consumer": True})
        first_got, second_got = asyncio.Queue(), asyncio.Queue()
        await queue.consume(first_got.put)
        second_ch = await second_conn.channel()
        await second_ch.set_qos(prefetch_count=10)
        second_queue = await second_ch.declare_queue(
            "sac", durable=True, arguments={"x-single-active-consumer": True})
        await second_queue.consume(second_got.put)
        for i in range(4):
            await first_ch.default_exchange.publish(aio_pika.Message(f"m{i}".encode()), "sac")
        m0 = await asyncio.wait_for(first_got.get(), WAIT)
        m1 = await asyncio.wait_for(first_got.get(), WAIT)
        assert (m0.body, m1.body) == (b"m0", b"m1")
        await m0.ack()
        m2 = await asyncio.wait_for(first_got.get(), WAIT)
        assert m2.body == b"m2" and second_got.empty()  # the standby gets nothing
        await first_conn.close()  # m1, m2 unacked: they go to the standby first, then m3
        bodies = [(await asyncio.wait_for(second_got.get(), WAIT)).body for _ in range(3)]
        assert bodies == [b"m1", b"m2", b"m3"]
    finally:
        await second_conn.close()


async def test_higher_priority_consumer_is_served_first(running_broker):
    conn = await connect(running_broker)
    try:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue("prio-consumers", auto_delete=True)
        low, high = asyncio.Queue(), asyncio.Queue()
        await queue.consume(low.put, arguments={"x-priority": 0})
        await queue.consume(high.put, arguments={"x-priority": 10})
        await channel.default_exchange.publish(aio_pika.Message(b"a"), "prio-consumers")
        first = await asyncio.wait_for(high.get(), WAIT)
        assert first.body == b"a" and low.empty()
        # high holds its one unacked message: the next one spills over to low
        await channel.default_exchange.publish(aio_pika.Message(b"b"), "prio-consumers")
        second = await asyncio.wait_for(low.get(), WAIT)
        assert second.body == b"b"
        await first.ack()
        await second.ack()
    finally:
        await conn.close()
