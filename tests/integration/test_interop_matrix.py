"""The interop matrix: each of AMQP (aio-pika), MQTT 3.1.1 and 5.0 (paho) and STOMP (stomp.py)
publishes, each consumes, on topics and on queues, with a binary body and every property.

What each consumer must see is derived from the table in adapters/INTEROP.md: a field is expected
when both the publisher's and the consumer's protocol can carry it. Each cell asserts the bytes
and the properties the consumer received.
"""
from __future__ import annotations

import asyncio
import datetime
import pathlib
import queue
import re
import uuid

import aio_pika
import paho.mqtt.client as mqtt
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as MqttProperties

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)
BODY = bytes(range(256)) + b"\x00\x00binary tail\xff"
EXPIRY_MS = 600_000
SENT = {
    "content_type": "application/x-interop",
    "content_encoding": "identity",
    "correlation_id": "corr-42",
    "reply_to": "replies.abc",
    "message_id": "msg-7",
    "expiration": str(EXPIRY_MS),
    "priority": 5,
    "persistent": True,
    "timestamp": 1_700_000_000,
    "type": "order.created",
    "user_id": "guest",
    "app_id": "interop",
    "headers": {"region": "eu-west", "tenant": "acme"},
}
PROTOCOLS = ["amqp", "mqtt5", "mqtt311", "stomp"]
COLUMN = {"amqp": 1, "mqtt5": 2, "mqtt311": 3, "stomp": 4}


def read_table() -> dict[str, dict[str, bool]]:
    """field -> protocol -> can carry it, from the table in adapters/INTEROP.md."""
    text = (pathlib.Path(__file__).parents[2] / "adapters" / "INTEROP.md").read_text()
    block = text.split("<!-- interop-table:start -->")[1].split("<!-- interop-table:end -->")[0]
    rows = [line for line in block.strip().splitlines()[2:] if line.startswith("|")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0]] = {p: cells[i] != "-" for p, i in COLUMN.items()}
    return table


TABLE = read_table()


def test_table_covers_the_message_model():
    from manifold.broker.message import PROPERTY_NAMES
    model = {"body", "persistent"} | {n for n in PROPERTY_NAMES if n != "delivery_mode"}
    assert set(TABLE) == model


# ------------------------------------------------------------------------ publishers
async def publish_amqp(port, kind, target, fields):
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/", timeout=WAIT)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        message = aio_pika.Message(
            BODY, content_type=fields["content_type"], content_encoding=fields["content_encoding"],
            correlation_id=fields["correlation_id"], reply_to=fields["reply_to"],
            message_id=fields["message_id"], expiration=EXPIRY_MS / 1000,
            priority=fields["priority"], delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=datetime.datetime.fromtimestamp(fields["timestamp"], datetime.timezone.utc),
            type=fields["type"], user_id=fields["user_id"], app_id=fields["app_id"],
            headers=fields["headers"])
        if kind == "topic":
            exchange = await channel.get_exchange("amq.topic")
            await asyncio.wait_for(exchange.publish(message, routing_key=target), WAIT)
        else:
            await asyncio.wait_for(channel.default_exchange.publish(message, routing_key=target),
                                   WAIT)


def _mqtt_client(port, version):
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=f"interop-{uuid.uuid4().hex[:8]}", protocol=version)
    connected = queue.Queue()
    client.on_connect = lambda c, u, flags, rc, props: connected.put(rc)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    rc = connected.get(timeout=WAIT)
    assert not rc.is_failure, rc
    return client


