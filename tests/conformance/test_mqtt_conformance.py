"""MQTT conformance from byte sequences, each test named by the spec rule it checks.

A raw socket client sends exact bytes to a real broker (``running_broker``) and checks what
comes back against byte fixtures where the spec fixes every byte, else field by field. The
bytes are built and taken apart by ``mqtt_wire`` (written from the specifications), never by
the adapter's codec under test. Every read is time-boxed.
"""
from __future__ import annotations

import socket
import time

import pytest

from tests.conformance import mqtt_wire as w
from tests.conformance.mqtt_wire import frame, string

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow


class RawClient:
    """A blocking MQTT client speaking exact bytes."""

    def __init__(self, port: int, version: int = 4, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.version = version
        self.buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = 30.0) -> w.Packet | None:
        """Next packet, or None if the broker closed the connection. Fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            whole = w.split(self.buffer)
            if whole is not None:
                return w.Packet(whole[0], whole[1], self.version)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the broker")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                assert not self.buffer, f"closed after a partial packet {bytes(self.buffer)!r}"
                return None
            self.buffer += data

    def expect(self, kind: int, timeout: float = 30.0) -> w.Packet:
        packet = self.recv(timeout)
        assert packet is not None and packet.kind == kind, \
            f"expected packet type {kind}, got {packet!r}"
        return packet

    def connect(self, client_id: str = "raw", **kw) -> w.Packet:
        self.send(w.connect(client_id, level=self.version, **kw))
        return self.expect(w.CONNACK)

    def subscribe(self, *filters: tuple[str, int], pid: int = 1, props: dict | None = None,
                  options: int = 0) -> w.Packet:
        self.send(w.subscribe(pid, [(f, q | options) for f, q in filters], level=self.version,
                              props=props))
        return self.expect(w.SUBACK)

    def publish(self, topic: str, payload: bytes, **kw) -> None:
        self.send(w.publish(topic, payload, level=self.version, **kw))

    def ping(self) -> None:
        self.send(w.PINGREQ_BYTES)
        assert self.expect(w.PINGRESP).raw == w.PINGRESP_BYTES

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def port(running_broker) -> int:
    return running_broker.ports["mqtt"]


def assert_broker_alive(port: int) -> None:
    """The broker and other clients go on after a bad client."""
    other = RawClient(port)
    assert other.connect("survivor").reason_code == 0
    other.ping()
    other.close()


# ============================================================================ CONNECT
def test_MQTT_3_1_0_1_first_packet_must_be_connect(port):
    cl = RawClient(port)
    cl.send(b"\xc0\x00")  # PINGREQ before CONNECT
    assert cl.recv() is None
    assert_broker_alive(port)


def test_MQTT_3_1_0_2_second_connect_is_a_protocol_violation(port):
    cl = RawClient(port)
    cl.connect("twice")
    cl.send(w.connect("twice"))
    assert cl.recv() is None


def test_MQTT_3_1_0_2_second_connect_v5_disconnect_0x82(port):
    cl = RawClient(port, 5)
    cl.connect("twice5")
    cl.send(w.connect("twice5", level=5))
    d = cl.expect(w.DISCONNECT)
    assert d.reason_code == w.PROTOCOL_ERROR
    assert cl.recv() is None


def test_MQTT_3_1_2_1_protocol_name_not_mqtt_closes(port):
    cl = RawClient(port)
    body = string("MQTX") + bytes([4, 2]) + b"\x00\x3c" + string("x")
    cl.send(frame(0x10, body))
    assert cl.recv() is None


def test_MQTT_3_1_2_2_unsupported_level_connack_0x01(port):
    cl = RawClient(port)
    body = string("MQTT") + bytes([6, 2]) + b"\x00\x3c" + string("x")
    cl.send(frame(0x10, body))
    ack = cl.expect(w.CONNACK)
    assert ack.raw == b"\x20\x02\x00\x01"  # return code 1: unacceptable protocol version
    assert cl.recv() is None


def test_MQTT_3_1_2_3_reserved_connect_flag_closes(port):
    cl = RawClient(port)
    body = string("MQTT") + bytes([4, 3]) + b"\x00\x3c" + string("x")
    cl.send(frame(0x10, body))
    assert cl.recv() is None


def test_MQTT_3_1_2_11_will_qos_without_will_flag_closes(port):
    cl = RawClient(port)
    body = string("MQTT") + bytes([4, 0x02 | 0x08]) + b"\x00\x3c" + string("x")
    cl.send(frame(0x10, body))
    assert cl.recv() is None


def test_MQTT_3_1_2_22_password_without_username_closes(port):
    cl = RawClient(port)
    body = string("MQTT") + bytes([4, 0x42]) + b"\x00\x3c" + string("x") + string("pw")
    cl.send(frame(0x10, body))
    assert cl.recv() is None


def test_MQTT_3_1_3_8_empty_client_id_with_clean_session_0_rejected(port):
    cl = RawClient(port)
    ack = cl.connect("", clean=False)
    assert ack.raw == b"\x20\x02\x00\x02"  # return code 2: identifier rejected
    assert cl.recv() is None


def test_MQTT_3_1_3_6_empty_client_id_accepted_with_clean_session(port):
    cl = RawClient(port)
    assert cl.connect("").reason_code == 0


def test_MQTT_3_2_2_3_v5_empty_client_id_gets_assigned_identifier(port):
    cl = RawClient(port, 5)
    ack = cl.connect("")
    assert ack.reason_code == 0
    assert ack.properties["assigned_client_identifier"]


def test_MQTT_3_2_2_3_bad_password_connack_4(port):
    cl = RawClient(port)
    ack = cl.connect("badpw", username="guest", password=b"wrong")
    assert ack.raw == b"\x20\x02\x00\x04"  # return code 4: bad user name or password
    assert cl.recv() is None


def test_MQTT_3_2_2_2_v5_bad_password_reason_0x86(port):
    cl = RawClient(port, 5)
    ack = cl.connect("badpw5", username="nobody", password=b"x")
    assert ack.reason_code == w.BAD_USER_NAME_OR_PASSWORD
    assert cl.recv() is None


def test_MQTT_3_2_2_1_good_password_accepted(port):
    cl = RawClient(port)
    assert cl.connect("goodpw", username="guest", password=b"guest").reason_code == 0


def test_MQTT_3_2_2_2_session_present_for_resumed_session(port):
    cl = RawClient(port)
    assert cl.connect("persist", clean=False).raw == w.CONNACK_ACCEPTED_311
    cl.subscribe(("p/q", 1))
    cl.send(b"\xe0\x00")
    cl.close()
    cl = RawClient(port)
    assert cl.connect("persist", clean=False).raw == w.CONNACK_SESSION_PRESENT_311
    cl.send(b"\xe0\x00")
    cl = RawClient(port)
    assert cl.connect("persist", clean=True).raw == w.CONNACK_ACCEPTED_311


def test_MQTT_3_1_4_3_session_takeover_v5_disconnect_0x8E(port):
    first = RawClient(port, 5)
    first.connect("same-id")
    second = RawClient(port, 5)
    assert second.connect("same-id").reason_code == 0
    d = first.expect(w.DISCONNECT)
    assert d.reason_code == w.SESSION_TAKEN_OVER
    assert first.recv() is None
    second.ping()


def test_MQTT_3_1_4_3_session_takeover_v311_closes_first(port):
    first = RawClient(port)
    first.connect("same-311")
    second = RawClient(port)
    assert second.connect("same-311").reason_code == 0
    assert first.recv() is None


def test_MQTT_3_1_2_24_keep_alive_enforced_at_one_and_a_half(port):
    cl = RawClient(port)
    cl.connect("ka", keep_alive=1)
    start = time.monotonic()
    assert cl.recv(timeout=30) is None
    elapsed = time.monotonic() - start
    # not before 1.5 x keep alive; the upper bound only says it came from the keep-alive timer
    # (a loaded machine fires timers late)
    assert 1.2 <= elapsed < 20.0


def test_MQTT_3_1_2_24_v5_keep_alive_disconnect_0x8D(port):
    cl = RawClient(port, 5)
    cl.connect("ka5", keep_alive=1)
    d = cl.expect(w.DISCONNECT, timeout=30)
    assert d.reason_code == w.KEEP_ALIVE_TIMEOUT


def test_MQTT_3_12_4_1_pingreq_gets_pingresp(port):
    cl = RawClient(port)
    cl.connect("ping")
    cl.ping()


# ============================================================================ malformed input
def test_MQTT_1_5_3_1_invalid_utf8_topic_closes(port):
    cl = RawClient(port)
    cl.connect("utf8")
    cl.send(frame(0x30, string(b"a/\xff\xfe") + b"x"))
    assert cl.recv() is None
    assert_broker_alive(port)


def test_MQTT_1_5_3_1_v5_invalid_utf8_topic_disconnect_0x81(port):
    cl = RawClient(port, 5)
    cl.connect("utf8v5")
    cl.send(frame(0x30, string(b"a/\xc0\xaf") + b"\x00x"))
    assert cl.expect(w.DISCONNECT).reason_code == w.MALFORMED_PACKET
    assert cl.recv() is None
    assert_broker_alive(port)


def test_MQTT_1_5_3_2_null_character_in_topic_closes(port):
    cl = RawClient(port)
    cl.connect("nul")
    cl.send(frame(0x30, string(b"a\x00b") + b"x"))
    assert cl.recv() is None


def test_MQTT_1_5_3_1_surrogate_in_utf8_string_closes(port):
    cl = RawClient(port)
    cl.connect("surrogate")
    cl.send(frame(0x30, string(b"a\xed\xa0\x80") + b"x"))  # U+D800 encoded
    assert cl.recv() is None


def test_MQTT_1_5_5_1_remaining_length_of_five_bytes_closes(port):
    cl = RawClient(port)
    cl.connect("varint")
    cl.send(b"\x30\xff\xff\xff\xff\x01")
    assert cl.recv() is None
    assert_broker_alive(port)


def test_MQTT_2_2_2_2_reserved_flags_in_subscribe_close(port):
    cl = RawClient(port)
    cl.connect("flags")
    cl.send(frame(0x80, b"\x00\x01" + string("a") + b"\x00"))  # flags 0000, must be 0010
    assert cl.recv() is None


def test_MQTT_2_2_2_2_v5_reserved_flags_disconnect_0x81(port):
    cl = RawClient(port, 5)
    cl.connect("flags5")
    cl.send(b"\xc1\x00")  # PINGREQ with flag bit set
    assert cl.expect(w.DISCONNECT).reason_code == w.MALFORMED_PACKET


def test_MQTT_2_3_1_1_packet_identifier_zero_closes(port):
    cl = RawClient(port)
    cl.connect("pid0")
    cl.send(frame(0x32, string("a") + b"\x00\x00x"))
    assert cl.recv() is None


def test_MQTT_3_3_1_4_publish_qos_3_closes(port):
    cl = RawClient(port)
    cl.connect("qos3")
    cl.send(frame(0x36, string("a") + b"\x00\x01x"))
    assert cl.recv() is None


def test_MQTT_3_3_1_2_qos0_with_dup_closes(port):
    cl = RawClient(port)
    cl.connect("dup0")
    cl.send(frame(0x38, string("a") + b"x"))
    assert cl.recv() is None


def test_MQTT_3_3_2_2_wildcard_in_topic_name_closes(port):
    cl = RawClient(port)
    cl.connect("wild")
    cl.send(frame(0x30, string("a/+") + b"x"))
    assert cl.recv() is None


def test_MQTT_3_3_2_2_v5_wildcard_topic_disconnect_0x90(port):
    cl = RawClient(port, 5)
    cl.connect("wild5")
    cl.send(frame(0x30, string("a/#") + b"\x00x"))
    assert cl.expect(w.DISCONNECT).reason_code == w.TOPIC_NAME_INVALID


def test_MQTT_4_7_3_1_zero_length_topic_closes(port):
    cl = RawClient(port)
    cl.connect("empty-topic")
    cl.send(frame(0x30, string("") + b"x"))
    assert cl.recv() is None


def test_MQTT_3_8_3_3_subscribe_without_filters_closes(port):
    cl = RawClient(port)
    cl.connect("nofilter")
    cl.send(frame(0x82, b"\x00\x01"))
    assert cl.recv() is None


def test_MQTT_3_8_3_4_subscribe_reserved_qos_bits_close(port):
    cl = RawClient(port)
    cl.connect("subqos")
    cl.send(frame(0x82, b"\x00\x01" + string("a") + b"\x03"))
    assert cl.recv() is None


def test_MQTT_3_10_3_2_unsubscribe_without_filters_closes(port):
    cl = RawClient(port)
    cl.connect("nounsub")
    cl.send(frame(0xA2, b"\x00\x01"))
    assert cl.recv() is None


def test_MQTT_3_2_2_v5_maximum_packet_size_exceeded_disconnect_0x95(make_broker):
    rb = make_broker(mqtt={"max_packet_bytes": 1024})
    cl = RawClient(rb.ports["mqtt"], 5)
    ack = cl.connect("big")
    assert ack.properties["maximum_packet_size"] == 1024
    cl.publish("a", b"x" * 2000)
    assert cl.expect(w.DISCONNECT).reason_code == w.PACKET_TOO_LARGE
    assert cl.recv() is None


def test_MQTT_3_1_2_25_server_never_exceeds_client_maximum_packet_size(port):
    sub = RawClient(port, 5)
    sub.connect("small", props={"maximum_packet_size": 100})
    sub.subscribe(("mps/#", 0))
    pub = RawClient(port, 5)
    pub.connect("mps-pub")
    pub.publish("mps/big", b"x" * 500)
    pub.publish("mps/small", b"ok")
    got = sub.expect(w.PUBLISH)
    assert got.payload == b"ok"  # the big one was dropped, not sent


def test_MQTT_3_3_2_8_v5_topic_alias_zero_disconnect_0x94(port):
    cl = RawClient(port, 5)
    cl.connect("alias0")
    cl.publish("a", b"x", props={"topic_alias": 0})
    assert cl.expect(w.DISCONNECT).reason_code == w.TOPIC_ALIAS_INVALID


def test_MQTT_3_3_4_v5_unknown_topic_alias_protocol_error(port):
    cl = RawClient(port, 5)
    cl.connect("alias-unknown")
    cl.publish("", b"x", props={"topic_alias": 3})
    assert cl.expect(w.DISCONNECT).reason_code == w.PROTOCOL_ERROR


def test_MQTT_3_3_2_4_v5_payload_format_invalid_puback_0x99(port):
    cl = RawClient(port, 5)
    cl.connect("pfi")
    cl.publish("a", b"\xff\xfe", qos=1, packet_id=7,
                             props={"payload_format_indicator": 1})
    ack = cl.expect(w.PUBACK)
    assert (ack.packet_id, ack.reason_code) == (7, w.PAYLOAD_FORMAT_INVALID)


# ============================================================================ SUBSCRIBE
def test_MQTT_3_9_3_suback_grants_requested_qos(port):
    cl = RawClient(port)
    cl.connect("granted")
    ack = cl.subscribe(("g/0", 0), ("g/1", 1), ("g/2", 2), pid=9)
    assert ack.raw == b"\x90\x05\x00\x09\x00\x01\x02"  # packet id 9, granted QoS 0, 1, 2


def test_MQTT_4_7_1_2_invalid_filter_gets_0x80(port):
    cl = RawClient(port)
    cl.connect("badfilter")
    ack = cl.subscribe(("a/#/b", 1), ("a/b+", 1), ("ok/+", 1))
    assert ack.raw == b"\x90\x05\x00\x01\x80\x80\x01"  # 0x80: failure [MQTT-3.9.3]


def test_MQTT_4_7_1_2_v5_invalid_filter_gets_0x8F(port):
    cl = RawClient(port, 5)
    cl.connect("badfilter5")
    ack = cl.subscribe(("#/a", 1), ("$share/g", 0))
    assert ack.reason_codes == [w.TOPIC_FILTER_INVALID, w.TOPIC_FILTER_INVALID]


def test_MQTT_3_10_4_v5_unsuback_reason_codes(port):
    cl = RawClient(port, 5)
    cl.connect("unsub5")
    cl.subscribe(("u/1", 0))
    cl.send(w.unsubscribe(3, ["u/1", "u/2"], level=5))
    ack = cl.expect(w.UNSUBACK)
    assert ack.reason_codes == [w.SUCCESS, w.NO_SUBSCRIPTION_EXISTED]


def test_MQTT_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards(port):
    sub = RawClient(port)
    sub.connect("dollar")
    sub.subscribe(("#", 0), ("+/x", 0), ("$SYS/#", 0))
    pub = RawClient(port)
    pub.connect("dollar-pub")
    pub.publish("$SYS/x", b"sys")
    pub.publish("$other/x", b"other")
    pub.publish("plain/x", b"plain")
    first = sub.expect(w.PUBLISH)
    second = sub.expect(w.PUBLISH)
    assert (first.topic, first.payload) == ("$SYS/x", b"sys")
    assert (second.topic, second.payload) == ("plain/x", b"plain")


def test_MQTT_4_7_1_2_multi_level_wildcard_matches_parent(port):
    sub = RawClient(port)
    sub.connect("parent")
    sub.subscribe(("sport/tennis/#", 0))
    pub = RawClient(port)
    pub.connect("parent-pub")
    pub.publish("sport/tennis", b"1")
    pub.publish("sport/tennis/player/score", b"2")
    pub.publish("sport/golf", b"3")
    pub.publish("sport/tennis/x", b"4")
    got = [sub.expect(w.PUBLISH).raw for _ in range(3)]
    assert got == [b"\x30\x0f\x00\x0csport/tennis1",
                   b"\x30\x1c\x00\x19sport/tennis/player/score2",
                   b"\x30\x11\x00\x0esport/tennis/x4"]


def test_MQTT_4_7_1_3_single_level_wildcard_and_dots_round_trip(port):
    sub = RawClient(port)
    sub.connect("dots")
    sub.subscribe(("a.b/+/c", 0))
    pub = RawClient(port)
    pub.connect("dots-pub")
    pub.publish("a.b/x.y/c", b"1")
    pub.publish("a/b/x/c", b"no")
    pub.publish("a.b//c", b"2")
    got = [(p.topic, p.payload) for p in (sub.expect(w.PUBLISH), sub.expect(w.PUBLISH))]
    assert got == [("a.b/x.y/c", b"1"), ("a.b//c", b"2")]


# ============================================================================ QoS
def test_MQTT_4_3_2_qos1_puback_and_delivery(port):
    sub = RawClient(port)
    sub.connect("q1sub")
    sub.subscribe(("q1", 1))
    pub = RawClient(port)
    pub.connect("q1pub")
    pub.publish("q1", b"m", qos=1, packet_id=5)
    assert pub.expect(w.PUBACK).raw == b"\x40\x02\x00\x05"
    got = sub.expect(w.PUBLISH)
    assert got.packet_id  # [MQTT-2.3.1-1] non-zero
    assert got.raw == b"\x32\x07\x00\x02q1" + got.packet_id.to_bytes(2, "big") + b"m"
    sub.send(w.ack(w.PUBACK, got.packet_id))


def test_MQTT_4_3_3_qos2_exactly_once_on_duplicate_publish(port):
    sub = RawClient(port)
    sub.connect("q2sub")
    sub.subscribe(("q2", 2))
    pub = RawClient(port)
    pub.connect("q2pub")
    pub.publish("q2", b"once", qos=2, packet_id=11)
    assert pub.expect(w.PUBREC).raw == b"\x50\x02\x00\x0b"
    pub.publish("q2", b"once", qos=2, packet_id=11, dup=True)
    assert pub.expect(w.PUBREC).packet_id == 11
    pub.send(w.ack(w.PUBREL, 11))
    assert pub.expect(w.PUBCOMP).raw == b"\x70\x02\x00\x0b"
    got = sub.expect(w.PUBLISH)
    assert (got.qos, got.payload) == (2, b"once")
    sub.send(w.ack(w.PUBREC, got.packet_id))
    assert sub.expect(w.PUBREL).raw == b"\x62\x02" + got.packet_id.to_bytes(2, "big")
    sub.send(w.ack(w.PUBCOMP, got.packet_id))
    # After PUBREL the id is free: the same id is a new message.
    pub.publish("q2", b"again", qos=2, packet_id=11)
    pub.expect(w.PUBREC)
    pub.send(w.ack(w.PUBREL, 11))
    pub.expect(w.PUBCOMP)
    assert sub.expect(w.PUBLISH).payload == b"again"
    pub.ping()


def test_MQTT_4_3_3_qos2_state_survives_reconnect_of_persistent_session(port):
    sub = RawClient(port)
    sub.connect("q2persist-sub")
    sub.subscribe(("q2p", 2))
    pub = RawClient(port)
    pub.connect("q2persist", clean=False)
    pub.publish("q2p", b"one", qos=2, packet_id=21)
    pub.expect(w.PUBREC)
    pub.close()  # gone before PUBREL
    time.sleep(0.1)
    pub = RawClient(port)
    assert pub.connect("q2persist", clean=False).session_present
    pub.publish("q2p", b"one", qos=2, packet_id=21, dup=True)
    pub.expect(w.PUBREC)
    pub.send(w.ack(w.PUBREL, 21))
    pub.expect(w.PUBCOMP)
    assert sub.expect(w.PUBLISH).payload == b"one"
    with pytest.raises(TimeoutError):
        sub.recv(timeout=0.5)  # not a second copy


def test_MQTT_4_4_0_1_unacknowledged_publish_resent_with_dup_on_reconnect(port):
    sub = RawClient(port)
    sub.connect("resend", clean=False)
    sub.subscribe(("rs", 1))
    pub = RawClient(port)
    pub.connect("resend-pub")
    pub.publish("rs", b"a", qos=1, packet_id=1)
    pub.publish("rs", b"b", qos=1, packet_id=2)
    first = sub.expect(w.PUBLISH)
    second = sub.expect(w.PUBLISH)
    assert not first.dup
    sub.close()  # no PUBACK
    time.sleep(0.1)
    pub.publish("rs", b"c", qos=1, packet_id=3)
    sub = RawClient(port)
    assert sub.connect("resend", clean=False).session_present
    again = [sub.expect(w.PUBLISH) for _ in range(3)]
    assert [(p.packet_id, p.dup, p.payload) for p in again[:2]] == [
        (first.packet_id, True, b"a"), (second.packet_id, True, b"b")]
    assert again[2].payload == b"c" and not again[2].dup


def test_MQTT_4_4_0_1_pubrel_resent_on_reconnect(port):
    sub = RawClient(port)
    sub.connect("relsend", clean=False)
    sub.subscribe(("rl", 2))
    pub = RawClient(port)
    pub.connect("relsend-pub")
    pub.publish("rl", b"x", qos=2, packet_id=1)
    pub.expect(w.PUBREC)
    pub.send(w.ack(w.PUBREL, 1))
    got = sub.expect(w.PUBLISH)
    sub.send(w.ack(w.PUBREC, got.packet_id))
    assert sub.expect(w.PUBREL).packet_id == got.packet_id
    sub.close()  # no PUBCOMP
    time.sleep(0.1)
    sub = RawClient(port)
    sub.connect("relsend", clean=False)
    assert sub.expect(w.PUBREL).packet_id == got.packet_id
    sub.send(w.ack(w.PUBCOMP, got.packet_id))


def test_MQTT_4_9_0_v5_receive_maximum_bounds_messages_in_flight(port):
    sub = RawClient(port, 5)
    sub.connect("recvmax", props={"receive_maximum": 2})
    sub.subscribe(("rm", 1))
    pub = RawClient(port, 5)
    pub.connect("recvmax-pub")
    for i in range(5):
        pub.publish("rm", b"%d" % i, qos=1, packet_id=i + 1)
    got = [sub.expect(w.PUBLISH), sub.expect(w.PUBLISH)]
    with pytest.raises(TimeoutError):
        sub.recv(timeout=0.5)
    sub.send(w.ack(w.PUBACK, got[0].packet_id))
    assert sub.expect(w.PUBLISH).payload == b"2"


# ============================================================================ retained
def test_MQTT_3_3_1_10_empty_retained_payload_clears(port):
    pub = RawClient(port)
    pub.connect("ret-pub")
    pub.publish("ret/a", b"keep", retain=True)
    pub.publish("ret/b", b"gone", retain=True)
    pub.publish("ret/b", b"", retain=True)
    pub.ping()
    sub = RawClient(port)
    sub.connect("ret-sub")
    sub.subscribe(("ret/+", 0))
    got = sub.expect(w.PUBLISH)
    assert got.raw == b"\x31\x0b\x00\x05ret/akeep"  # RETAIN=1 [MQTT-3.3.1-8]
    with pytest.raises(TimeoutError):
        sub.recv(timeout=0.5)


def test_MQTT_3_3_1_12_live_message_sent_with_retain_0(port):
    sub = RawClient(port)
    sub.connect("live-sub")
    sub.subscribe(("live/x", 0))
    pub = RawClient(port)
    pub.connect("live-pub")
    pub.publish("live/x", b"r", retain=True)
    got = sub.expect(w.PUBLISH)
    assert got.raw == b"\x30\x09\x00\x06live/xr"  # RETAIN=0


# ============================================================================ wills
def test_MQTT_3_1_2_8_will_published_on_abnormal_close(port):
    sub = RawClient(port)
    sub.connect("will-sub")
    sub.subscribe(("will/t", 1))
    cl = RawClient(port)
    cl.connect("will-client", will=("will/t", b"bye", 1, False))
    cl.close()
    got = sub.expect(w.PUBLISH)
    assert (got.topic, got.payload) == ("will/t", b"bye")


def test_MQTT_3_14_4_3_disconnect_discards_will(port):
    sub = RawClient(port)
    sub.connect("will-sub2")
    sub.subscribe(("will/u", 1))
    cl = RawClient(port)
    cl.connect("will-client2", will=("will/u", b"bye", 1, False))
    cl.send(b"\xe0\x00")
    assert cl.recv() is None
    with pytest.raises(TimeoutError):
        sub.recv(timeout=0.5)


def test_MQTT_3_1_3_9_v5_will_delay_interval(port):
    sub = RawClient(port, 5)
    sub.connect("wd-sub")
    sub.subscribe(("will/d", 0))
    cl = RawClient(port, 5)
    cl.connect("wd-client", props={"session_expiry_interval": 60},
               will=("will/d", b"late", 0, False, {"will_delay_interval": 1}))
    cl.close()
    start = time.monotonic()
    got = sub.expect(w.PUBLISH, timeout=30)
    assert got.payload == b"late" and time.monotonic() - start >= 0.8


def test_MQTT_3_1_3_9_v5_will_delay_cancelled_by_reconnect(port):
    sub = RawClient(port, 5)
    sub.connect("wd-sub2")
    sub.subscribe(("will/e", 0))
    cl = RawClient(port, 5)
    # 3 s to reconnect leaves room for a loaded machine; then wait past the delay.
    cl.connect("wd-client2", props={"session_expiry_interval": 60},
               will=("will/e", b"late", 0, False, {"will_delay_interval": 3}))
    cl.close()
    time.sleep(0.2)
    cl = RawClient(port, 5)
    cl.connect("wd-client2", clean=False, props={"session_expiry_interval": 60})
    with pytest.raises(TimeoutError):
        sub.recv(timeout=4)


# ============================================================================ shutdown
def test_MQTT_3_14_v5_server_shutdown_disconnect_0x8B(make_broker):
    rb = make_broker()
    cl = RawClient(rb.ports["mqtt"], 5)
    cl.connect("shutdown")
    rb.stop()
    try:
        assert cl.expect(w.DISCONNECT).reason_code == w.SERVER_SHUTTING_DOWN
    finally:
        rb.stop = lambda: None  # already stopped


def test_MQTT_3_1_2_8_will_published_on_keep_alive_timeout(port):
    sub = RawClient(port)
    sub.connect("ka-will-sub")
    sub.subscribe(("will/ka", 0))
    cl = RawClient(port)
    cl.connect("ka-will", keep_alive=1, will=("will/ka", b"timeout", 0, False))
    got = sub.expect(w.PUBLISH, timeout=30)
    assert got.payload == b"timeout"


def test_MQTT_3_14_2_1_v5_disconnect_with_will_message_0x04(port):
    sub = RawClient(port, 5)
    sub.connect("dw-sub")
    sub.subscribe(("will/dw", 0))
    cl = RawClient(port, 5)
    cl.connect("dw", will=("will/dw", b"asked", 0, False))
    cl.send(w.disconnect(w.DISCONNECT_WITH_WILL))
    assert cl.recv() is None
    assert sub.expect(w.PUBLISH).payload == b"asked"


def test_MQTT_3_1_3_9_v5_delayed_will_cancelled_by_takeover(port):
    sub = RawClient(port, 5)
    sub.connect("tw-sub")
    sub.subscribe(("will/tw", 0))
    first = RawClient(port, 5)
    first.connect("tw", props={"session_expiry_interval": 60},
                  will=("will/tw", b"late", 0, False, {"will_delay_interval": 1}))
    second = RawClient(port, 5)
    assert second.connect("tw", clean=False,
                          props={"session_expiry_interval": 60}).session_present
    assert first.expect(w.DISCONNECT).reason_code == w.SESSION_TAKEN_OVER
    with pytest.raises(TimeoutError):
        sub.recv(timeout=1.5)


def test_MQTT_3_14_2_2_v5_session_expiry_set_on_disconnect_after_zero_is_protocol_error(port):
    cl = RawClient(port, 5)
    cl.connect("exp-zero")
    cl.send(w.disconnect(0, {"session_expiry_interval": 30}))
    assert cl.expect(w.DISCONNECT).reason_code == w.PROTOCOL_ERROR


def test_MQTT_3_14_2_v5_session_expiry_changed_on_disconnect(port):
    cl = RawClient(port, 5)
    cl.connect("exp-change", props={"session_expiry_interval": 60})
    cl.subscribe(("ec/t", 1))
    cl.send(w.disconnect(0, {"session_expiry_interval": 0}))  # end the session now
    assert cl.recv() is None
    cl = RawClient(port, 5)
    assert cl.connect("exp-change", clean=False,
                      props={"session_expiry_interval": 60}).session_present is False


def test_MQTT_3_3_1_9_retained_sent_after_suback(port):
    pub = RawClient(port)
    pub.connect("order-pub")
    pub.publish("ord/r", b"r", qos=1, packet_id=1, retain=True)
    pub.expect(w.PUBACK)
    sub = RawClient(port)
    sub.connect("order-sub")
    sub.send(w.subscribe(4, [("ord/#", 1)]))
    assert sub.recv().raw == b"\x90\x03\x00\x04\x01"  # SUBACK before any PUBLISH
    got = sub.expect(w.PUBLISH)
    assert (got.retain, got.qos) == (True, 1)


def test_MQTT_3_8_4_v5_subscription_identifier_zero_is_protocol_error(port):
    cl = RawClient(port, 5)
    cl.connect("sid0")
    cl.send(frame(0x82, b"\x00\x01\x02\x0b\x00" + string("a") + b"\x00"))
    assert cl.expect(w.DISCONNECT).reason_code == w.PROTOCOL_ERROR


def test_MQTT_3_8_3_4_v5_no_local_on_shared_subscription_is_protocol_error(port):
    cl = RawClient(port, 5)
    cl.connect("nlshare")
    cl.send(w.subscribe(1, [("$share/g/a", 0x04)], level=5))  # options: QoS 0, No Local
    assert cl.expect(w.DISCONNECT).reason_code == w.PROTOCOL_ERROR


def test_MQTT_3_1_2_v5_authentication_method_refused_0x8C(port):
    cl = RawClient(port, 5)
    ack = cl.connect("auth", props={"authentication_method": "SCRAM-SHA-1"})
    assert ack.reason_code == w.BAD_AUTHENTICATION_METHOD


def test_MQTT_3_14_4_3_v5_disconnect_with_error_reason_keeps_will(port):
    sub = RawClient(port, 5)
    sub.connect("de-sub")
    sub.subscribe(("will/de", 0))
    cl = RawClient(port, 5)
    cl.connect("de", will=("will/de", b"error", 0, False))
    cl.send(w.disconnect(w.UNSPECIFIED_ERROR))
    assert cl.recv() is None
    assert sub.expect(w.PUBLISH).payload == b"error"


# ============================================================================ the byte helper
@pytest.mark.parametrize("value, encoded", [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"), (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_MQTT_1_5_5_varint_examples_of_the_spec(value, encoded):
    # the table of [MQTT 1.5.5]: the helper that frames every packet above
    assert w.varint(value) == encoded
    assert w.read_varint(encoded, 0) == (value, len(encoded))


def test_connect_bytes_match_the_spec_example():
    # [MQTT 3.1.1 3.1.2.10] example: protocol name, level 4, flags, keep alive 10
    assert w.connect("", keep_alive=10, clean=True)[2:12] == \
        b"\x00\x04MQTT\x04\x02\x00\x0a"
