"""An SNS topic is an exchange for every protocol: STOMP subscribes to `/exchange/NAME/#`, MQTT
hangs off it through `amq.topic` (an exchange-to-exchange binding), and an aio-pika publish to it
reaches the SNS subscribers."""
from __future__ import annotations

import asyncio
import json
import queue as stdqueue

import aio_pika
import pika
import stomp

from .aws_helpers import aws_client

WAIT = 30  # seconds: generous, only a failing wait takes that long


class Collector(stomp.ConnectionListener):
    def __init__(self):
        self.frames = stdqueue.Queue()
        self.receipts = stdqueue.Queue()

    def on_message(self, frame):
        self.frames.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame.headers["receipt-id"])


def test_stomp_subscriber_of_the_topic_exchange(running_broker):
    sns = aws_client(running_broker, "sns")
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    conn = stomp.Connection12([("127.0.0.1", running_broker.ports["stomp"])])
    listener = Collector()
    conn.set_listener("c", listener)
    conn.connect("guest", "guest", wait=True)
    try:
        conn.subscribe("/exchange/alerts/#", id="1", ack="auto", headers={"receipt": "bound"})
        assert listener.receipts.get(timeout=WAIT) == "bound"  # the queue is bound now
        sns.publish(TopicArn=topic, Message="cpu high", MessageAttributes={
            "host": {"DataType": "String", "StringValue": "web-1"}})
        frame = listener.frames.get(timeout=WAIT)
        assert frame.body == "cpu high"
        assert frame.headers["host"] == "web-1"
    finally:
        conn.disconnect()


def test_mqtt_subscriber_through_amq_topic(running_broker):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    sns = aws_client(running_broker, "sns")
    topic = sns.create_topic(Name="metrics")["TopicArn"]
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", running_broker.ports["amqp"]))
    try:
        connection.channel().exchange_bind("amq.topic", "metrics", "#")
    finally:
        connection.close()
    received = stdqueue.Queue()
    subscribed = stdqueue.Queue()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="sns-mqtt")
    client.on_message = lambda c, u, msg: received.put((msg.topic, msg.payload))
    client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(codes)
    client.on_connect = lambda c, u, flags, rc, props: c.subscribe("metrics", qos=1)
    client.connect("127.0.0.1", running_broker.ports["mqtt"], keepalive=30)
    client.loop_start()
    try:
        subscribed.get(timeout=WAIT)
        sns.publish(TopicArn=topic, Message="42")
        assert received.get(timeout=WAIT) == ("metrics", b"42")
    finally:
        client.disconnect()
        client.loop_stop()


def test_aio_pika_publish_reaches_sns_subscribers(running_broker):
    sns, sqs = aws_client(running_broker, "sns"), aws_client(running_broker, "sqs")
    topic = sns.create_topic(Name="jobs")["TopicArn"]
    url = sqs.create_queue(QueueName="jobs-envelope")["QueueUrl"]
    sns.subscribe(TopicArn=topic, Protocol="sqs",
                  Endpoint="arn:aws:sqs:us-east-1:000000000000:jobs-envelope")

    async def publish() -> None:
        connection = await aio_pika.connect(
            f"amqp://guest:guest@127.0.0.1:{running_broker.ports['amqp']}/")
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("jobs", ensure=True)
            await exchange.publish(aio_pika.Message(
                b"from aio-pika", headers={"priority": "high"}, message_id="amqp-1",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="jobs")

    asyncio.run(asyncio.wait_for(publish(), WAIT))
    (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)["Messages"]
    envelope = json.loads(message["Body"])
    assert envelope["Message"] == "from aio-pika" and envelope["MessageId"] == "amqp-1"
    assert envelope["TopicArn"] == topic
    assert envelope["MessageAttributes"]["priority"] == {"Type": "String", "Value": "high"}