def publish_mqtt(port, version, topic, fields):
    client = _mqtt_client(port, version)
    try:
        props = None
        if version == mqtt.MQTTv5:
            props = MqttProperties(PacketTypes.PUBLISH)
            props.ContentType = fields["content_type"]
            props.CorrelationData = fields["correlation_id"].encode()
            props.ResponseTopic = fields["reply_to"].replace(".", "/")
            props.MessageExpiryInterval = EXPIRY_MS // 1000
            props.UserProperty = list(fields["headers"].items())
        info = client.publish(topic, BODY, qos=1, properties=props)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def publish_stomp(port, destination, fields):
    conn = stomp.Connection12([("127.0.0.1", port)])
    conn.connect("guest", "guest", wait=True)
    try:
        receipt = queue.Queue()

        class OnReceipt(stomp.ConnectionListener):
            def on_receipt(self, frame):
                receipt.put(frame.headers["receipt-id"])

        conn.set_listener("receipt", OnReceipt())
        headers = {
            "content-type": fields["content_type"], "content-encoding": fields["content_encoding"],
            "correlation-id": fields["correlation_id"], "reply-to": fields["reply_to"],
            "amqp-message-id": fields["message_id"], "expiration": fields["expiration"],
            "priority": str(fields["priority"]), "persistent": "true",
            "timestamp": str(fields["timestamp"]), "type": fields["type"],
            "user-id": fields["user_id"], "app-id": fields["app_id"], **fields["headers"],
        }
        conn.send(destination, BODY, headers=headers, receipt="sent-1")
        assert receipt.get(timeout=WAIT) == "sent-1"
    finally:
        conn.disconnect()


# ------------------------------------------------------------------------ consumers
class AmqpConsumer:
    async def start(self, port, kind, name):
        self.connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/",
                                                 timeout=WAIT)
        channel = await self.connection.channel()
        if kind == "topic":
            self.queue = await channel.declare_queue(exclusive=True)
            await self.queue.bind("amq.topic", routing_key=name)
        else:
            self.queue = await channel.declare_queue(name, durable=True)
        self.received: asyncio.Queue = asyncio.Queue()
        await self.queue.consume(self.received.put)

    async def receive(self):
        message = await asyncio.wait_for(self.received.get(), WAIT)
        await message.ack()
        ts = message.timestamp
        seen = {
            "body": message.body, "content_type": message.content_type,
            "content_encoding": message.content_encoding,
            "correlation_id": message.correlation_id, "reply_to": message.reply_to,
            "message_id": message.message_id,
            # aio-pika reports an absent priority as 0
            "expiration": message.properties.expiration, "priority": message.priority or None,
            "persistent": message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
            "timestamp": int(ts.timestamp()) if ts else None, "type": message.type,
            "user_id": message.user_id, "app_id": message.app_id,
            "headers": {k: (v.decode() if isinstance(v, bytes) else v)
                        for k, v in (message.headers or {}).items()},
        }
        return seen

    async def stop(self):
        await self.connection.close()


class MqttConsumer:
    def __init__(self, version):
        self.version = version

    async def start(self, port, kind, name):
        assert kind == "topic"
        self.client = _mqtt_client(port, self.version)
        self.received = queue.Queue()
        subscribed = queue.Queue()
        self.client.on_message = lambda c, u, m: self.received.put(m)
        self.client.on_subscribe = lambda c, u, mid, rcs, props: subscribed.put(rcs)
        self.client.subscribe(name, qos=1)
        codes = subscribed.get(timeout=WAIT)
        assert not codes[0].is_failure

    async def receive(self):
        msg = await asyncio.to_thread(self.received.get, True, WAIT)
        seen = {"body": msg.payload, "persistent": msg.qos >= 1}
        if self.version == mqtt.MQTTv5:
            props = msg.properties
            correlation = getattr(props, "CorrelationData", None)
            expiry = getattr(props, "MessageExpiryInterval", None)
            response = getattr(props, "ResponseTopic", None)
            seen.update({
                "content_type": getattr(props, "ContentType", None),
                "correlation_id": correlation.decode() if correlation is not None else None,
                "reply_to": response.replace("/", ".") if response is not None else None,
                # the remaining lifetime, in whole seconds
                "expiration": str(expiry * 1000) if expiry is not None else None,
                "headers": dict(getattr(props, "UserProperty", [])),
            })
        return seen

    async def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


