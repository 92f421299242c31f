"""A write the store could not make durable reaches every protocol as its negative answer, never
as a confirm: AMQP basic.nack or a channel error for Tx.Commit, MQTT 5 reason 0x80, MQTT 3.1.1 a
closed connection, STOMP an ERROR instead of the RECEIPT. The broker keeps serving afterwards.
Faults come from the store's file-system shim (tests/persistence/fsshim.py)."""
from __future__ import annotations

import errno
import queue
import time

import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion

from manifold.broker.core import Broker
from manifold.broker.service import Service
from manifold.persistence.filestore import FileStore
from tests.conftest import RunningBroker, broker_settings
from tests.persistence.fsshim import FaultyFS

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow
WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)


class ShimBroker(RunningBroker):
    """A running broker whose file store does its I/O through ``fs``."""

    def __init__(self, settings, fs):
        super().__init__(settings)
        store = FileStore(settings.server.data_dir, fs=fs)
        self.service = Service(settings, broker=Broker(settings, store=store))


@pytest.fixture
def faulty(tmp_path):
    fs = FaultyFS()
    broker = ShimBroker(broker_settings(tmp_path), fs).start()
    yield broker, fs
    fs.clear()
    broker.stop()


def amqp(broker):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], socket_timeout=WAIT, stack_timeout=WAIT * 2))


PERSISTENT = pika.BasicProperties(delivery_mode=2)


def test_amqp_confirm_is_a_nack_when_the_write_fails(faulty):
    broker, fs = faulty
    conn = amqp(broker)
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "q", b"stored", PERSISTENT)
    fs.fail("write", errno.ENOSPC)
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "q", b"refused", PERSISTENT)
    ch.basic_publish("", "q", b"stored again", PERSISTENT)  # the next write is fine
    conn.close()


def test_amqp_commit_ok_only_after_the_fsync_and_a_channel_error_when_it_fails(faulty):
    broker, fs = faulty
    conn = amqp(broker)
    ch = conn.channel()
    ch.queue_declare("q", durable=True)
    ch.tx_select()
    ch.basic_publish("", "q", b"one", PERSISTENT)
    ch.tx_commit()
    ch.basic_publish("", "q", b"two", PERSISTENT)
    fs.fail("fsync", errno.EIO)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as failure:
        ch.tx_commit()
    assert failure.value.reply_code == 541
    other = conn.channel()  # the connection and other channels go on
    other.tx_select()
    other.basic_publish("", "q", b"three", PERSISTENT)
    other.tx_commit()
    bodies = []
    while True:
        method, _, body = other.basic_get("q", auto_ack=True)
        if method is None:
            break
        bodies.append(body)
    assert b"one" in bodies and b"three" in bodies
    conn.close()


