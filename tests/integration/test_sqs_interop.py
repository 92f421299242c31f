"""One queue, every protocol: boto3 (SQS) and pika (AMQP) / stomp.py (STOMP) share durable queues
in both directions, with bodies and attributes <-> headers mapped as MAPPING.md says."""
from __future__ import annotations

import decimal
import queue as stdqueue
import time

import pika
import pytest
import stomp

from .sqs_helpers import sqs_client

WAIT = 30  # seconds: generous, only a failing wait takes that long


@pytest.fixture
def sqs(running_broker):
    return sqs_client(running_broker)


def amqp_channel(broker):
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], blocked_connection_timeout=WAIT))
    return connection, connection.channel()


def test_sqs_send_is_consumed_over_amqp_with_typed_headers(sqs, running_broker):
    url = sqs.create_queue(QueueName="to-amqp")["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="from sqs", MessageAttributes={
        "text": {"DataType": "String", "StringValue": "v"},
        "count": {"DataType": "Number", "StringValue": "7"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\xff\xfe"}})
    connection, channel = amqp_channel(running_broker)
    try:
        # A plain declare of the SQS queue works: SQS attributes are policies, not arguments.
        channel.queue_declare("to-amqp", durable=True)
        method, props, body = channel.basic_get("to-amqp", auto_ack=False)
        assert body == b"from sqs"
        assert props.message_id == sent["MessageId"]
        assert props.delivery_mode == 2
        assert props.headers["text"] == "v"
        assert props.headers["count"] == 7
        # AMQP long strings carry bytes; pika decodes them to str when they are UTF-8.
        assert props.headers["blob"] == b"\xff\xfe"
        channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_amqp_publish_is_received_over_sqs(sqs, running_broker):
    url = sqs.create_queue(QueueName="from-amqp")["QueueUrl"]
    connection, channel = amqp_channel(running_broker)
    try:
        channel.confirm_delivery()
        channel.basic_publish("", "from-amqp", "über".encode(), pika.BasicProperties(
            delivery_mode=2, timestamp=1_700_000_000,
            headers={"kind": "order", "qty": 3, "ok": True, "price": decimal.Decimal("1.5")}))
    finally:
        connection.close()
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"],
                              AttributeNames=["All"], WaitTimeSeconds=20)
    (message,) = got["Messages"]
    assert message["Body"] == "über"
    assert message["MessageAttributes"] == {
        "kind": {"DataType": "String", "StringValue": "order"},
        "qty": {"DataType": "Number", "StringValue": "3"},
        "ok": {"DataType": "String", "StringValue": "true"},
        "price": {"DataType": "Number", "StringValue": "1.5"}}
    assert message["Attributes"]["SentTimestamp"] == "1700000000000"
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    # No AMQP message-id: a stable one derived from the queue position, the same on redelivery.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                  VisibilityTimeout=0)
    (again,) = sqs.receive_message(QueueUrl=url, AttributeNames=["All"],
                                   WaitTimeSeconds=20)["Messages"]
    assert again["MessageId"] == message["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


class Collector(stomp.ConnectionListener):
    def __init__(self):
        self.frames = stdqueue.Queue()

    def on_message(self, frame):
        self.frames.put(frame)


def stomp_connection(broker):
    conn = stomp.Connection12([("127.0.0.1", broker.ports["stomp"])])
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect("guest", "guest", wait=True)
    return conn, listener


def test_sqs_and_stomp_both_ways(sqs, running_broker):
    url = sqs.create_queue(QueueName="shared")["QueueUrl"]
    conn, listener = stomp_connection(running_broker)
    try:
        conn.subscribe("/queue/shared", id="1", ack="client-individual")
        sqs.send_message(QueueUrl=url, MessageBody="to stomp", MessageAttributes={
            "colour": {"DataType": "String", "StringValue": "red"}})
        frame = listener.frames.get(timeout=WAIT)
        assert frame.body == "to stomp"
        assert frame.headers["colour"] == "red"
        conn.ack(frame.headers["ack"])
        conn.unsubscribe("1")
        conn.send("/queue/shared", "from stomp", headers={"persistent": "true", "shape": "box"},
                  receipt="r1")
        time.sleep(0.2)
    finally:
        conn.disconnect()
    (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"],
                                     WaitTimeSeconds=20)["Messages"]
    assert message["Body"] == "from stomp"
    assert message["MessageAttributes"]["shape"] == {"DataType": "String", "StringValue": "box"}


def test_fifo_queue_keeps_group_order_for_amqp_consumers(sqs, running_broker):
    url = sqs.create_queue(QueueName="ordered.fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g")
    connection, channel = amqp_channel(running_broker)
    try:
        bodies = []
        for _ in range(5):
            method, props, body = channel.basic_get("ordered.fifo", auto_ack=False)
            # The group stays locked until the message is acked: no second one meanwhile.
            assert channel.basic_get("ordered.fifo", auto_ack=False)[0] is None
            assert props.headers["x-message-group-id"] == "g"
            bodies.append(body.decode())
            channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()
    assert bodies == [f"m{i}" for i in range(5)]


def test_mqtt_publish_reaches_an_sqs_queue_bound_to_amq_topic(sqs, running_broker):
    """MQTT publishes go to ``amq.topic``: an SQS queue bound there (here over AMQP) receives
    them, with MQTT 5 user properties as message attributes."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties as MqttProperties

    url = sqs.create_queue(QueueName="readings")["QueueUrl"]
    connection, channel = amqp_channel(running_broker)
    try:
        channel.queue_bind("readings", "amq.topic", "sensors.*")
    finally:
        connection.close()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id="sqs-interop", protocol=mqtt.MQTTv5)
    connected = stdqueue.Queue()
    client.on_connect = lambda c, u, flags, rc, props: connected.put(rc)
    client.connect("127.0.0.1", running_broker.ports["mqtt"], keepalive=30)
    client.loop_start()
    try:
        assert not connected.get(timeout=WAIT).is_failure
        props = MqttProperties(PacketTypes.PUBLISH)
        props.UserProperty = [("unit", "celsius")]
        info = client.publish("sensors/t1", b"21.5", qos=1, properties=props)
        info.wait_for_publish(timeout=WAIT)
    finally:
        client.disconnect()
        client.loop_stop()
    (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"],
                                     WaitTimeSeconds=20)["Messages"]
    assert message["Body"] == "21.5"
    assert message["MessageAttributes"]["unit"] == {"DataType": "String",
                                                    "StringValue": "celsius"}
