"""The amqtt client (unmodified, MQTT 3.1.1) against a real broker; every wait time-boxed."""
from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from amqtt.client import ConnectError, MQTTClient
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)


@pytest.fixture
def uri(running_broker) -> str:
    return f"mqtt://127.0.0.1:{running_broker.ports['mqtt']}/"


@pytest.fixture
async def clients():
    made: list[MQTTClient] = []
    yield made
    for cl in made:
        try:
            await asyncio.wait_for(cl.disconnect(), WAIT)
        except Exception:
            pass


async def client(clients, uri: str, client_id: str | None = None, *, clean: bool = True,
                 will: dict | None = None) -> MQTTClient:
    config = {"auto_reconnect": False, "keep_alive": 30}
    if will is not None:
        config["will"] = will
    cl = MQTTClient(client_id=client_id or f"amqtt-{uuid.uuid4().hex[:8]}", config=config)
    await asyncio.wait_for(cl.connect(uri, cleansession=clean), WAIT)
    clients.append(cl)
    return cl


async def test_amqtt_qos_0_1_2(uri, clients):
    sub = await client(clients, uri)
    granted = await asyncio.wait_for(sub.subscribe([("am/+", QOS_2)]), WAIT)
    assert granted == [QOS_2]
    pub = await client(clients, uri)
    for qos in (QOS_0, QOS_1, QOS_2):
        await asyncio.wait_for(pub.publish(f"am/{qos}", b"m%d" % qos, qos=qos), WAIT)
    got = []
    for _ in range(3):
        msg = await asyncio.wait_for(sub.deliver_message(), WAIT)
        got.append((msg.topic, msg.data, msg.qos))
    assert sorted(got) == [("am/0", b"m0", 0), ("am/1", b"m1", 1), ("am/2", b"m2", 2)]


async def test_amqtt_wildcards_and_dot_topics(uri, clients):
    sub = await client(clients, uri)
    await asyncio.wait_for(sub.subscribe([("a.b/#", QOS_1)]), WAIT)
    pub = await client(clients, uri)
    await asyncio.wait_for(pub.publish("a.b/c.d/e", b"x", qos=QOS_1), WAIT)
    await asyncio.wait_for(pub.publish("a/b/c", b"no", qos=QOS_1), WAIT)
    await asyncio.wait_for(pub.publish("a.b", b"parent", qos=QOS_1), WAIT)
    first = await asyncio.wait_for(sub.deliver_message(), WAIT)
    second = await asyncio.wait_for(sub.deliver_message(), WAIT)
    assert [(first.topic, first.data), (second.topic, second.data)] == [
        ("a.b/c.d/e", b"x"), ("a.b", b"parent")]


async def test_amqtt_retained_wildcard_match_and_clear(uri, clients):
    pub = await client(clients, uri)
    await asyncio.wait_for(pub.publish("amr/1/state", b"on", qos=QOS_1, retain=True), WAIT)
    await asyncio.wait_for(pub.publish("amr/2/state", b"off", qos=QOS_1, retain=True), WAIT)
    await asyncio.wait_for(pub.publish("amr/2/state", b"", qos=QOS_1, retain=True), WAIT)
    sub = await client(clients, uri)
    await asyncio.wait_for(sub.subscribe([("amr/+/state", QOS_1)]), WAIT)
    msg = await asyncio.wait_for(sub.deliver_message(), WAIT)
    assert (msg.topic, msg.data, msg.retain) == ("amr/1/state", b"on", True)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sub.deliver_message(), 0.5)


async def test_amqtt_persistent_session(uri, clients):
    cid = f"amqtt-persist-{uuid.uuid4().hex[:6]}"
    sub = await client(clients, uri, cid, clean=False)
    await asyncio.wait_for(sub.subscribe([("amp/t", QOS_1)]), WAIT)
    await asyncio.wait_for(sub.disconnect(), WAIT)
    clients.remove(sub)
    pub = await client(clients, uri)
    for i in range(3):
        await asyncio.wait_for(pub.publish("amp/t", b"%d" % i, qos=QOS_1), WAIT)
    sub = await client(clients, uri, cid, clean=False)
    got = [(await asyncio.wait_for(sub.deliver_message(), WAIT)).data for _ in range(3)]
    assert got == [b"0", b"1", b"2"]


async def test_amqtt_will_on_abnormal_disconnect(uri, clients):
    sub = await client(clients, uri)
    await asyncio.wait_for(sub.subscribe([("amw/t", QOS_1)]), WAIT)
    dying = await client(clients, uri, will={"topic": "amw/t", "message": "gone", "qos": 1,
                                             "retain": False})
    # cut the socket under the client: no DISCONNECT
    transport = dying._handler.writer._writer.transport  # type: ignore[union-attr]
    sock = transport.get_extra_info("socket")
    sock.shutdown(socket.SHUT_RDWR)
    clients.remove(dying)
    msg = await asyncio.wait_for(sub.deliver_message(), WAIT)
    assert (msg.topic, msg.data) == ("amw/t", b"gone")