class Paho:
    def __init__(self, port, client_id, proto, clean=True):
        kwargs = {"clean_session": clean} if proto != mqtt.MQTTv5 else {}
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=client_id, protocol=proto, **kwargs)
        self.acks: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.client.on_publish = lambda c, u, mid, rc, props: self.acks.put((mid, rc))
        self.client.on_disconnect = lambda c, u, f, rc, props: self.disconnects.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(rcs)
        connected = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, props: connected.put(rc)
        if proto == mqtt.MQTTv5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            props = Properties(PacketTypes.CONNECT)
            if not clean:
                props.SessionExpiryInterval = 3600
            self.client.connect("127.0.0.1", port, clean_start=clean, properties=props)
        else:
            self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.get(timeout=WAIT) == 0

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def quiet(broker):
    """Wait until the store has nothing in flight (so an injected fault hits the next write)."""
    store = broker.broker.store
    deadline = time.monotonic() + WAIT
    while not broker.call(lambda: store._in_flight is None and not store._has_work()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def persistent_subscriber(broker, proto, topic):
    sub = Paho(broker.ports["mqtt"], "durable-sub", proto, clean=False)
    sub.client.subscribe(topic, qos=1)
    sub.subacks.get(timeout=WAIT)
    sub.close()
    sub.disconnects.get(timeout=WAIT)
    sessions = broker.service.servers["mqtt"].sessions
    deadline = time.monotonic() + WAIT
    while broker.call(lambda: sessions["durable-sub"].conn is not None):  # detached, stored
        assert time.monotonic() < deadline
        time.sleep(0.01)
    quiet(broker)


def test_mqtt5_puback_and_pubrec_carry_0x80_when_the_write_fails(faulty):
    broker, fs = faulty
    persistent_subscriber(broker, mqtt.MQTTv5, "t/#")
    pub = Paho(broker.ports["mqtt"], "pub5", mqtt.MQTTv5)
    try:
        for qos in (1, 2):
            fs.fail("write", errno.ENOSPC)
            info = pub.client.publish("t/x", b"refused", qos=qos)
            mid, rc = pub.acks.get(timeout=WAIT)
            # QoS 2: paho reports the PUBCOMP that follows our PUBREC 0x80 (0x92: the refused
            # packet id was dropped), so any error code shows the refusal.
            assert mid == info.mid and (rc.value == 0x80 if qos == 1 else rc.value >= 0x80), \
                (qos, rc)
            info = pub.client.publish("t/x", b"stored", qos=qos)
            mid, rc = pub.acks.get(timeout=WAIT)
            assert mid == info.mid and rc.value == 0, (qos, rc)
    finally:
        pub.close()


def test_mqtt5_puback_of_a_retained_message_waits_for_its_write(faulty):
    broker, fs = faulty
    pub = Paho(broker.ports["mqtt"], "pub5r", mqtt.MQTTv5)
    try:
        fs.fail("write", errno.ENOSPC)
        pub.client.publish("r/x", b"retained", qos=1, retain=True)  # nobody subscribes
        _, rc = pub.acks.get(timeout=WAIT)
        assert rc.value == 0x80  # not "no matching subscribers": the retained copy failed
    finally:
        pub.close()


def test_mqtt311_gets_no_puback_and_the_connection_closes_when_the_write_fails(faulty):
    broker, fs = faulty
    persistent_subscriber(broker, mqtt.MQTTv311, "t/#")
    pub = Paho(broker.ports["mqtt"], "pub311", mqtt.MQTTv311)
    pub.client.reconnect_delay_set(30, 30)  # stay disconnected while the test looks
    try:
        fs.fail("write", errno.ENOSPC)
        info = pub.client.publish("t/x", b"refused", qos=1)
        pub.disconnects.get(timeout=WAIT)
        assert pub.acks.empty() and not info.is_published()
    finally:
        pub.client.loop_stop()


def test_stomp_error_instead_of_receipt_when_the_write_fails(faulty):
    broker, fs = faulty
    frames: queue.Queue = queue.Queue()

    class Listener(stomp.ConnectionListener):
        def on_receipt(self, frame):
            frames.put(("RECEIPT", frame.headers.get("receipt-id")))

        def on_error(self, frame):
            frames.put(("ERROR", frame.headers.get("receipt-id")))

    conn = stomp.Connection12([("127.0.0.1", broker.ports["stomp"])])
    conn.set_listener("l", Listener())
    conn.connect("guest", "guest", wait=True)
    conn.send("/queue/q", b"stored", headers={"persistent": "true", "receipt": "r1"})
    assert frames.get(timeout=WAIT) == ("RECEIPT", "r1")
    fs.fail("write", errno.ENOSPC)
    conn.send("/queue/q", b"refused", headers={"persistent": "true", "receipt": "r2"})
    kind, _ = frames.get(timeout=WAIT)
    assert kind == "ERROR"
    time.sleep(0.2)
    assert frames.empty()  # no RECEIPT r2 after the ERROR
    conn2 = stomp.Connection12([("127.0.0.1", broker.ports["stomp"])])
    conn2.set_listener("l", Listener())
    conn2.connect("guest", "guest", wait=True)  # others are still served
    conn2.send("/queue/q", b"after", headers={"persistent": "true", "receipt": "r3"})
    assert frames.get(timeout=WAIT) == ("RECEIPT", "r3")
    conn2.disconnect()
