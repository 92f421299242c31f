"""What the broker confirmed survives `kill -9`: a real daemon, real clients, a real SIGKILL."""
import signal
import threading

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.daemon import start_daemon, stop_daemon

pytestmark = pytest.mark.timeout(300)

WAIT = 30  # seconds; generous, only a failing test waits that long


def test_amqp_confirmed_messages_survive_sigkill(tmp_path):
    proc, ports = start_daemon(tmp_path)
    confirmed = []
    try:
        params = pika.ConnectionParameters("127.0.0.1", ports["amqp"], blocked_connection_timeout=10)
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.queue_declare("orders", durable=True)
        channel.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=2, headers={"kind": "order"})
        for i in range(300):
            # publish returns once the broker's Basic.Ack arrived: the message is confirmed
            channel.basic_publish("", "orders", f"order-{i}".encode(), persistent)
            confirmed.append(f"order-{i}".encode())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    proc, ports = start_daemon(tmp_path)
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", ports["amqp"]))
        channel = connection.channel()
        received = []
        while True:
            method, props, body = channel.basic_get("orders", auto_ack=True)
            if method is None:
                break
            received.append(body)
            assert props.headers == {"kind": "order"} and props.delivery_mode == 2
        assert received == confirmed  # every confirmed message, in order, nothing else
        connection.close()
    finally:
        stop_daemon(proc)


def test_mqtt_qos1_pubacked_messages_survive_sigkill(tmp_path):
    proc, ports = start_daemon(tmp_path)
    acked = []
    try:
        # A persistent session subscribed at QoS 1 holds what it has not received yet.
        sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="keeper",
                          clean_session=False)
        subscribed = threading.Event()
        sub.on_subscribe = lambda client, userdata, mid, codes, props: subscribed.set()
        sub.connect("127.0.0.1", ports["mqtt"])
        sub.loop_start()
        sub.subscribe("plant/+/temp", qos=1)
        assert subscribed.wait(WAIT)  # the SUBACK: the session's subscription is stored
        sub.disconnect()
        sub.loop_stop()
        pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="sensor")
        pub.connect("127.0.0.1", ports["mqtt"])
        pub.loop_start()
        for i in range(50):
            info = pub.publish("plant/7/temp", f"{i}".encode(), qos=1)
            info.wait_for_publish(WAIT)  # returns once the PUBACK arrived
            assert info.is_published()
            acked.append(f"{i}".encode())
        pub.loop_stop()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    proc, ports = start_daemon(tmp_path)
    try:
        got = []
        done = threading.Event()

        def on_message(client, userdata, message):
            got.append(message.payload)
            if len(got) >= len(acked):
                done.set()

        sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="keeper",
                          clean_session=False)
        sub.on_message = on_message
        sub.connect("127.0.0.1", ports["mqtt"])
        sub.loop_start()
        assert done.wait(WAIT), got
        sub.disconnect()
        sub.loop_stop()
        assert got == acked
    finally:
        stop_daemon(proc)
