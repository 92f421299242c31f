"""Manifold's own API beyond RabbitMQ's: MQTT sessions, retained messages, streams."""
from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
import pika
from paho.mqtt.enums import CallbackAPIVersion

from .helpers import TIMEOUT_S, base_url, session, wait_for


def test_mqtt_sessions_and_retained(running_broker):
    connected: queue.Queue = queue.Queue()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id="meter-42", clean_session=False)
    client.username_pw_set("guest", "guest")
    client.on_connect = lambda c, u, flags, rc, props: connected.put(rc)
    client.connect("127.0.0.1", running_broker.ports["mqtt"])
    client.loop_start()
    try:
        assert not connected.get(timeout=TIMEOUT_S).is_failure
        client.subscribe("meters/+/kwh", qos=1)
        client.publish("meters/42/kwh", b"17.5", qos=1, retain=True).wait_for_publish(TIMEOUT_S)
        s, base = session(), base_url(running_broker)
        sessions = wait_for(lambda: [r for r in s.get(base + "/api/manifold/mqtt/sessions",
                                                      timeout=TIMEOUT_S).json()
                                     if r["subscriptions"]], what="the MQTT session")
        assert sessions[0]["client_id"] == "meter-42" and sessions[0]["connected"] is True
        assert sessions[0]["subscriptions"] == [{"topic_filter": "meters/+/kwh", "qos": 1}]
        retained = wait_for(lambda: s.get(base + "/api/manifold/mqtt/retained",
                                          timeout=TIMEOUT_S).json(), what="the retained message")
        assert retained == [{"topic": "meters/42/kwh", "payload_bytes": 4, "qos": 1}]
    finally:
        client.loop_stop()
        client.disconnect()


def test_streams_list(running_broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1",
                                                             running_broker.ports["amqp"]))
    try:
        ch = conn.channel()
        ch.queue_declare("ledger", durable=True, arguments={"x-queue-type": "stream"})
        for i in range(3):
            ch.basic_publish("", "ledger", f"entry {i}".encode())
        s, base = session(), base_url(running_broker)
        rows = wait_for(lambda: [r for r in s.get(base + "/api/manifold/streams",
                                                  timeout=TIMEOUT_S).json()
                                 if r["messages"] == 3], what="the stream with 3 records")
        assert rows[0]["name"] == "ledger" and rows[0]["first_offset"] == 0
        assert rows[0]["last_offset"] == 2 and rows[0]["message_bytes"] > 0
    finally:
        conn.close()
