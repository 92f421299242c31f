"""Streams with real clients across a broker restart: records and named readers' offsets are on
disk, so readers at first, at an offset or at their stored offset get the right record."""
from __future__ import annotations

import asyncio

import aio_pika
import pika

T = 30  # seconds: generous, only a failing wait takes that long
ARGS = {"x-queue-type": "stream", "x-stream-max-segment-size-bytes": 32 * 1024}


def url(rb):
    return f"amqp://guest:guest@{rb.host}:{rb.ports['amqp']}/"


def stop(rb) -> None:
    rb.stop()
    rb.stop = lambda: None  # the fixture's teardown must not stop it twice


async def read(conn, n, arguments, ack_upto=None):
    """Consume ``n`` records; ack those with offset <= ``ack_upto`` (all when None)."""
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=50)
    queue = await channel.get_queue("events")
    got: asyncio.Queue = asyncio.Queue()

    async def on_message(m):
        offset = m.headers["x-stream-offset"]
        await got.put((offset, m.body))
        if ack_upto is None or offset <= ack_upto:
            await m.ack()

    tag = await queue.consume(on_message, arguments=arguments)
    out = [await asyncio.wait_for(got.get(), T) for _ in range(n)]
    await queue.cancel(tag)
    await channel.close()
    return out


async def test_named_reader_resumes_after_reconnect_and_restart(make_broker):
    rb = make_broker()
    conn = await asyncio.wait_for(aio_pika.connect(url(rb)), T)
    async with conn:
        channel = await conn.channel()  # publisher confirms: each publish waits for its fsync
        await channel.declare_queue("events", durable=True, arguments=ARGS)
        for i in range(600):  # about 300 kB: several segments
            await channel.default_exchange.publish(
                aio_pika.Message(b"%05d" % i + b"." * 500), "events")
        named = {"x-stream-offset": "first", "x-stream-reference": "billing"}
        first = await read(conn, 120, named, ack_upto=99)
        assert [o for o, _ in first] == list(range(120))
        again = await read(conn, 5, named, ack_upto=104)  # reconnect: resumes after the last acked offset
        assert [o for o, _ in again] == [100, 101, 102, 103, 104]
    await asyncio.sleep(0.3)  # the offsets' flush interval
    stop(rb)

    rb2 = make_broker()
    conn = await asyncio.wait_for(aio_pika.connect(url(rb2)), T)
    async with conn:
        resumed = await read(conn, 3, {"x-stream-offset": "first",
                                       "x-stream-reference": "billing"}, ack_upto=-1)
        assert [(o, b[:5]) for o, b in resumed] == [(105, b"00105"), (106, b"00106"),
                                                     (107, b"00107")]
        from_first = await read(conn, 2, {"x-stream-offset": "first"})
        assert [(o, b[:5]) for o, b in from_first] == [(0, b"00000"), (1, b"00001")]
        at_offset = await read(conn, 1, {"x-stream-offset": 432})
        assert [(o, b[:5]) for o, b in at_offset] == [(432, b"00432")]


def test_pika_reader_named_with_x_stream_reader_resumes_after_restart(make_broker):
    rb = make_broker()
    params = pika.ConnectionParameters(rb.host, rb.ports["amqp"], blocked_connection_timeout=T)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("events", durable=True, arguments=ARGS)
    for i in range(50):
        ch.basic_publish("", "events", b"%05d" % i)
    ch.basic_qos(prefetch_count=10)
    seen = []
    for method, props, body in ch.consume("events", arguments={
            "x-stream-offset": "first", "x-stream-reader": "audit"}, inactivity_timeout=T):
        assert method is not None, "no delivery in time"
        seen.append(props.headers["x-stream-offset"])
        ch.basic_ack(method.delivery_tag)
        if len(seen) == 20:
            break
    ch.cancel()
    conn.close()
    assert seen == list(range(20))
    stop(rb)

    rb2 = make_broker()
    conn = pika.BlockingConnection(pika.ConnectionParameters(rb2.host, rb2.ports["amqp"]))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    for method, props, body in ch.consume("events", arguments={
            "x-stream-offset": "first", "x-stream-reader": "audit"}, inactivity_timeout=T):
        assert method is not None, "no delivery in time"
        assert (props.headers["x-stream-offset"], body) == (20, b"00020")
        break
    ch.cancel()
    conn.close()
