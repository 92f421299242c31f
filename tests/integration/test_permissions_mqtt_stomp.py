"""Permission matrices over MQTT (paho, 3.1.1 and 5) and STOMP (stomp.py): publish and subscribe
allowed and denied by topic permissions, topic subscriptions without any right on their queue,
vhost and login refusals in each protocol's words."""
from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)
V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5

USERS = {
    "users": [{"name": "dev", "password": "dev-pw"}, {"name": "st", "password": "st-pw"},
              {"name": "blind", "password": "b-pw"}],
    "vhosts": [{"name": "secret"}],
    "permissions": [
        # no configure at all: topic subscriptions must still work
        {"user": "dev", "vhost": "/", "configure": "", "write": "^amq\\.topic$",
         "read": "^amq\\.topic$"},
        {"user": "st", "vhost": "/", "configure": "^st\\.",
         "write": "^(st\\..*|amq\\.topic|amq\\.default)$", "read": "^(st\\..*|amq\\.topic)$"},
        {"user": "blind", "vhost": "/", "configure": ".*", "write": ".*", "read": ""}],
    "topic_permissions": [
        {"user": "dev", "vhost": "/", "exchange": "amq.topic",
         "write": "^devices\\.{username}\\.", "read": "^commands\\.{username}\\."},
        {"user": "st", "vhost": "/", "exchange": "amq.topic", "write": "^news\\.",
         "read": "^news\\."}],
}


@pytest.fixture
def rb(make_broker):
    return make_broker(**USERS)


class Mqtt:
    def __init__(self, rb, user, password, proto=V311):
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  protocol=proto)
        self.connacks, self.messages, self.subacks, self.pubacks = (queue.Queue() for _ in
                                                                     range(4))
        self.client.on_connect = lambda c, u, f, rc, p: self.connacks.put(rc)
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.put(rc)
        self.client.username_pw_set(user, password)
        self.client.connect("127.0.0.1", rb.ports["mqtt"])
        self.client.loop_start()
        self.rc = self.connacks.get(timeout=WAIT)

    def subscribe(self, topic):
        self.client.subscribe(topic, 1)
        return [int(rc.value) if hasattr(rc, "value") else rc
                for rc in self.subacks.get(timeout=WAIT)]

    def publish(self, topic, payload, qos=1):
        self.client.publish(topic, payload, qos)
        return self.pubacks.get(timeout=WAIT)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])
def test_mqtt_permission_matrix(rb, proto):
    v5 = proto == V5
    watcher = Mqtt(rb, "guest", "guest", proto)
    assert watcher.subscribe("#") == [1]
    dev = Mqtt(rb, "dev", "dev-pw", proto)
    assert dev.rc == 0
    # subscribe: topic read on the filter, no configure on the subscription queue needed
    assert dev.subscribe("commands/dev/#") == [1]
    assert dev.subscribe("commands/other/#") == [0x87 if v5 else 0x80]
    # publish: topic write
    rc = dev.publish("devices/dev/temp", b"21")
    assert not rc.is_failure
    assert watcher.messages.get(timeout=WAIT).payload == b"21"
    rc = dev.publish("devices/other/temp", b"spoof")
    if v5:
        assert rc.value == 0x87  # PUBACK not authorized
    else:
        assert not rc.is_failure  # 3.1.1: acknowledged, dropped, logged; the connection stays
    dev.publish("devices/other/temp", b"spoof0", qos=0)
    watcher.publish("commands/dev/reboot", b"now")
    assert dev.messages.get(timeout=WAIT).payload == b"now"
    assert dev.publish("devices/dev/hum", b"40") is not None
    payloads = []
    deadline = time.monotonic() + WAIT
    while b"40" not in payloads and time.monotonic() < deadline:
        payloads.append(watcher.messages.get(timeout=WAIT).payload)
    assert b"spoof" not in payloads and b"spoof0" not in payloads and b"40" in payloads
    assert dev.client.is_connected()
    # no read on amq.topic: no subscription at all
    blind = Mqtt(rb, "blind", "b-pw", proto)
    assert blind.subscribe("anything/#") == [0x87 if v5 else 0x80]
    for client in (watcher, dev, blind):
        client.close()


@pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])
def test_mqtt_login_and_vhost_refusals(rb, proto):
    # paho reports 3.1.1's CONNACK 4 and 5 as the MQTT 5 reason codes 0x86 and 0x87
    bad = Mqtt(rb, "dev", "wrong", proto)
    assert (bad.rc.value, str(bad.rc)) == (0x86, "Bad user name or password")
    bad.close()
    refused = Mqtt(rb, "secret:dev", "dev-pw", proto)  # RabbitMQ's vhost:user form
    assert (refused.rc.value, str(refused.rc)) == (0x87, "Not authorized")
    refused.close()


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.messages, self.errors = queue.Queue(), queue.Queue()

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)


def stomp_connect(rb, user, password, host="/"):
    conn = stomp.Connection12([("127.0.0.1", rb.ports["stomp"])], heartbeats=(0, 0),
                              vhost=host)
    listener = Listener()
    conn.set_listener("l", listener)
    conn.connect(user, password, wait=False)
    return conn, listener


def stomp_ok(rb, user="st", password="st-pw"):
    conn, listener = stomp_connect(rb, user, password)
    deadline = time.monotonic() + WAIT
    while not conn.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert conn.is_connected()
    return conn, listener


def stomp_denied(rb, action, expect="access_refused"):
    """``action(conn)`` gets an ERROR frame, then the connection closes."""
    conn, listener = stomp_ok(rb)
    action(conn)
    error = listener.errors.get(timeout=WAIT)
    assert error.headers["message"] == expect, error.headers
    deadline = time.monotonic() + WAIT
    while conn.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not conn.is_connected()
    return error.body


def test_stomp_permission_matrix(rb):
    conn, listener = stomp_ok(rb)
    # /queue/: configure (declare), write on amq.default, read on the queue
    conn.subscribe("/queue/st.q", id="1")
    conn.send("/queue/st.q", "queued", receipt="r1")
    assert listener.messages.get(timeout=WAIT).body == "queued"
    # /topic/: subscription with read on amq.topic + topic read only
    conn.subscribe("/topic/news.*", id="2")
    conn.send("/topic/news.today", "headline")
    assert listener.messages.get(timeout=WAIT).body == "headline"
    conn.disconnect()
    assert "configure access to queue 'other'" in stomp_denied(
        rb, lambda c: c.send("/queue/other", "x"))
    assert "queue 'other.q'" in stomp_denied(
        rb, lambda c: c.subscribe("/queue/other.q", id="1"))
    assert "topic 'secret.x'" in stomp_denied(rb, lambda c: c.send("/topic/secret.x", "x"))
    assert "topic 'secret.#'" in stomp_denied(rb, lambda c: c.subscribe("/topic/secret.#",
                                                                        id="1"))
    assert "exchange 'amq.direct'" in stomp_denied(
        rb, lambda c: c.send("/exchange/amq.direct/k", "x"))


def test_stomp_login_and_vhost_refusals(rb):
    for user, password, host in (("st", "wrong", "/"), ("st", "st-pw", "secret")):
        conn, listener = stomp_connect(rb, user, password, host)
        error = listener.errors.get(timeout=WAIT)
        assert error.headers["message"] in ("Bad CONNECT", "not_allowed")
        deadline = time.monotonic() + WAIT
        while conn.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not conn.is_connected()
