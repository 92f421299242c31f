"""Memory pressure: a flood with nobody consuming is paged out to disk past half the memory
high-water mark (the alarm, which blocks publishers, is the last resort); nothing is lost."""
import threading
import time

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow

HIGH_WATER = 100_000
BODY = b"m" * 1000
COUNT = 400


def in_memory(rb):
    return rb.call(lambda: rb.broker.memory.used_bytes)


def test_amqp_flood_pages_out_instead_of_blocking_for_good(make_broker):
    rb = make_broker(server={"memory_high_water_bytes": HIGH_WATER})
    params = pika.ConnectionParameters(rb.host, rb.ports["amqp"])
    publisher = pika.BlockingConnection(params)
    events = []
    publisher.add_on_connection_blocked_callback(lambda conn, frame: events.append("blocked"))
    publisher.add_on_connection_unblocked_callback(lambda conn, frame: events.append("unblocked"))
    channel = publisher.channel()
    channel.queue_declare("flood")
    for _ in range(COUNT):
        channel.basic_publish("", "flood", BODY)  # no confirms: the client just writes

    def queued():
        return rb.call(lambda: rb.broker.vhosts["/"].queues["flood"].ready_count)

    deadline = time.monotonic() + 60  # generous: only a failing wait takes that long
    while queued() < COUNT and time.monotonic() < deadline:
        publisher.process_data_events(time_limit=0.1)
    # Four times the mark was published with nobody consuming: past half the mark the bodies
    # went to the queue's spill log, so memory stayed under it and every publish was read.
    assert queued() == COUNT
    assert in_memory(rb) <= HIGH_WATER // 2 + len(BODY)
    # If a block happened at all (the alarm set before paging caught up), it was lifted.
    assert not events or events[-1] == "unblocked"

    consumer = pika.BlockingConnection(params)
    drain = consumer.channel()
    received = 0
    deadline = time.monotonic() + 60
    while received < COUNT and time.monotonic() < deadline:
        method, _, body = drain.basic_get("flood", auto_ack=True)
        if method is None:
            continue
        assert body == BODY
        received += 1
    assert received == COUNT  # nothing lost
    consumer.close()
    publisher.close()


def test_mqtt_flood_is_bounded_and_delivered_after_draining(make_broker):
    rb = make_broker(server={"memory_high_water_bytes": HIGH_WATER})
    # A persistent session subscribed at QoS 0 but offline: its queue fills up.
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="slow",
                      clean_session=False)
    subscribed = threading.Event()
    sub.on_subscribe = lambda client, userdata, mid, codes, props: subscribed.set()
    sub.connect(rb.host, rb.ports["mqtt"])
    sub.loop_start()
    sub.subscribe("flood/#", qos=1)
    assert subscribed.wait(30)  # the SUBACK: the session's subscription is in place
    sub.disconnect()
    sub.loop_stop()
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="firehose")
    pub.max_queued_messages_set(0)
    pub.connect(rb.host, rb.ports["mqtt"])
    pub.loop_start()
    for i in range(COUNT):
        pub.publish("flood/x", BODY, qos=0)
    time.sleep(1.0)
    held = in_memory(rb)
    assert held < HIGH_WATER + 300_000  # bounded: past the mark, bodies were paged out
    got = []
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect(rb.host, rb.ports["mqtt"])
    sub.loop_start()
    deadline = time.monotonic() + 90  # generous: only a failing wait takes that long
    while len(got) < COUNT and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.disconnect()
    sub.loop_stop()
    pub.disconnect()
    pub.loop_stop()
    assert len(got) == COUNT and set(got) == {BODY}
