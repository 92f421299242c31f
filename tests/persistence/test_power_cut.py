"""The power-loss simulation: real clients get confirms from a broker whose store writes through
a recorder of fsyncs; the data directory a power cut would leave at that moment (each file cut to
its last fsynced bytes, files whose directory entry was never fsynced left out) is built while
the broker still runs; a new broker starts on it, and every confirmed message must be delivered:

- AMQP: publisher confirms and Tx.Commit-Ok;
- MQTT: PUBACK (QoS 1) and PUBREC (QoS 2) to persistent sessions (3.1.1 and 5.0), a retained
  message, a ``$share`` group of persistent sessions;
- STOMP: RECEIPT of a persistent SEND.

``kill -9`` keeps the page cache and proves little; this test fails under ``fsync = "never"``
(the last test shows it does).
"""
from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as MqttProperties

from manifold.broker.core import Broker
from manifold.broker.service import Service
from manifold.persistence.filestore import FileStore
from tests.conftest import RunningBroker, broker_settings

from .fsshim import PowerCutFS

pytestmark = pytest.mark.timeout(300)  # a hang fails; a loaded machine is only slow
WAIT = 30.0  # seconds: generous, only a failing wait takes that long
N = 20


class RecordedBroker(RunningBroker):
    def __init__(self, settings, fs):
        super().__init__(settings)
        persistence = settings.persistence
        store = FileStore(settings.server.data_dir, fs=fs, fsync=persistence.fsync,
                          fsync_interval_ms=persistence.fsync_interval_ms,
                          segment_bytes=persistence.segment_bytes)
        self.service = Service(settings, broker=Broker(settings, store=store))


def mqtt_client(port, client_id, proto, *, clean, on_message=None):
    kwargs = {"clean_session": clean} if proto != mqtt.MQTTv5 else {}
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=proto, **kwargs)
    connected: queue.Queue = queue.Queue()
    client.on_connect = lambda c, u, f, rc, props: connected.put(rc)
    if on_message is not None:
        client.on_message = on_message
    if proto == mqtt.MQTTv5:
        props = MqttProperties(PacketTypes.CONNECT)
        if not clean:
            props.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", port, clean_start=clean, properties=props)
    else:
        client.connect("127.0.0.1", port)
    client.loop_start()
    assert connected.get(timeout=WAIT) == 0
    return client


def mqtt_subscribe(client, topic, qos):
    done: queue.Queue = queue.Queue()
    client.on_subscribe = lambda c, u, mid, rcs, props: done.put(rcs)
    client.subscribe(topic, qos=qos)
    done.get(timeout=WAIT)  # SUBACK: the subscription of a persistent session is durable


def mqtt_close(client):
    client.disconnect()
    client.loop_stop()


def publish_everything(broker) -> dict[str, set[str]]:
    """Publish over every protocol; returns, per place to look, the confirmed bodies."""
    confirmed: dict[str, set[str]] = {}
    mqtt_port = broker.ports["mqtt"]
    # MQTT persistent sessions (and a $share group of them) subscribe first, then go offline.
    for client_id, proto, topic, qos in (("s311", mqtt.MQTTv311, "m/311/#", 2),
                                         ("s5", mqtt.MQTTv5, "m/5/#", 2),
                                         ("g1", mqtt.MQTTv5, "$share/grp/m/shared/#", 1)):
        client = mqtt_client(mqtt_port, client_id, proto, clean=False)
        mqtt_subscribe(client, topic, qos)
        mqtt_close(client)
    # AMQP: publisher confirms, and a transaction.
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.ports["amqp"]))
    ch = conn.channel()
    ch.queue_declare("amqp-confirms", durable=True)
    ch.queue_declare("amqp-tx", durable=True)
    ch.confirm_delivery()
    confirmed["amqp-confirms"] = set()
    for i in range(N):
        ch.basic_publish("", "amqp-confirms", f"c{i}".encode(),
                         pika.BasicProperties(delivery_mode=2))  # returns once acked
        confirmed["amqp-confirms"].add(f"c{i}")
    tx = conn.channel()
    tx.tx_select()
    for i in range(N):
        tx.basic_publish("", "amqp-tx", f"t{i}".encode(), pika.BasicProperties(delivery_mode=2))
    tx.tx_commit()  # Commit-Ok
    confirmed["amqp-tx"] = {f"t{i}" for i in range(N)}
    conn.close()
    # MQTT publishers: QoS 1 and 2, 3.1.1 and 5.0, a retained message, the $share group.
    for proto, name in ((mqtt.MQTTv311, "311"), (mqtt.MQTTv5, "5")):
        pub = mqtt_client(mqtt_port, f"pub{name}", proto, clean=True)
        confirmed[f"mqtt-{name}"] = set()
        for qos in (1, 2):
            infos = []
            for i in range(N):
                body = f"q{qos}-{i}"
                infos.append((body, pub.publish(f"m/{name}/x", body.encode(), qos=qos)))
            for body, info in infos:
                info.wait_for_publish(WAIT)  # PUBACK / PUBREC (+ PUBCOMP)
                assert info.is_published()
                confirmed[f"mqtt-{name}"].add(body)
        mqtt_close(pub)
    pub = mqtt_client(mqtt_port, "pub-r", mqtt.MQTTv5, clean=True)
    info = pub.publish("m/retained", b"kept", qos=1, retain=True)
    info.wait_for_publish(WAIT)
    confirmed["mqtt-retained"] = {"kept"}
    infos = [(f"s{i}", pub.publish("m/shared/x", f"s{i}".encode(), qos=1)) for i in range(N)]
    for body, info in infos:
        info.wait_for_publish(WAIT)
    confirmed["mqtt-shared"] = {body for body, _ in infos}
    mqtt_close(pub)
    # STOMP: RECEIPT of persistent SENDs.
    receipts: queue.Queue = queue.Queue()

    class Receipts(stomp.ConnectionListener):
        def on_receipt(self, frame):
            receipts.put(frame.headers["receipt-id"])

    conn = stomp.Connection12([("127.0.0.1", broker.ports["stomp"])])
    conn.set_listener("r", Receipts())
    conn.connect("guest", "guest", wait=True)
    for i in range(N):
        conn.send("/queue/stomp-q", f"p{i}".encode(), headers={"persistent": "true",
                                                                "receipt": f"p{i}"})
    confirmed["stomp"] = {receipts.get(timeout=WAIT) for _ in range(N)}
    conn.disconnect()
    return confirmed