class StompConsumer:
    async def start(self, port, kind, name):
        self.conn = stomp.Connection12([("127.0.0.1", port)], auto_decode=False)
        self.received = queue.Queue()
        received = self.received

        class Listener(stomp.ConnectionListener):
            def on_message(self, frame):
                received.put(frame)

        self.conn.set_listener("m", Listener())
        self.conn.connect("guest", "guest", wait=True)
        destination = f"/topic/{name}" if kind == "topic" else f"/queue/{name}"
        receipt = queue.Queue()

        class OnReceipt(stomp.ConnectionListener):
            def on_receipt(self, frame):
                receipt.put(frame.headers["receipt-id"])

        self.conn.set_listener("r", OnReceipt())
        self.conn.subscribe(destination, id="1", ack="client-individual",
                            headers={"receipt": "sub-1"})
        assert receipt.get(timeout=WAIT) == "sub-1"

    async def receive(self):
        frame = await asyncio.to_thread(self.received.get, True, WAIT)
        h = frame.headers
        self.conn.ack(h["ack"])
        standard = {"destination", "message-id", "subscription", "ack", "redelivered",
                    "content-length", "content-type", "content-encoding", "correlation-id",
                    "reply-to", "amqp-message-id", "expiration", "priority", "persistent",
                    "timestamp", "type", "user-id", "app-id"}
        return {
            "body": frame.body, "content_type": h.get("content-type"),
            "content_encoding": h.get("content-encoding"),
            "correlation_id": h.get("correlation-id"), "reply_to": h.get("reply-to"),
            "message_id": h.get("amqp-message-id"), "expiration": h.get("expiration"),
            "priority": int(h["priority"]) if "priority" in h else None,
            "persistent": h.get("persistent") == "true",
            "timestamp": int(h["timestamp"]) if "timestamp" in h else None,
            "type": h.get("type"), "user_id": h.get("user-id"), "app_id": h.get("app-id"),
            "headers": {k: v for k, v in h.items() if k not in standard},
        }

    async def stop(self):
        self.conn.disconnect()


CONSUMERS = {"amqp": AmqpConsumer, "mqtt5": lambda: MqttConsumer(mqtt.MQTTv5),
             "mqtt311": lambda: MqttConsumer(mqtt.MQTTv311), "stomp": StompConsumer}

CELLS = [(pub, con, kind) for kind in ("topic", "queue") for pub in PROTOCOLS
         for con in PROTOCOLS if not (kind == "queue" and con.startswith("mqtt"))]


async def bind_for_mqtt(port, queue_name):
    """MQTT addresses topics only: bind the queue to amq.topic under its own name."""
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/", timeout=WAIT)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue_name, durable=True, passive=True)
        await q.bind("amq.topic", routing_key=queue_name)


@pytest.mark.parametrize("publisher,consumer,kind", CELLS,
                         ids=[f"{p}->{c}-{k}" for p, c, k in CELLS])
async def test_interop_cell(running_broker, publisher, consumer, kind):
    ports = running_broker.ports
    cell = f"{publisher}-{consumer}-{kind}"
    if kind == "topic":
        key = f"interop.{cell}.v1/2"       # a routing key; its MQTT topic is interop/<cell>/v1.2
        subscription = key if consumer in ("amqp", "stomp") else key.translate(
            str.maketrans("./", "/."))
    else:
        key = subscription = f"interop-q-{cell}"
    receiver = CONSUMERS[consumer]()
    await receiver.start(ports["mqtt" if consumer.startswith("mqtt") else consumer], kind,
                         subscription)
    try:
        if publisher == "amqp":
            await publish_amqp(ports["amqp"], kind, key, SENT)
        elif publisher == "stomp":
            await asyncio.to_thread(publish_stomp, ports["stomp"],
                                    f"/topic/{key}" if kind == "topic" else f"/queue/{key}", SENT)
        else:
            if kind == "queue":
                await bind_for_mqtt(ports["amqp"], key)
            topic = key.translate(str.maketrans("./", "/."))
            version = mqtt.MQTTv5 if publisher == "mqtt5" else mqtt.MQTTv311
            await asyncio.to_thread(publish_mqtt, ports["mqtt"], version, topic, SENT)
        seen = await receiver.receive()
    finally:
        await receiver.stop()

    assert seen["body"] == BODY  # bytes intact: no NUL added, no re-encoding
    for field, carried in TABLE.items():
        if field == "body":
            continue
        expected = carried[publisher] and carried[consumer]
        got = seen.get(field)
        if field == "persistent":
            assert got is True, (field, got)
        elif field == "headers":
            if expected:
                assert SENT["headers"].items() <= got.items(), got
        elif field == "expiration":
            if expected:
                # MQTT works in whole seconds and reports what is left of the lifetime (a
                # minute's margin for a loaded machine).
                assert got is not None and EXPIRY_MS - 60_000 <= int(got) <= EXPIRY_MS, got
        elif expected:
            assert got == SENT[field], (field, got)
        elif consumer != "mqtt311":
            assert got in (None, {}), (field, got)  # nothing invented


