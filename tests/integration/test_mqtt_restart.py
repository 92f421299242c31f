"""Retained messages and persistent sessions survive a broker restart (amqtt keeps them only in
memory). Two brokers run one after the other on the same data directory."""
from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)


def connect(port: int, client_id: str, *, clean: bool = True, expiry: int = 0):
    cl = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                     protocol=mqtt.MQTTv5)
    messages: queue.Queue = queue.Queue()
    acks: queue.Queue = queue.Queue()
    subacks: queue.Queue = queue.Queue()
    cl.on_message = lambda c, u, m: messages.put(m)
    cl.on_connect = lambda c, u, flags, rc, props: acks.put(flags)
    cl.on_subscribe = lambda c, u, mid, rcs, props: subacks.put(rcs)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    cl.connect("127.0.0.1", port, clean_start=clean, properties=props)
    cl.loop_start()
    flags = acks.get(timeout=WAIT)
    return cl, flags, messages, subacks


def stop(rb) -> None:
    rb.stop()
    rb.stop = lambda: None  # the fixture's teardown must not stop it twice


@pytest.mark.parametrize("protocol", ["v5"])
def test_retained_and_persistent_session_survive_restart(make_broker, protocol):
    rb = make_broker()
    port = rb.ports["mqtt"]
    sub, flags, _, subacks = connect(port, "survivor", clean=True, expiry=3600)
    sub.subscribe("restart/#", 1)
    subacks.get(timeout=WAIT)
    sub.disconnect()
    sub.loop_stop()
    pub, _, _, _ = connect(port, "restart-pub")
    pub.publish("restart/state", b"on", 1, retain=True).wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()
    time.sleep(0.2)
    stop(rb)

    rb2 = make_broker()
    port2 = rb2.ports["mqtt"]
    sub, flags, messages, _ = connect(port2, "survivor", clean=False, expiry=3600)
    assert flags.session_present  # the session came back from disk
    # The QoS 1 message published while the session was away waited in its durable queue.
    m = messages.get(timeout=WAIT)
    assert (m.topic, m.payload, m.retain) == ("restart/state", b"on", False)
    pub, _, _, _ = connect(port2, "restart-pub2")
    pub.publish("restart/live", b"after", 1).wait_for_publish(WAIT)
    m = messages.get(timeout=WAIT)
    assert (m.topic, m.payload) == ("restart/live", b"after")  # subscription restored
    fresh, _, fresh_msgs, subacks = connect(port2, "fresh")
    fresh.subscribe("restart/+", 1)
    m = fresh_msgs.get(timeout=WAIT)
    assert (m.topic, m.payload, m.retain) == ("restart/state", b"on", True)
    for cl in (sub, pub, fresh):
        cl.disconnect()
        cl.loop_stop()


def test_sessions_that_expired_while_the_broker_was_down_leave_no_queue(make_broker):
    rb = make_broker()
    port = rb.ports["mqtt"]
    for client_id, expiry in (("short-lived", 1), ("long-lived", 3600)):
        sub, _, _, subacks = connect(port, client_id, clean=True, expiry=expiry)
        sub.subscribe("gone/#", 1)
        subacks.get(timeout=WAIT)
        sub.disconnect()
        sub.loop_stop()
    pub, _, _, _ = connect(port, "gone-pub")
    pub.publish("gone/x", b"queued", 1).wait_for_publish(WAIT)
    pub.disconnect()
    pub.loop_stop()
    time.sleep(0.2)
    stop(rb)
    time.sleep(1.2)  # "short-lived" expires while no broker runs

    rb2 = make_broker()
    queues = rb2.call(lambda: sorted(rb2.broker.vhosts["/"].queues))
    assert "mqtt-subscription-long-lived" in queues
    assert "mqtt-subscription-short-lived" not in queues  # its durable queue was removed
    sub, flags, messages, _ = connect(rb2.ports["mqtt"], "short-lived", clean=False, expiry=60)
    assert not flags.session_present
    sub.disconnect()
    sub.loop_stop()
    sub, flags, messages, _ = connect(rb2.ports["mqtt"], "long-lived", clean=False, expiry=3600)
    assert flags.session_present
    message = messages.get(timeout=WAIT)
    assert message.payload == b"queued" and message.dup  # recovered: may have been sent before
    sub.disconnect()
    sub.loop_stop()


def test_the_state_file_of_an_older_version_is_imported_into_the_store(tmp_path, make_broker):
    import msgpack
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    legacy = {"version": 1,
              "retained": [["legacy/topic", b"old retained", 1, None, None,
                            {"delivery_mode": 2}]],
              "sessions": [{"client_id": "legacy-client", "vhost": "/", "expiry_s": 3600,
                            "subscriptions": [["legacy/#", "legacy/#", None, 1, False, False,
                                               0, None]],
                            "inbound_qos2": [7], "next_pid": 1, "detached_at": time.time()}]}
    (data_dir / "mqtt-state.msgpack").write_bytes(msgpack.packb(legacy, use_bin_type=True))
    rb = make_broker()
    port = rb.ports["mqtt"]
    reader, _, messages, subacks = connect(port, "reader")
    reader.subscribe("legacy/#", 1)
    assert messages.get(timeout=WAIT).payload == b"old retained"
    reader.disconnect()
    reader.loop_stop()
    sub, flags, _, _ = connect(port, "legacy-client", clean=False, expiry=3600)
    assert flags.session_present
    sub.disconnect()
    sub.loop_stop()
    deadline = time.monotonic() + WAIT
    while (data_dir / "mqtt-state.msgpack").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (data_dir / "mqtt-state.msgpack.imported").exists()
