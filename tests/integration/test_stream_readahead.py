"""Readers far behind a stream's tail, with aio-pika: a reader from ``first`` and one from an
offset read the segment files ahead (several reads in flight) while a writer appends, and get
every record in order, from disk and then from the tail, with its ``x-stream-offset``."""
from __future__ import annotations

import asyncio

import aio_pika

T = 30
#: 7.5 MB before the readers start: more than the tail cache (4 MiB), in 256 KiB segments
BEFORE, AFTER, SIZE = 2500, 500, 3000
ARGS = {"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 256 * 1024}


def body(i: int) -> bytes:
    return b"%06d" % i + bytes([i % 251]) * (SIZE - 6)


async def publish(channel, start: int, count: int) -> None:
    """With publisher confirms, 100 in flight at a time."""
    for first in range(start, start + count, 100):
        await asyncio.wait_for(asyncio.gather(*(
            channel.default_exchange.publish(aio_pika.Message(body(i)), "events")
            for i in range(first, min(first + 100, start + count)))), T)


async def consume(conn, arguments: dict, count: int, started: asyncio.Event):
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=100)
    queue = await channel.get_queue("events")
    got: list[tuple[int, bytes]] = []
    done = asyncio.get_running_loop().create_future()

    async def on_message(message):
        got.append((message.headers["x-stream-offset"], message.body))
        if len(got) >= 50:
            started.set()
        if len(got) >= count and not done.done():
            done.set_result(None)
        await message.ack()

    await queue.consume(on_message, arguments=arguments)
    await asyncio.wait_for(done, T)
    await channel.close()
    return got


async def test_readers_behind_the_tail_read_from_disk_in_order_while_a_writer_appends(
        make_broker):
    rb = make_broker()
    conn = await asyncio.wait_for(aio_pika.connect(
        f"amqp://guest:guest@{rb.host}:{rb.ports['amqp']}/"), T)
    async with conn:
        channel = await conn.channel()
        await channel.declare_queue("events", durable=True, arguments=ARGS)
        await publish(channel, 0, BEFORE)
        # (the first records are no longer in the stream's tail cache: they are read from disk)
        assert rb.call(lambda: rb.broker.vhosts["/"].queues["events"]._cache[0].offset) > 1000
        from_first, from_offset = asyncio.Event(), asyncio.Event()
        readers = asyncio.gather(
            consume(conn, {"x-stream-offset": "first"}, BEFORE + AFTER, from_first),
            consume(conn, {"x-stream-offset": 500}, BEFORE + AFTER - 500, from_offset))
        await asyncio.wait_for(asyncio.gather(from_first.wait(), from_offset.wait()), T)
        await publish(channel, BEFORE, AFTER)  # the writer goes on while they read
        first, at_offset = await readers
    total = BEFORE + AFTER
    assert [o for o, _ in first] == list(range(total))
    assert [b for _, b in first] == [body(i) for i in range(total)]
    assert [o for o, _ in at_offset] == list(range(500, total))
    assert [b for _, b in at_offset] == [body(i) for i in range(500, total)]