def test_mqtt_topic_with_dots_round_trips_through_amqp_and_stomp(running_broker):
    """MQTT `v1.2/status` is routing key `v1/2.status`; STOMP and AMQP see the key, MQTT the topic."""
    ports = running_broker.ports
    sub = _mqtt_client(ports["mqtt"], mqtt.MQTTv311)
    got = queue.Queue()
    sub.on_message = lambda c, u, m: got.put(m)
    subscribed = queue.Queue()
    sub.on_subscribe = lambda c, u, mid, rcs, props: subscribed.put(rcs)
    sub.subscribe("v1.2/+", qos=1)
    subscribed.get(timeout=WAIT)
    try:
        publish_stomp(ports["stomp"], "/topic/v1/2.status", SENT)
        msg = got.get(timeout=WAIT)
        assert msg.topic == "v1.2/status" and msg.payload == BODY
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_interop_table_lists_each_protocol_column():
    text = (pathlib.Path(__file__).parents[2] / "adapters" / "INTEROP.md").read_text()
    header = re.search(r"\| field \|(.*)\|", text).group(1)
    assert [c.strip() for c in header.split("|")] == [
        "AMQP 0-9-1", "MQTT 5.0", "MQTT 3.1.1", "STOMP 1.0-1.2"]


async def test_transient_amqp_message_reaches_a_qos1_mqtt_subscriber_at_qos0(running_broker):
    """QoS mapping: the publish QoS of an AMQP message is 1 if persistent, else 0, and the
    subscriber gets min(subscription QoS, publish QoS)."""
    ports = running_broker.ports
    receiver = MqttConsumer(mqtt.MQTTv5)
    await receiver.start(ports["mqtt"], "topic", "qos/map")
    try:
        connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{ports['amqp']}/")
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("amq.topic")
            await exchange.publish(aio_pika.Message(b"transient"), routing_key="qos.map")
            await exchange.publish(aio_pika.Message(
                b"persistent", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="qos.map")
        first = await asyncio.to_thread(receiver.received.get, True, WAIT)
        second = await asyncio.to_thread(receiver.received.get, True, WAIT)
        assert (first.payload, first.qos) == (b"transient", 0)
        assert (second.payload, second.qos) == (b"persistent", 1)
    finally:
        await receiver.stop()


async def test_stomp_without_persistent_is_transient_for_amqp(running_broker):
    ports = running_broker.ports
    receiver = AmqpConsumer()
    await receiver.start(ports["amqp"], "topic", "plain.note")
    try:
        conn = stomp.Connection11([("127.0.0.1", ports["stomp"])])
        conn.connect("guest", "guest", wait=True)
        conn.send("/topic/plain.note", b"note", headers={"x-kind": "memo"})
        message = await asyncio.wait_for(receiver.received.get(), WAIT)
        conn.disconnect()
        assert message.body == b"note"
        assert message.delivery_mode != aio_pika.DeliveryMode.PERSISTENT
        assert message.headers["x-kind"] == "memo"
    finally:
        await receiver.stop()


async def test_binary_correlation_data_round_trips_mqtt5_and_shows_in_amqp(running_broker):
    ports = running_broker.ports
    blob = b"\xff\x00\xfe binary"
    mqtt_receiver = MqttConsumer(mqtt.MQTTv5)
    await mqtt_receiver.start(ports["mqtt"], "topic", "corr/bin")
    amqp_receiver = AmqpConsumer()
    await amqp_receiver.start(ports["amqp"], "topic", "corr.bin")
    try:
        def publish():
            client = _mqtt_client(ports["mqtt"], mqtt.MQTTv5)
            props = MqttProperties(PacketTypes.PUBLISH)
            props.CorrelationData = blob
            client.publish("corr/bin", b"x", qos=1, properties=props).wait_for_publish(WAIT)
            client.disconnect()
            client.loop_stop()

        await asyncio.to_thread(publish)
        msg = await asyncio.to_thread(mqtt_receiver.received.get, True, WAIT)
        assert msg.properties.CorrelationData == blob
        message = await asyncio.wait_for(amqp_receiver.received.get(), WAIT)
        assert message.correlation_id is None
        assert message.headers["x-correlation-data"] == blob
    finally:
        await mqtt_receiver.stop()
        await amqp_receiver.stop()