async def test_amqtt_bad_password_refused(running_broker):
    uri = f"mqtt://guest:wrong@127.0.0.1:{running_broker.ports['mqtt']}/"
    cl = MQTTClient(config={"auto_reconnect": False})
    with pytest.raises(ConnectError):
        await asyncio.wait_for(cl.connect(uri), WAIT)


async def test_amqtt_good_password_accepted(running_broker, clients):
    uri = f"mqtt://guest:guest@127.0.0.1:{running_broker.ports['mqtt']}/"
    cl = await client(clients, uri)
    await asyncio.wait_for(cl.ping(), WAIT)


async def test_amqtt_takeover(uri, clients):
    cid = f"amqtt-take-{uuid.uuid4().hex[:6]}"
    first = await client(clients, uri, cid, clean=False)
    await asyncio.wait_for(first.subscribe([("amt/t", QOS_1)]), WAIT)
    second = await client(clients, uri, cid, clean=False)
    # [MQTT-3.1.4-2] the broker disconnects the client already connected with that id
    deadline = asyncio.get_running_loop().time() + WAIT
    while first.session.transitions.state != "disconnected":
        assert asyncio.get_running_loop().time() < deadline, "first client still connected"
        await asyncio.sleep(0.02)
    # ... and the session goes to the new connection: the second client never subscribed,
    # yet it gets what is published to the first one's subscription [MQTT-3.1.2-4]
    pub = await client(clients, uri)
    await asyncio.wait_for(pub.publish("amt/t", b"ok", qos=QOS_1), WAIT)
    msg = await asyncio.wait_for(second.deliver_message(), WAIT)
    assert (msg.topic, msg.data) == ("amt/t", b"ok")
    await asyncio.wait_for(second.disconnect(), WAIT)
    # end the persistent session: reconnect clean and leave
    await client(clients, uri, cid, clean=True)


async def test_amqtt_unsubscribe(uri, clients):
    sub = await client(clients, uri)
    await asyncio.wait_for(sub.subscribe([("amu/t", QOS_1)]), WAIT)
    await asyncio.wait_for(sub.unsubscribe(["amu/t"]), WAIT)
    pub = await client(clients, uri)
    await asyncio.wait_for(pub.publish("amu/t", b"x", qos=QOS_1), WAIT)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sub.deliver_message(), 0.5)


async def test_amqtt_dollar_topics_not_matched_by_wildcard(uri, clients):
    sub = await client(clients, uri)
    await asyncio.wait_for(sub.subscribe([("#", QOS_1)]), WAIT)
    pub = await client(clients, uri)
    await asyncio.wait_for(pub.publish("$internal/x", b"hidden", qos=QOS_1), WAIT)
    await asyncio.wait_for(pub.publish("visible/x", b"shown", qos=QOS_1), WAIT)
    msg = await asyncio.wait_for(sub.deliver_message(), WAIT)
    assert (msg.topic, msg.data) == ("visible/x", b"shown")


async def test_amqtt_unaffected_by_malformed_neighbour(uri, running_broker, clients):
    sub = await client(clients, uri)
    await asyncio.wait_for(sub.subscribe([("amn/t", QOS_1)]), WAIT)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", running_broker.ports["mqtt"]), WAIT)
    writer.write(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
    assert (await asyncio.wait_for(reader.readexactly(4), WAIT))[:2] == b"\x20\x02"
    writer.write(b"\x3f\x00")  # PUBLISH QoS 3: malformed
    assert await asyncio.wait_for(reader.read(10), WAIT) == b""  # closed
    writer.close()
    pub = await client(clients, uri)
    await asyncio.wait_for(pub.publish("amn/t", b"fine", qos=QOS_1), WAIT)
    msg = await asyncio.wait_for(sub.deliver_message(), WAIT)
    assert msg.data == b"fine"


async def test_amqtt_keep_alive_kept_by_pings(running_broker, clients):
    uri = f"mqtt://127.0.0.1:{running_broker.ports['mqtt']}/"
    cl = MQTTClient(config={"auto_reconnect": False, "keep_alive": 1, "ping_delay": 0})
    await asyncio.wait_for(cl.connect(uri), WAIT)
    clients.append(cl)
    await asyncio.sleep(2.5)  # longer than 1.5 x keep alive: pings keep the connection
    await asyncio.wait_for(cl.subscribe([("ka/t", QOS_1)]), WAIT)
    await asyncio.wait_for(cl.publish("ka/t", b"alive", qos=QOS_1), WAIT)
    msg = await asyncio.wait_for(cl.deliver_message(), WAIT)
    assert msg.data == b"alive"
