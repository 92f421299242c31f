"""MQTT <-> AMQP 0-9-1 through ``amq.topic`` (adapters/INTEROP.md conventions): paho on one side, pika on
the other; topics with ``.`` round-trip, MQTT 5 properties map to AMQP properties and back."""
from __future__ import annotations

import queue
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pika = pytest.importorskip("pika")

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)


@pytest.fixture
def rb(running_broker):
    if "amqp" not in running_broker.ports:
        pytest.skip("the AMQP adapter is not available")
    return running_broker


def paho_client(port: int, proto=mqtt.MQTTv5):
    cl = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                     client_id=f"interop-{uuid.uuid4().hex[:6]}", protocol=proto)
    msgs: queue.Queue = queue.Queue()
    acks: queue.Queue = queue.Queue()
    cl.on_message = lambda c, u, m: msgs.put(m)
    cl.on_connect = lambda c, u, f, rc, p: acks.put(rc)
    cl.on_subscribe = lambda c, u, mid, rcs, p: acks.put(rcs)
    cl.connect("127.0.0.1", port)
    cl.loop_start()
    acks.get(timeout=WAIT)
    return cl, msgs, acks


def amqp_channel(rb):
    params = pika.ConnectionParameters("127.0.0.1", rb.ports["amqp"], blocked_connection_timeout=WAIT,
                                       socket_timeout=WAIT)
    conn = pika.BlockingConnection(params)
    return conn, conn.channel()


def test_amqp_publish_reaches_mqtt_subscriber(rb):
    cl, msgs, acks = paho_client(rb.ports["mqtt"])
    try:
        cl.subscribe("interop/+/v1.2", 1)
        acks.get(timeout=WAIT)
        conn, ch = amqp_channel(rb)
        props = pika.BasicProperties(content_type="text/plain", correlation_id="c-1",
                                     reply_to="replies.here", headers={"k": "v"},
                                     delivery_mode=2, expiration="600000")
        ch.basic_publish("amq.topic", "interop.dev/1.v1/2", b"from amqp", props)
        m = msgs.get(timeout=WAIT)
        assert (m.topic, m.payload, m.qos) == ("interop/dev.1/v1.2", b"from amqp", 1)
        p = m.properties
        assert p.ContentType == "text/plain"
        assert p.CorrelationData == b"c-1"
        assert p.ResponseTopic == "replies/here"
        assert ("k", "v") in p.UserProperty
        assert 540 <= p.MessageExpiryInterval <= 600  # what is left (a loaded machine is slow)
        conn.close()
    finally:
        cl.disconnect()
        cl.loop_stop()


def test_mqtt_publish_reaches_amqp_queue(rb):
    conn, ch = amqp_channel(rb)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "sensors.#")
    cl, _, _ = paho_client(rb.ports["mqtt"])
    try:
        p = Properties(PacketTypes.PUBLISH)
        p.ContentType = "application/json"
        p.CorrelationData = b"corr"
        p.ResponseTopic = "reply/to"
        p.UserProperty = [("site", "a")]
        cl.publish("sensors/temp.c", b"{}", 1, properties=p).wait_for_publish(WAIT)
        method = props = body = None
        for _ in range(50):
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method is not None:
                break
            conn.sleep(0.05)
        assert method is not None
        assert method.routing_key == "sensors.temp/c"
        assert body == b"{}"
        assert props.content_type == "application/json"
        assert props.correlation_id == "corr"
        assert props.reply_to == "reply.to"
        assert props.delivery_mode == 2
        assert props.headers["site"] == "a"
        assert props.headers["x-mqtt-publish-qos"] == 1
    finally:
        cl.disconnect()
        cl.loop_stop()
        conn.close()