def collect_everything(broker) -> dict[str, set[str]]:
    """What a restarted broker delivers, per place."""
    got: dict[str, set[str]] = {}
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.ports["amqp"]))
    ch = conn.channel()
    for name in ("amqp-confirms", "amqp-tx"):
        got[name] = set()
        try:
            while True:
                method, _, body = ch.basic_get(name, auto_ack=True)
                if method is None:
                    break
                got[name].add(body.decode())
        except pika.exceptions.ChannelClosedByBroker:  # the queue itself was lost
            ch = conn.channel()
    conn.close()
    mqtt_port = broker.ports["mqtt"]
    for client_id, proto, key in (("s311", mqtt.MQTTv311, "mqtt-311"),
                                  ("s5", mqtt.MQTTv5, "mqtt-5"),
                                  ("g1", mqtt.MQTTv5, "mqtt-shared")):
        messages: queue.Queue = queue.Queue()
        client = mqtt_client(mqtt_port, client_id, proto, clean=False,
                             on_message=lambda c, u, m: messages.put(m.payload.decode()))
        got[key] = drain(messages)
        mqtt_close(client)
    retained: queue.Queue = queue.Queue()
    client = mqtt_client(mqtt_port, "reader", mqtt.MQTTv5, clean=True,
                         on_message=lambda c, u, m: retained.put(m.payload.decode()))
    mqtt_subscribe(client, "m/retained", 1)
    got["mqtt-retained"] = drain(retained)
    mqtt_close(client)
    frames: queue.Queue = queue.Queue()

    class Messages(stomp.ConnectionListener):
        def on_message(self, frame):
            frames.put(frame.body if isinstance(frame.body, str) else frame.body.decode())

    conn = stomp.Connection12([("127.0.0.1", broker.ports["stomp"])])
    conn.set_listener("m", Messages())
    conn.connect("guest", "guest", wait=True)
    conn.subscribe("/queue/stomp-q", id="1", ack="auto")
    got["stomp"] = drain(frames)
    conn.disconnect()
    return got


def drain(messages: queue.Queue, quiet_s: float = 0.7) -> set[str]:
    """Everything that arrives until nothing more comes for ``quiet_s``."""
    out = set()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            out.add(messages.get(timeout=quiet_s))
        except queue.Empty:
            break
    return out


def missing_after_power_cut(tmp_path, fsync: str) -> dict[str, set[str]]:
    data = tmp_path / "data"
    fs = PowerCutFS(str(data))
    settings = broker_settings(tmp_path, persistence={"fsync": fsync, "fsync_interval_ms": 20,
                                                      "segment_bytes": 4096})
    broker = RecordedBroker(settings, fs).start()
    try:
        confirmed = publish_everything(broker)
        fs.image(str(tmp_path / "after-cut"))  # the power goes now, the broker still running
    finally:
        broker.stop()
    restarted = RunningBroker(settings.replace(
        "server", data_dir=str(tmp_path / "after-cut"))).start()
    try:
        got = collect_everything(restarted)
    finally:
        restarted.stop()
    return {place: bodies - got.get(place, set()) for place, bodies in confirmed.items()
            if bodies - got.get(place, set())}


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_every_confirmed_message_survives_a_power_cut(tmp_path, fsync):
    assert missing_after_power_cut(tmp_path, fsync) == {}


def test_the_power_cut_check_fails_without_fsync(tmp_path):
    missing = missing_after_power_cut(tmp_path, "never")
    # Every protocol confirmed messages that a power cut then lost.
    assert {"amqp-confirms", "amqp-tx", "mqtt-311", "mqtt-5", "mqtt-retained", "mqtt-shared",
            "stomp"} <= set(missing)
