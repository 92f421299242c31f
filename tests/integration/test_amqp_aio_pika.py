"""AMQP 0-9-1 with aio-pika (and aiormq underneath) against a real broker on an ephemeral port.

Every wait is time-boxed; every test asserts what the client received."""
from __future__ import annotations

import asyncio
import datetime
import decimal
import os

import aio_pika
import aiormq
import pytest
from aio_pika import ExchangeType, Message

from tests.fakes import PendingLog

T = 30  # seconds: the bound on every wait (generous: only a failing wait takes that long)


def url(rb, user="guest", password="guest", vhost="", **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"amqp://{user}:{password}@{rb.host}:{rb.ports['amqp']}/{vhost}" + \
        (f"?{query}" if query else "")


async def connect(rb, **params):
    return await asyncio.wait_for(aio_pika.connect(url(rb, **params)), T)


async def get_within(queue, seconds: float):
    """Basic.Get until a message comes (a TTL or dead-letter takes a timer turn), time-boxed."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        message = await queue.get(timeout=T, fail=False)
        if message is not None:
            return message
        assert asyncio.get_running_loop().time() < deadline, f"nothing in {queue.name}"
        await asyncio.sleep(0.02)


async def drain(queue: asyncio.Queue, n: int) -> list:
    return [await asyncio.wait_for(queue.get(), T) for _ in range(n)]


async def test_confirms_and_ordering_with_prefetch(running_broker):
    conn = await connect(running_broker)
    async with conn:
        pub = await conn.channel(publisher_confirms=True)
        await pub.declare_queue("ordered", auto_delete=False)
        confirms = [await pub.default_exchange.publish(Message(b"%d" % i), routing_key="ordered")
                    for i in range(50)]
        # a pipelined batch, confirmed out of one round trip each
        confirms += await asyncio.wait_for(asyncio.gather(*[
            pub.default_exchange.publish(Message(b"%d" % i), routing_key="ordered")
            for i in range(50, 300)]), T)
        assert all(isinstance(c, aiormq.abc.ConfirmationFrameType) for c in confirms)
        assert all(c.name == "Basic.Ack" for c in confirms)

        sub = await conn.channel()
        await sub.set_qos(prefetch_count=10)
        got: asyncio.Queue = asyncio.Queue()
        q = await sub.get_queue("ordered")
        await q.consume(got.put)
        bodies = []
        for batch in range(30):
            messages = await drain(got, 10)
            await asyncio.sleep(0.01 if batch < 3 else 0)
            assert got.empty()  # prefetch 10: nothing more until we ack
            bodies += [m.body for m in messages]
            await messages[-1].ack(multiple=True)
        assert bodies == [b"%d" % i for i in range(300)]


async def test_topic_fanout_headers_direct_routing(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        topic = await ch.declare_exchange("t", ExchangeType.TOPIC)
        fanout = await ch.declare_exchange("f", ExchangeType.FANOUT)
        headers = await ch.declare_exchange("h", ExchangeType.HEADERS)
        direct = await ch.declare_exchange("d", ExchangeType.DIRECT)
        qs = {name: await ch.declare_queue(name, exclusive=True)
              for name in ("star", "hash", "f1", "f2", "hall", "hany", "d1")}
        await qs["star"].bind(topic, "a.*.c")
        await qs["hash"].bind(topic, "a.#")
        await qs["f1"].bind(fanout)
        await qs["f2"].bind(fanout, "ignored")
        await qs["hall"].bind(headers, arguments={"x-match": "all", "k": "v", "n": 1})
        await qs["hany"].bind(headers, arguments={"x-match": "any", "k": "v", "n": 2})
        await qs["d1"].bind(direct, "key")
        await topic.publish(Message(b"t1"), "a.b.c")
        await topic.publish(Message(b"t2"), "a.b.b.c")
        await topic.publish(Message(b"t3"), "x.b.c")
        await fanout.publish(Message(b"f"), "whatever")
        await headers.publish(Message(b"h1", headers={"k": "v", "n": 1}), "")
        await headers.publish(Message(b"h2", headers={"k": "v"}), "")
        await headers.publish(Message(b"h3", headers={"n": 2}), "")
        await direct.publish(Message(b"d-yes"), "key")
        await direct.publish(Message(b"d-no"), "other")

        async def bodies(q):
            out = []
            while True:
                m = await q.get(no_ack=True, fail=False, timeout=T)
                if m is None:
                    return out
                out.append(m.body)

        assert await bodies(qs["star"]) == [b"t1"]
        assert await bodies(qs["hash"]) == [b"t1", b"t2"]
        assert await bodies(qs["f1"]) == [b"f"]
        assert await bodies(qs["f2"]) == [b"f"]
        assert await bodies(qs["hall"]) == [b"h1"]
        assert await bodies(qs["hany"]) == [b"h1", b"h2", b"h3"]
        assert await bodies(qs["d1"]) == [b"d-yes"]


async def test_exchange_to_exchange_binding(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        src = await ch.declare_exchange("src", ExchangeType.TOPIC)
        dst = await ch.declare_exchange("dst", ExchangeType.FANOUT)
        await dst.bind(src, "x.#")
        q = await ch.declare_queue("", exclusive=True)
        await q.bind(dst)
        await src.publish(Message(b"via-e2e"), "x.y")
        await src.publish(Message(b"dropped"), "z")
        m = await q.get(timeout=T)
        assert m.body == b"via-e2e"
        await m.ack()
        assert await q.get(fail=False, timeout=T) is None
        await dst.unbind(src, "x.#")
        await src.publish(Message(b"after-unbind"), "x.y")
        assert await q.get(fail=False, timeout=T) is None


async def test_nack_requeue_sets_redelivered(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue("", exclusive=True)
        await ch.default_exchange.publish(Message(b"again"), q.name)
        first = await q.get(timeout=T)
        assert not first.redelivered
        await first.nack(requeue=True)
        second = await q.get(timeout=T)
        assert second.body == b"again" and second.redelivered
        await second.reject(requeue=True)
        third = await q.get(timeout=T)
        assert third.redelivered
        await third.ack()
        assert await q.get(fail=False, timeout=T) is None


async def test_nack_multiple_and_ack_multiple(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=100)
        q = await ch.declare_queue("", exclusive=True)
        for i in range(6):
            await ch.default_exchange.publish(Message(b"%d" % i), q.name)
        got: asyncio.Queue = asyncio.Queue()
        tag = await q.consume(got.put)
        msgs = await drain(got, 6)
        await msgs[2].nack(multiple=True, requeue=False)   # drops 0, 1, 2
        await msgs[5].ack(multiple=True)                   # acks 3, 4, 5
        await q.cancel(tag)
        assert await q.get(fail=False, timeout=T) is None


async def test_dead_lettering_records_x_death(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        dlx = await ch.declare_exchange("dlx", ExchangeType.FANOUT)
        dead = await ch.declare_queue("dead", exclusive=True)
        await dead.bind(dlx)
        work = await ch.declare_queue("work", exclusive=True,
                                      arguments={"x-dead-letter-exchange": "dlx"})
        await ch.default_exchange.publish(Message(b"doomed", headers={"keep": "me"}), "work")
        m = await work.get(timeout=T)
        await m.reject(requeue=False)
        d = await dead.get(timeout=T)
        assert d.body == b"doomed"
        assert d.headers["keep"] == "me"
        death = d.headers["x-death"][0]
        assert death["queue"] == "work"
        assert death["reason"] == "rejected"
        assert death["count"] == 1
        assert death["exchange"] == ""
        assert death["routing-keys"] == ["work"]
        assert isinstance(death["time"], datetime.datetime)
        assert d.headers["x-first-death-reason"] == "rejected"


async def test_message_ttl_expires_to_dead_letter_and_max_length_drops_head(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        expired = await ch.declare_queue("expired", exclusive=True)
        await ch.declare_queue("ttl", exclusive=True, arguments={
            "x-message-ttl": 50, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "expired"})
        await ch.default_exchange.publish(Message(b"short-lived"), "ttl")
        await ch.default_exchange.publish(Message(b"per-message", expiration=0.02), "ttl")
        first = await get_within(expired, T)
        second = await get_within(expired, T)
        assert {first.body, second.body} == {b"short-lived", b"per-message"}
        assert first.headers["x-death"][0]["reason"] == "expired"

        capped = await ch.declare_queue("capped", exclusive=True, arguments={"x-max-length": 2})
        for i in range(5):
            await ch.default_exchange.publish(Message(b"%d" % i), "capped")
        info = await ch.declare_queue("capped", exclusive=True, arguments={"x-max-length": 2})
        assert info.declaration_result.message_count == 2
        assert (await capped.get(timeout=T, no_ack=True)).body == b"3"
        assert (await capped.get(timeout=T, no_ack=True)).body == b"4"


async def test_reject_publish_overflow_gives_negative_confirm(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.declare_queue("full", exclusive=True,
                               arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        ok = await ch.default_exchange.publish(Message(b"1"), "full")
        assert ok.name == "Basic.Ack"
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await ch.default_exchange.publish(Message(b"2"), "full")


async def test_channel_errors_close_the_channel_not_the_connection(running_broker):
    conn = await connect(running_broker)
    other = await connect(running_broker)
    async with conn, other:
        ch = await conn.channel()
        # 404 NOT_FOUND
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity) as err:
            await ch.declare_queue("missing", passive=True)
        assert "NOT_FOUND - no queue 'missing' in vhost '/'" in str(err.value)
        # 406 PRECONDITION_FAILED (inequivalent redeclare)
        ch = await conn.channel()
        await ch.declare_queue("durable-q", durable=True)
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as err:
            await ch.declare_queue("durable-q", durable=False)
        assert "inequivalent arg 'durable'" in str(err.value)
        # 405 RESOURCE_LOCKED (exclusive queue of another connection)
        och = await other.channel()
        await och.declare_queue("mine", exclusive=True)
        ch = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelLockedResource) as err:
            await ch.declare_queue("mine", passive=True)
        assert "RESOURCE_LOCKED" in str(err.value)
        # 403 ACCESS_REFUSED (reserved name)
        ch = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as err:
            await ch.declare_exchange("amq.mine", ExchangeType.DIRECT)
        assert "ACCESS_REFUSED" in str(err.value)
        # the connection is still fine
        ch = await conn.channel()
        q = await ch.declare_queue("", exclusive=True)
        await ch.default_exchange.publish(Message(b"alive"), q.name)
        assert (await q.get(timeout=T)).body == b"alive"


async def test_publish_to_missing_exchange_closes_channel_with_404(running_broker):
    conn = await aiormq.connect(url(running_broker))
    try:
        ch = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as err:
            await asyncio.wait_for(ch.basic_publish(b"x", exchange="nowhere", routing_key="k"),
                                   T)
        assert ch.is_closed
        assert "no exchange 'nowhere' in vhost '/'" in str(err.value)
        ch2 = await conn.channel()
        ok = await ch2.queue_declare("", exclusive=True)
        assert ok.queue.startswith("amq.gen-")
    finally:
        await conn.close()


async def test_unknown_delivery_tag_is_406(running_broker):
    conn = await aiormq.connect(url(running_broker))
    try:
        ch = await conn.channel()
        await ch.basic_ack(12345)
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as err:
            await asyncio.wait_for(ch.closing, T)
        assert "PRECONDITION_FAILED - unknown delivery tag 12345" in str(err.value)
        assert not conn.is_closed
    finally:
        await conn.close()


async def test_basic_get_and_get_empty(running_broker):
    conn = await aiormq.connect(url(running_broker))
    try:
        ch = await conn.channel()
        declared = await ch.queue_declare("", exclusive=True)
        empty = await ch.basic_get(declared.queue)
        assert isinstance(empty.delivery, aiormq.spec.Basic.GetEmpty)
        for i in range(3):
            await ch.basic_publish(b"g%d" % i, routing_key=declared.queue)
        got = await ch.basic_get(declared.queue)
        assert got.body == b"g0"
        assert got.delivery.message_count == 2
        assert got.routing_key == declared.queue
        await ch.basic_ack(got.delivery.delivery_tag)
        got = await ch.basic_get(declared.queue, no_ack=True)
        assert got.body == b"g1"
    finally:
        await conn.close()


async def test_mandatory_publish_is_returned_with_no_route(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=False)
        returned: asyncio.Queue = asyncio.Queue()
        ch.return_callbacks.add(lambda _ch, message: returned.put_nowait(message))
        await ch.default_exchange.publish(Message(b"lost", message_id="m1"), "no-such-queue",
                                          mandatory=True)
        message = await asyncio.wait_for(returned.get(), T)
        assert message.body == b"lost"
        assert message.message_id == "m1"
        assert message.routing_key == "no-such-queue"

        raising = await conn.channel(publisher_confirms=True, on_return_raises=True)
        with pytest.raises(aio_pika.exceptions.DeliveryError) as err:
            await raising.default_exchange.publish(Message(b"lost"), "nowhere", mandatory=True)
        assert err.value.frame.reply_code == 312
        assert err.value.frame.reply_text == "NO_ROUTE"


async def test_unacked_messages_are_requeued_when_the_channel_closes(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue("rq")
        for i in range(3):
            await ch.default_exchange.publish(Message(b"%d" % i), "rq")
        sub = await conn.channel()
        q = await sub.get_queue("rq")
        got: asyncio.Queue = asyncio.Queue()
        await q.consume(got.put)
        first = await drain(got, 3)
        assert [m.redelivered for m in first] == [False] * 3
        await sub.close()
        q = await ch.get_queue("rq")
        again = [await q.get(timeout=T) for _ in range(3)]
        assert [m.body for m in again] == [b"0", b"1", b"2"]
        assert all(m.redelivered for m in again)


async def test_one_mib_binary_body_with_all_properties(running_broker):
    body = os.urandom(1024 * 1024)
    headers = {"str": "text", "int": -7, "big": 2 ** 40, "bool": True, "float": 2.5,
               "list": [1, "two", [3]], "table": {"nested": "yes"}, "bytes": bytearray(b"\x00\xff"),
               "dec": decimal.Decimal("1.25"), "none": None,
               "when": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)}
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue("", exclusive=True)
        sent = Message(body, content_type="application/octet-stream", content_encoding="raw",
                       headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                       priority=3, correlation_id="corr", reply_to="replies",
                       expiration=60, message_id="mid", timestamp=datetime.datetime(
                           2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                       type="kind", user_id="guest", app_id="tests")
        await ch.default_exchange.publish(sent, q.name)
        got = await q.get(timeout=T)
        assert got.body == body
        assert got.content_type == "application/octet-stream"
        assert got.content_encoding == "raw"
        assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert got.priority == 3
        assert got.correlation_id == "corr"
        assert got.reply_to == "replies"
        assert got.message_id == "mid"
        assert got.type == "kind"
        assert got.user_id == "guest"
        assert got.app_id == "tests"
        assert got.timestamp == datetime.datetime(2024, 1, 2, 3, 4, 5,
                                                  tzinfo=datetime.timezone.utc)
        assert got.expiration is not None
        for key, value in headers.items():
            if key == "bytes":
                assert bytes(got.headers[key]) == value
            else:
                assert got.headers[key] == value, key


async def test_stream_replay_from_first_and_from_offset(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"})
        for i in range(10):
            await ch.default_exchange.publish(Message(b"e%d" % i), "events")

        async def read(offset, n):
            sub = await conn.channel()
            await sub.set_qos(prefetch_count=5)
            q = await sub.get_queue("events")
            got: asyncio.Queue = asyncio.Queue()

            async def on_message(m):
                await got.put((m.body, m.headers.get("x-stream-offset")))
                await m.ack()

            await q.consume(on_message, arguments={"x-stream-offset": offset})
            out = await drain(got, n)
            await sub.close()
            return out

        everything = await read("first", 10)
        assert [b for b, _ in everything] == [b"e%d" % i for i in range(10)]
        assert [o for _, o in everything] == list(range(10))
        tail = await read(7, 3)
        assert tail == [(b"e7", 7), (b"e8", 8), (b"e9", 9)]
        since = await read(datetime.datetime.now(datetime.timezone.utc) -
                           datetime.timedelta(minutes=5), 10)
        assert [o for _, o in since] == list(range(10))
        assert [o for _, o in await read("1h", 10)] == list(range(10))


async def test_server_cancels_consumer_when_queue_is_deleted(running_broker):
    conn = await aiormq.connect(url(running_broker))
    try:
        ch = await conn.channel()
        await ch.queue_declare("temp")
        cancelled: asyncio.Queue = asyncio.Queue()
        ch.on_consumer_cancel_callbacks.add(lambda frame: cancelled.put_nowait(frame))
        ok = await ch.basic_consume("temp", lambda m: None)
        other = await conn.channel()
        await other.queue_delete("temp")
        frame = await asyncio.wait_for(cancelled.get(), T)
        assert frame.consumer_tag == ok.consumer_tag
    finally:
        await conn.close()


async def test_global_qos_limits_the_whole_channel(running_broker):
    conn = await aiormq.connect(url(running_broker))
    try:
        ch = await conn.channel()
        await ch.basic_qos(prefetch_count=3, global_=True)
        a = (await ch.queue_declare("", exclusive=True)).queue
        b = (await ch.queue_declare("", exclusive=True)).queue
        for i in range(5):
            await ch.basic_publish(b"a", routing_key=a)
            await ch.basic_publish(b"b", routing_key=b)
        got: asyncio.Queue = asyncio.Queue()
        await ch.basic_consume(a, got.put)
        await ch.basic_consume(b, got.put)
        first = await drain(got, 3)
        await asyncio.sleep(0.1)
        assert got.empty()  # three unacked on the channel: no more
        await ch.basic_ack(first[-1].delivery.delivery_tag, multiple=True)
        more = await drain(got, 3)
        assert len(more) == 3
    finally:
        await conn.close()


async def test_wrong_password_is_refused(running_broker):
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError) as err:
        await connect(running_broker, password="wrong")
    assert "ACCESS_REFUSED" in str(err.value)


async def test_unknown_vhost_is_530(running_broker):
    # aiormq reports the Connection.Close it got instead of Connection.OpenOk
    with pytest.raises(aiormq.exceptions.AMQPError) as err:
        await asyncio.wait_for(aiormq.connect(url(running_broker, vhost="nope")), T)
    assert "Connection.Close" in str(err.value)


async def test_heartbeats_keep_an_idle_client_alive(make_broker):
    rb = make_broker(amqp={"heartbeat_s": 1})
    conn = await aiormq.connect(url(rb, heartbeat=1))
    try:
        assert conn.connection_tune.heartbeat == 1
        await asyncio.sleep(3)  # idle for three heartbeat periods
        ch = await conn.channel()
        assert (await ch.queue_declare("", exclusive=True)).queue
    finally:
        await conn.close()


async def test_exclusive_queues_go_with_their_connection(running_broker):
    conn = await connect(running_broker)
    ch = await conn.channel()
    await ch.declare_queue("excl", exclusive=True)
    await conn.close()
    deadline = asyncio.get_running_loop().time() + T
    while asyncio.get_running_loop().time() < deadline:
        if "excl" not in running_broker.call(lambda: list(
                running_broker.broker.vhosts["/"].queues)):
            break
        await asyncio.sleep(0.02)
    assert "excl" not in running_broker.call(lambda: list(running_broker.broker.vhosts["/"].queues))


async def test_confirms_wait_for_disk_and_nack_when_it_fails(running_broker):
    rb = running_broker
    conn = await aiormq.connect(url(rb))
    try:
        ch = await conn.channel()  # aiormq channels confirm by default
        await ch.queue_declare("disk", durable=True)
        vhost = rb.broker.vhosts["/"]
        log = PendingLog(rb.loop)
        rb.call(lambda: setattr(vhost.queues["disk"], "log", log))
        persistent = aiormq.spec.Basic.Properties(delivery_mode=2)
        first = asyncio.ensure_future(ch.basic_publish(b"1", routing_key="disk"))
        second = asyncio.ensure_future(ch.basic_publish(b"2", routing_key="disk",
                                                        properties=persistent))
        third = asyncio.ensure_future(ch.basic_publish(b"3", routing_key="disk"))
        fourth = asyncio.ensure_future(ch.basic_publish(b"4", routing_key="disk",
                                                        properties=persistent))
        await asyncio.wait_for(asyncio.gather(first, third), T)
        await asyncio.sleep(0.05)
        assert not second.done() and not fourth.done()  # no multiple ack swept them up
        rb.call(lambda: log.pending[0].set_result(None))
        assert (await asyncio.wait_for(second, T)).name == "Basic.Ack"
        rb.call(lambda: log.pending[1].set_exception(OSError("disk full")))
        with pytest.raises(aiormq.exceptions.DeliveryError):
            await asyncio.wait_for(fourth, T)
    finally:
        await conn.close()


async def test_direct_reply_to_round_trip(running_broker):
    client = await connect(running_broker)
    server = await connect(running_broker)
    async with client, server:
        sch = await server.channel()
        requests = await sch.declare_queue("rpc-requests", exclusive=True)

        async def respond(message):
            async with message.process():
                assert message.reply_to.startswith("amq.rabbitmq.reply-to.")
                await sch.default_exchange.publish(
                    Message(b"re: " + message.body, correlation_id=message.correlation_id),
                    routing_key=message.reply_to)

        await requests.consume(respond)
        cch = await client.channel()
        replies: asyncio.Queue = asyncio.Queue()
        reply_queue = await cch.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await reply_queue.consume(replies.put, no_ack=True)
        for i in range(3):
            await cch.default_exchange.publish(
                Message(b"ping%d" % i, reply_to="amq.rabbitmq.reply-to", correlation_id=str(i)),
                routing_key="rpc-requests")
        got = [await asyncio.wait_for(replies.get(), T) for _ in range(3)]
        assert sorted((m.correlation_id, m.body) for m in got) == [
            (str(i), b"re: ping%d" % i) for i in range(3)]


async def test_direct_reply_to_needs_the_reply_consumer(running_broker):
    conn = await aiormq.connect(url(running_broker))
    try:
        ch = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as err:
            await asyncio.wait_for(ch.basic_publish(
                b"x", routing_key="q", properties=aiormq.spec.Basic.Properties(
                    reply_to="amq.rabbitmq.reply-to")), T)
        assert "fast reply consumer does not exist" in str(err.value)
    finally:
        await conn.close()


async def test_an_adversarial_topic_binding_does_not_stall_publishing(running_broker):
    # 19 '#' then a word: a matcher that tries every split of a 40-word key at every '#' takes
    # seconds per publish and freezes every connection. Each wait below is time-boxed by T.
    conn = await connect(running_broker)
    other = await connect(running_broker)
    async with conn, other:
        ch = await conn.channel(publisher_confirms=True)
        topic = await ch.get_exchange("amq.topic")
        trap = await ch.declare_queue("", exclusive=True)
        await trap.bind(topic, ".".join(["#"] * 19 + ["z"]))
        # 20 publishes to 20 different keys (the router caches results per key), confirmed
        # within T all together (the exponential matcher: ~40 s)
        await asyncio.wait_for(asyncio.gather(*[
            topic.publish(Message(b"miss"), ".".join(["a"] * 39 + [f"y{i}"]))
            for i in range(20)]), T)
        await asyncio.wait_for(topic.publish(Message(b"hit"), ".".join(["a"] * 39 + ["z"])), T)
        # another connection, meanwhile, is served
        och = await other.channel()
        q = await och.declare_queue("", exclusive=True)
        await och.default_exchange.publish(Message(b"ping"), routing_key=q.name)
        m = await q.get(timeout=T)
        assert m.body == b"ping"
        m = await trap.get(timeout=T)
        assert m.body == b"hit"
        await m.ack()
        assert await trap.get(fail=False, timeout=T) is None


async def test_quorum_queue_delivery_limit_dead_letters_the_poison_message(running_broker):
    conn = await connect(running_broker)
    async with conn:
        ch = await conn.channel()
        dlx = await ch.declare_exchange("poison-dlx", ExchangeType.FANOUT)
        dead = await ch.declare_queue("poison-dead", durable=True)
        await dead.bind(dlx)
        q = await ch.declare_queue("poison-quorum", durable=True, arguments={
            "x-queue-type": "quorum", "x-delivery-limit": 1,
            "x-dead-letter-exchange": "poison-dlx"})
        await ch.default_exchange.publish(Message(b"poison"), routing_key=q.name)
        for attempt in range(2):
            m = await q.get(timeout=T)
            assert m.body == b"poison" and m.redelivered == (attempt > 0)
            await m.nack(requeue=True)
        assert await q.get(fail=False, timeout=T) is None
        m = await dead.get(timeout=T)
        assert m.body == b"poison"
        death = m.headers["x-death"][0]
        assert (death["reason"], death["queue"]) == ("delivery_limit", "poison-quorum")
        await m.ack()
