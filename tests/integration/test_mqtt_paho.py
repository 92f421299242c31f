"""paho-mqtt (unmodified, as MQTT 3.1.1 and as MQTT 5.0 client) against a real broker.

Every wait is time-boxed; each test asserts what the client received.
"""
from __future__ import annotations

import queue
import socket
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)
V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5
BOTH = pytest.mark.parametrize("proto", [V311, V5], ids=["v311", "v5"])


class Paho:
    """A paho client with its callbacks turned into time-boxed queues."""

    def __init__(self, port: int, client_id: str | None = None, proto: int = V311, *,
                 clean: bool = True, expiry: int | None = None, username: str | None = None,
                 password: str | None = None, will: tuple | None = None, keepalive: int = 60,
                 connect_props: Properties | None = None, wait: bool = True):
        self.port = port
        self.proto = proto
        self.client_id = client_id if client_id is not None else f"paho-{uuid.uuid4().hex[:8]}"
        kwargs = {"clean_session": clean} if proto != V5 else {}
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=self.client_id, protocol=proto, **kwargs)
        self.messages: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.disconnects: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.unsubacks: queue.Queue = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, props: self.connacks.put(
            (flags, rc, props))
        self.client.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(
            (rc, props))
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(rcs)
        self.client.on_unsubscribe = lambda c, u, mid, rcs, props: self.unsubacks.put(rcs)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain, *rest = will
            self.client.will_set(topic, payload, qos, retain,
                                 properties=rest[0] if rest else None)
        self.clean = clean
        self.expiry = expiry
        self.keepalive = keepalive
        self.connect_props = connect_props
        if wait:
            self.connect()

    def connect(self) -> tuple:
        kwargs: dict = {"keepalive": self.keepalive}
        if self.proto == V5:
            props = self.connect_props or Properties(PacketTypes.CONNECT)
            if self.expiry is not None:
                props.SessionExpiryInterval = self.expiry
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = props
        self.client.connect("127.0.0.1", self.port, **kwargs)
        self.client.loop_start()
        flags, rc, props = self.connacks.get(timeout=WAIT)
        self.flags, self.rc, self.props = flags, rc, props
        return flags, rc, props

    def subscribe(self, topic, qos: int = 0, **kw) -> list:
        self.client.subscribe(topic, qos, **kw)
        return self.subacks.get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos, retain, properties)
        if qos:
            info.wait_for_publish(WAIT)
            assert info.is_published()
        return info

    def get(self, timeout: float = WAIT) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def nothing(self, timeout: float = 0.5) -> None:
        with pytest.raises(queue.Empty):
            m = self.messages.get(timeout=timeout)
            print("unexpected", m.topic, m.payload)

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        time.sleep(0.05)  # let the broker see the DISCONNECT before the test goes on

    def kill(self) -> None:
        """End the connection without DISCONNECT (abnormal: the will is published)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def port(running_broker) -> int:
    return running_broker.ports["mqtt"]


@pytest.fixture
def clients():
    made: list[Paho] = []
    yield made
    for cl in made:
        try:
            cl.client.disconnect()  # wakes the loop thread, so loop_stop returns at once
        except Exception:
            pass
    for cl in made:
        cl.client.loop_stop()


def make(clients, *args, **kw) -> Paho:
    cl = Paho(*args, **kw)
    clients.append(cl)
    return cl


def detached(broker, client_id: str) -> None:
    """Wait until the broker has taken ``client_id``'s DISCONNECT: its session, if kept, has no
    connection (else a quick reconnect could take over the old connection instead)."""
    sessions = broker.service.servers["mqtt"].sessions
    deadline = time.monotonic() + WAIT
    while broker.call(lambda: getattr(sessions.get(client_id), "conn", None) is not None):
        assert time.monotonic() < deadline, f"{client_id} still connected"
        time.sleep(0.01)


def sync(cl: Paho) -> None:
    """Round trip through the broker so earlier packets were processed."""
    cl.subscribe(f"sync/{uuid.uuid4().hex}", 0)


# ============================================================================ core pub/sub
@BOTH
def test_paho_qos_0_1_2_both_directions(port, clients, proto):
    sub = make(clients, port, proto=proto)
    rcs = sub.subscribe("q/+", 2)
    assert [int(getattr(r, "value", r)) for r in rcs] == [2]
    pub = make(clients, port, proto=proto)
    for qos in (0, 1, 2):
        pub.publish(f"q/{qos}", b"m%d" % qos, qos)
    got = sorted((m.topic, m.payload, m.qos) for m in (sub.get(), sub.get(), sub.get()))
    assert got == [("q/0", b"m0", 0), ("q/1", b"m1", 1), ("q/2", b"m2", 2)]


@BOTH
def test_paho_qos_downgraded_to_subscription(port, clients, proto):
    sub = make(clients, port, proto=proto)
    sub.subscribe("down", 1)
    pub = make(clients, port, proto=proto)
    pub.publish("down", b"x", 2)
    assert sub.get().qos == 1


@BOTH
def test_paho_wildcards_and_topics_with_dots(port, clients, proto):
    sub = make(clients, port, proto=proto)
    sub.subscribe([("home/+/temp.c", 1), ("log/#", 0)])
    pub = make(clients, port, proto=proto)
    pub.publish("home/kitchen.1/temp.c", b"21", 1)
    pub.publish("home/a/b/temp.c", b"no", 1)
    pub.publish("log", b"parent", 1)
    pub.publish("log/x/y", b"deep", 1)
    got = sorted((m.topic, m.payload) for m in (sub.get(), sub.get(), sub.get()))
    assert got == [("home/kitchen.1/temp.c", b"21"), ("log", b"parent"), ("log/x/y", b"deep")]
    sub.nothing()


@BOTH
def test_paho_unsubscribe_stops_delivery(port, clients, proto):
    sub = make(clients, port, proto=proto)
    sub.subscribe("un/sub", 1)
    sub.client.unsubscribe("un/sub")
    sub.unsubacks.get(timeout=WAIT)
    pub = make(clients, port, proto=proto)
    pub.publish("un/sub", b"x", 1)
    sub.nothing()


@BOTH
def test_paho_dollar_topics_not_matched_by_wildcard(port, clients, proto):
    sub = make(clients, port, proto=proto)
    sub.subscribe([("#", 0), ("$SYS/+", 0)])
    pub = make(clients, port, proto=proto)
    pub.publish("$SYS/load", b"sys", 1)
    pub.publish("normal", b"n", 1)
    got = [(m.topic, m.payload) for m in (sub.get(), sub.get())]
    assert sorted(got) == [("$SYS/load", b"sys"), ("normal", b"n")]
    sub.nothing()


# ============================================================================ CONNECT
@BOTH
def test_paho_bad_password_refused(port, clients, proto):
    cl = Paho(port, proto=proto, username="guest", password="wrong", wait=False)
    clients.append(cl)
    _, rc, _ = cl.connect()
    # paho reports 3.1.1 return code 4 as reason 0x86 too (the exact byte 4 is checked in
    # tests/conformance: test_MQTT_3_2_2_3_bad_password_connack_4)
    assert rc.value == 0x86


@BOTH
def test_paho_good_password_accepted(port, clients, proto):
    cl = make(clients, port, proto=proto, username="guest", password="guest")
    assert cl.rc == 0


def test_paho_v5_empty_client_id_gets_assigned_identifier(port, clients):
    cl = make(clients, port, client_id="", proto=V5)
    assert cl.props.AssignedClientIdentifier


def test_paho_v5_connack_properties(port, clients):
    cl = make(clients, port, proto=V5)
    props = cl.props
    assert props.ReceiveMaximum >= 1
    assert props.TopicAliasMaximum >= 1
    assert props.SharedSubscriptionAvailable == 1
    assert props.SubscriptionIdentifierAvailable == 1


def test_paho_v5_server_keep_alive(make_broker, clients):
    rb = make_broker(mqtt={"max_keepalive_s": 30})
    cl = make(clients, rb.ports["mqtt"], proto=V5, keepalive=600)
    assert cl.props.ServerKeepAlive == 30


@BOTH
def test_paho_session_takeover_disconnects_first(port, clients, proto):
    first = make(clients, port, client_id="takeover", proto=proto)
    second = make(clients, port, client_id="takeover", proto=proto)
    assert second.rc == 0
    first.client.reconnect_delay_set(60, 120)  # do not fight back
    rc, _ = first.disconnects.get(timeout=WAIT)
    if proto == V5:
        assert rc.value == 0x8E
    # the new connection works
    second.subscribe("to/x", 1)
    second.publish("to/x", b"y", 1)
    assert second.get().payload == b"y"


@BOTH
def test_paho_persistent_session_keeps_messages_in_order(running_broker, port, clients, proto):
    kw = {"clean": False, "expiry": 300} if proto == V5 else {"clean": False}
    sub = make(clients, port, client_id=f"persist-{proto}", proto=proto, **kw)
    sub.subscribe("persist/t", 1)
    sub.disconnect()
    detached(running_broker, f"persist-{proto}")
    pub = make(clients, port, proto=proto)
    for i in range(5):
        pub.publish("persist/t", b"%d" % i, 1)
    sub2 = make(clients, port, client_id=f"persist-{proto}", proto=proto, **kw)
    assert sub2.flags.session_present
    assert [sub2.get().payload for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]


def test_paho_v5_session_expiry_ends_session(running_broker, port, clients):
    sub = make(clients, port, client_id="expiring", proto=V5, clean=False, expiry=1)
    sub.subscribe("exp/t", 1)
    sub.disconnect()
    detached(running_broker, "expiring")
    time.sleep(1.5)  # the session's 1 s expiry runs out
    again = make(clients, port, client_id="expiring", proto=V5, clean=False, expiry=1)
    assert not again.flags.session_present


def test_paho_v5_session_expiry_zero_clean_start_false(running_broker, port, clients):
    sub = make(clients, port, client_id="exp0", proto=V5, clean=False, expiry=0)
    sub.subscribe("exp0/t", 1)
    sub.disconnect()
    detached(running_broker, "exp0")
    again = make(clients, port, client_id="exp0", proto=V5, clean=False, expiry=0)
    assert not again.flags.session_present


# ============================================================================ retained
@BOTH
def test_paho_retained_matched_by_wildcards_and_cleared(port, clients, proto):
    pub = make(clients, port, proto=proto)
    pub.publish("rt/a/x", b"ax", 1, retain=True)
    pub.publish("rt/b/x", b"bx", 1, retain=True)
    pub.publish("rt/c/y", b"cy", 1, retain=True)
    pub.publish("rt/b/x", b"", 1, retain=True)  # clears
    sub = make(clients, port, proto=proto)
    sub.subscribe("rt/+/x", 1)
    m = sub.get()
    assert (m.topic, m.payload, m.retain) == ("rt/a/x", b"ax", True)
    sub.nothing()
    sub2 = make(clients, port, proto=proto)
    sub2.subscribe("rt/#", 0)
    got = sorted((m.topic, m.payload) for m in (sub2.get(), sub2.get()))
    assert got == [("rt/a/x", b"ax"), ("rt/c/y", b"cy")]


# ============================================================================ wills
@BOTH
def test_paho_will_on_abnormal_disconnect(port, clients, proto):
    sub = make(clients, port, proto=proto)
    sub.subscribe("will/paho", 1)
    dying = make(clients, port, proto=proto, will=("will/paho", b"gone", 1, False))
    dying.kill()
    m = sub.get()
    assert (m.topic, m.payload) == ("will/paho", b"gone")


@BOTH
def test_paho_no_will_after_disconnect(port, clients, proto):
    sub = make(clients, port, proto=proto)
    sub.subscribe("will/clean", 1)
    polite = make(clients, port, proto=proto, will=("will/clean", b"gone", 1, False))
    polite.disconnect()
    sub.nothing(0.7)


def test_paho_v5_will_delay_interval(port, clients):
    sub = make(clients, port, proto=V5)
    sub.subscribe("will/delay", 0)
    wp = Properties(PacketTypes.WILLMESSAGE)
    wp.WillDelayInterval = 1
    dying = make(clients, port, proto=V5, expiry=60, will=("will/delay", b"late", 0, False, wp))
    start = time.monotonic()
    dying.kill()
    sub.nothing(0.5)
    assert sub.get().payload == b"late"
    assert time.monotonic() - start >= 0.9


# ============================================================================ MQTT 5 properties
def test_paho_v5_publish_properties_forwarded(port, clients):
    sub = make(clients, port, proto=V5)
    sub.subscribe("props/t", 1)
    pub = make(clients, port, proto=V5)
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = [("a", "1"), ("b", "2"), ("a", "3")]
    p.CorrelationData = b"\x00\xffcorr"
    p.ResponseTopic = "reply/to.me"
    p.ContentType = "application/json"
    p.PayloadFormatIndicator = 1
    p.MessageExpiryInterval = 600
    pub.publish("props/t", b'{"k": 1}', 1, properties=p)
    m = sub.get()
    props = m.properties
    assert props.UserProperty == [("a", "1"), ("b", "2"), ("a", "3")]
    assert props.CorrelationData == b"\x00\xffcorr"
    assert props.ResponseTopic == "reply/to.me"
    assert props.ContentType == "application/json"
    assert props.PayloadFormatIndicator == 1
    assert 540 <= props.MessageExpiryInterval <= 600  # what is left (a loaded machine is slow)


def test_paho_v5_invalid_utf8_with_payload_format_indicator(port, clients):
    pub = make(clients, port, proto=V5)
    results: queue.Queue = queue.Queue()
    pub.client.on_publish = lambda c, u, mid, rc, props: results.put(rc)
    p = Properties(PacketTypes.PUBLISH)
    p.PayloadFormatIndicator = 1
    pub.client.publish("pfi/t", b"\xff\xfe", 1, properties=p)
    rc = results.get(timeout=WAIT)
    assert rc.value == 0x99


def test_paho_v5_puback_no_matching_subscribers(port, clients):
    pub = make(clients, port, proto=V5)
    results: queue.Queue = queue.Queue()
    pub.client.on_publish = lambda c, u, mid, rc, props: results.put(rc)
    pub.client.publish("nobody/listens", b"x", 1)
    assert results.get(timeout=WAIT).value == 0x10


def test_paho_v5_message_expiry_while_queued(running_broker, port, clients):
    sub = make(clients, port, client_id="expq", proto=V5, clean=False, expiry=300)
    sub.subscribe("mexp/t", 1)
    sub.disconnect()
    detached(running_broker, "expq")
    pub = make(clients, port, proto=V5)
    p = Properties(PacketTypes.PUBLISH)
    p.MessageExpiryInterval = 1
    pub.publish("mexp/t", b"short", 1, properties=p)
    p2 = Properties(PacketTypes.PUBLISH)
    p2.MessageExpiryInterval = 100
    pub.publish("mexp/t", b"long", 1, properties=p2)
    published = time.monotonic()
    time.sleep(1.3)  # the 1 s expiry of "short" runs out
    sub2 = make(clients, port, client_id="expq", proto=V5, clean=False, expiry=300)
    m = sub2.get()
    assert m.payload == b"long"
    # what is left of its 100 s: less the time it waited (rounded to whole seconds)
    waited = time.monotonic() - published
    assert 100 - waited - 1 <= m.properties.MessageExpiryInterval <= 100
    sub2.nothing()


def test_paho_v5_retained_message_expiry(port, clients):
    pub = make(clients, port, proto=V5)
    p = Properties(PacketTypes.PUBLISH)
    p.MessageExpiryInterval = 1
    pub.publish("rexp/short", b"s", 1, retain=True, properties=p)
    p2 = Properties(PacketTypes.PUBLISH)
    p2.MessageExpiryInterval = 100
    pub.publish("rexp/long", b"l", 1, retain=True, properties=p2)
    time.sleep(1.3)
    sub = make(clients, port, proto=V5)
    sub.subscribe("rexp/#", 1)
    m = sub.get()
    assert (m.topic, m.retain) == ("rexp/long", True)
    assert m.properties.MessageExpiryInterval <= 100
    sub.nothing()


def test_paho_v5_topic_alias_from_client(port, clients):
    sub = make(clients, port, proto=V5)
    sub.subscribe("alias/long/topic/name", 1)
    pub = make(clients, port, proto=V5)
    p = Properties(PacketTypes.PUBLISH)
    p.TopicAlias = 1
    pub.publish("alias/long/topic/name", b"first", 1, properties=p)
    p = Properties(PacketTypes.PUBLISH)
    p.TopicAlias = 1
    pub.publish("", b"second", 1, properties=p)
    got = [(m.topic, m.payload) for m in (sub.get(), sub.get())]
    assert got == [("alias/long/topic/name", b"first"), ("alias/long/topic/name", b"second")]


def test_paho_v5_topic_alias_to_client(port, clients):
    cp = Properties(PacketTypes.CONNECT)
    cp.TopicAliasMaximum = 5
    sub = make(clients, port, proto=V5, connect_props=cp)
    sub.subscribe("out/alias", 1)
    pub = make(clients, port, proto=V5)
    pub.publish("out/alias", b"1", 1)
    pub.publish("out/alias", b"2", 1)
    got = [sub.get(), sub.get()]
    assert [m.payload for m in got] == [b"1", b"2"]
    # The broker set an alias on the first message and sent only the alias afterwards (paho
    # hands aliased messages over as they came, with an empty topic).
    assert got[0].topic == "out/alias"
    assert got[1].topic == ""
    assert got[1].properties.TopicAlias == got[0].properties.TopicAlias


def test_paho_v5_subscription_identifiers(port, clients):
    sub = make(clients, port, proto=V5)
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 7
    sub.subscribe("sid/+", 1, properties=sp)
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 9
    sub.subscribe("sid/#", 1, properties=sp)
    pub = make(clients, port, proto=V5)
    pub.publish("sid/a", b"x", 1)
    m = sub.get()
    assert sorted(m.properties.SubscriptionIdentifier) == [7, 9]
    sub.nothing()  # one copy for overlapping subscriptions


def test_paho_v5_no_local(port, clients):
    cl = make(clients, port, proto=V5)
    cl.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=True))
    other = make(clients, port, proto=V5)
    cl.publish("nl/t", b"mine", 1)
    other.publish("nl/t", b"theirs", 1)
    assert cl.get().payload == b"theirs"
    cl.nothing()


def test_paho_v5_retain_as_published(port, clients):
    rap = make(clients, port, proto=V5)
    rap.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=True))
    plain = make(clients, port, proto=V5)
    plain.subscribe("rap/t", options=SubscribeOptions(qos=1))
    pub = make(clients, port, proto=V5)
    pub.publish("rap/t", b"r", 1, retain=True)
    assert rap.get().retain is True
    assert plain.get().retain is False


def test_paho_v5_retain_handling(port, clients):
    pub = make(clients, port, proto=V5)
    pub.publish("rh/t", b"kept", 1, retain=True)
    rh0 = make(clients, port, proto=V5)
    rh0.subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=0))
    assert rh0.get().payload == b"kept"
    rh0.subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=0))
    assert rh0.get().payload == b"kept"  # 0: on every subscribe
    rh1 = make(clients, port, proto=V5)
    rh1.subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=1))
    assert rh1.get().payload == b"kept"
    rh1.subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=1))
    rh1.nothing()  # 1: only when the subscription is new
    rh2 = make(clients, port, proto=V5)
    rh2.subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=2))
    rh2.nothing()  # 2: never


def test_paho_v5_shared_subscription_round_robin(port, clients):
    members = [make(clients, port, proto=V5) for _ in range(2)]
    for m in members:
        m.subscribe("$share/workers/jobs/+", 1)
    normal = make(clients, port, proto=V5)
    normal.subscribe("jobs/+", 1)
    pub = make(clients, port, proto=V5)
    for i in range(10):
        pub.publish("jobs/x", b"%d" % i, 1)
    assert sorted(normal.get().payload for _ in range(10)) == sorted(b"%d" % i for i in range(10))
    got: list = []
    deadline = time.monotonic() + WAIT
    counts = [0, 0]
    while len(got) < 10 and time.monotonic() < deadline:
        for idx, m in enumerate(members):
            try:
                got.append(m.messages.get(timeout=0.05).payload)
                counts[idx] += 1
            except queue.Empty:
                pass
    assert sorted(got) == sorted(b"%d" % i for i in range(10))  # each message once
    assert counts[0] > 0 and counts[1] > 0


def test_paho_v5_shared_subscription_no_retained(port, clients):
    pub = make(clients, port, proto=V5)
    pub.publish("shret/t", b"r", 1, retain=True)
    m = make(clients, port, proto=V5)
    m.subscribe("$share/g/shret/t", 1)
    m.nothing()


def test_paho_v5_maximum_packet_size_respected(port, clients):
    cp = Properties(PacketTypes.CONNECT)
    cp.MaximumPacketSize = 200
    sub = make(clients, port, proto=V5, connect_props=cp)
    sub.subscribe("mps/+", 0)
    pub = make(clients, port, proto=V5)
    pub.publish("mps/big", b"x" * 1000, 1)
    pub.publish("mps/small", b"ok", 1)
    assert sub.get().payload == b"ok"


def test_paho_v5_server_shutdown_disconnect_reason(make_broker, clients):
    rb = make_broker()
    cl = make(clients, rb.ports["mqtt"], proto=V5)
    cl.client.reconnect_delay_set(60, 120)
    rb.stop()
    rb.stop = lambda: None
    rc, _ = cl.disconnects.get(timeout=WAIT)
    assert rc.value == 0x8B


# ============================================================================ bad input
@BOTH
def test_paho_clients_unaffected_by_malformed_client(port, clients, proto):
    sub = make(clients, port, proto=proto)
    sub.subscribe("robust/t", 1)
    bad = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    bad.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # CONNECT, empty id
    bad.recv(4)
    bad.sendall(b"\x30\xff\xff\xff\xff\xff")  # malformed remaining length
    bad.settimeout(WAIT)
    assert bad.recv(100) == b""
    pub = make(clients, port, proto=proto)
    pub.publish("robust/t", b"still here", 1)
    assert sub.get().payload == b"still here"


@BOTH
def test_paho_many_messages_in_order(port, clients, proto):
    sub = make(clients, port, proto=proto)
    sub.subscribe("order/t", 1)
    pub = make(clients, port, proto=proto)
    infos = [pub.client.publish("order/t", b"%d" % i, 1) for i in range(300)]
    for info in infos:
        info.wait_for_publish(WAIT)
    got = [sub.get().payload for _ in range(300)]
    assert got == [b"%d" % i for i in range(300)]


def test_paho_mqtt_3_1_protocol_level_3(port, clients):
    sub = make(clients, port, proto=mqtt.MQTTv31)
    sub.subscribe("v31/t", 2)
    pub = make(clients, port, proto=mqtt.MQTTv31)
    pub.publish("v31/t", b"old", 2)
    m = sub.get()
    assert (m.topic, m.payload, m.qos) == ("v31/t", b"old", 2)


def test_paho_v5_shared_group_members_leave_and_queue_goes(running_broker, clients):
    port = running_broker.ports["mqtt"]
    a = make(clients, port, proto=V5)
    b = make(clients, port, proto=V5)
    a.subscribe("$share/grp/sg/#", 1)
    b.subscribe("$share/grp/sg/#", 1)

    def shared_queues():
        return sorted(n for n in running_broker.broker.vhosts["/"].queues
                      if n.startswith("mqtt-shared-grp/"))

    assert running_broker.call(shared_queues) == ["mqtt-shared-grp/sg.#"]
    a.disconnect()  # a clean session ends: b gets everything now
    pub = make(clients, port, proto=V5)
    for i in range(4):
        pub.publish("sg/x", b"%d" % i, 1)
    assert sorted(b.get().payload for _ in range(4)) == [b"0", b"1", b"2", b"3"]
    b.client.unsubscribe("$share/grp/sg/#")
    b.unsubacks.get(timeout=WAIT)
    assert running_broker.call(shared_queues) == []
