"""MQTT codec from byte fixtures: whole, byte by byte, with trailing bytes; and the error rules."""
from __future__ import annotations

import pytest

from manifold.adapters.mqtt import codec as c
from manifold.adapters.mqtt.decoder import MqttDecoder
from manifold.adapters.mqtt import topics

# (description, version, bytes, expected packet)
FIXTURES = [
    ("connect 3.1.1", 4,
     b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd",
     c.Connect("abcd", protocol_level=4, keep_alive=60)),
    ("connect 3.1", 3,
     b"\x10\x10\x00\x06MQIsdp\x03\x02\x00\x0a\x00\x02id",
     c.Connect("id", protocol_level=3, keep_alive=10)),
    ("connect 5 with properties, will, credentials", 5,
     c.serialize(c.Connect("x", protocol_level=5, clean_start=False, keep_alive=5,
                           username="u", password=b"p",
                           will=c.Will("w/t", b"bye", 1, True, {"will_delay_interval": 3}),
                           properties={"session_expiry_interval": 10, "receive_maximum": 5,
                                       "user_property": [("k", "v")]}), 5),
     c.Connect("x", protocol_level=5, clean_start=False, keep_alive=5, username="u",
               password=b"p", will=c.Will("w/t", b"bye", 1, True, {"will_delay_interval": 3}),
               properties={"session_expiry_interval": 10, "receive_maximum": 5,
                           "user_property": [("k", "v")]})),
    ("publish qos 0", 4, b"\x30\x05\x00\x01ahi", c.Publish("a", b"hi")),
    ("publish qos 1 retain dup", 4, b"\x3b\x07\x00\x01a\x00\x07hi",
     c.Publish("a", b"hi", 1, True, True, 7)),
    ("publish 5 no properties", 5, b"\x30\x06\x00\x01a\x00hi", c.Publish("a", b"hi")),
    ("publish 5 with properties", 5,
     b"\x34\x0f\x00\x01a\x00\x02\x07\x01\x01\x23\x00\x05\x0b\x03hi",
     c.Publish("a", b"hi", 2, packet_id=2,
               properties={"payload_format_indicator": 1, "topic_alias": 5,
                           "subscription_identifier": [3]})),
    ("puback", 4, b"\x40\x02\x00\x07", c.Puback(7)),
    ("puback 5 reason", 5, b"\x40\x03\x00\x07\x10", c.Puback(7, 0x10)),
    ("pubrel", 4, b"\x62\x02\x00\x07", c.Pubrel(7)),
    ("subscribe", 4, b"\x82\x06\x00\x01\x00\x01a\x01",
     c.Subscribe(1, [("a", c.SubscriptionOptions(1))])),
    ("subscribe 5 options", 5, b"\x82\x09\x00\x01\x02\x0b\x05\x00\x01a\x2e",
     c.Subscribe(1, [("a", c.SubscriptionOptions(2, True, True, 2))],
                 {"subscription_identifier": [5]})),
    ("unsubscribe", 4, b"\xa2\x05\x00\x02\x00\x01a", c.Unsubscribe(2, ["a"])),
    ("pingreq", 4, b"\xc0\x00", c.Pingreq()),
    ("disconnect", 4, b"\xe0\x00", c.Disconnect()),
    ("disconnect 5 with expiry", 5, b"\xe0\x07\x00\x05\x11\x00\x00\x00\x0a",
     c.Disconnect(0, {"session_expiry_interval": 10})),
]


def decoder(version: int) -> c.MqttDecoder:
    return MqttDecoder("server", version=None if version == -1 else version)


def _feed(d: c.MqttDecoder, data: bytes, *, byte_by_byte: bool) -> list:
    out = []
    chunks = [data[i:i + 1] for i in range(len(data))] if byte_by_byte else [data]
    for chunk in chunks:
        d.receive_data(chunk)
        while True:
            ev = d.next_event()
            if ev is c.NEED_DATA:
                break
            out.append(ev)
    return out


@pytest.mark.parametrize("desc,version,data,expected", FIXTURES, ids=[f[0] for f in FIXTURES])
@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
def test_decode_fixture(desc, version, data, expected, byte_by_byte):
    d = MqttDecoder("server", version=None if expected.type == c.CONNECT else version)
    assert _feed(d, data, byte_by_byte=byte_by_byte) == [expected]
    assert d.buffered == 0


@pytest.mark.parametrize("desc,version,data,expected", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_decode_fixture_with_trailing_bytes(desc, version, data, expected):
    d = MqttDecoder("server", version=None if expected.type == c.CONNECT else version)
    d.receive_data(data + b"\xc0")
    assert d.next_event() == expected
    assert d.next_event() is c.NEED_DATA
    assert d.buffered == 1


@pytest.mark.parametrize("desc,version,data,expected", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_serialize_fixture(desc, version, data, expected):
    assert c.serialize(expected, version) == data


def test_decoder_learns_version_from_connect():
    d = MqttDecoder()
    d.receive_data(c.serialize(c.Connect("x", protocol_level=5), 5) + b"\x30\x06\x00\x01a\x00hi")
    assert d.next_event().protocol_level == 5
    assert d.next_event() == c.Publish("a", b"hi")


def test_short_input_never_raises():
    data = c.serialize(c.Publish("a/b", b"x" * 300, 1, packet_id=1), 4)
    d = MqttDecoder(version=4)
    for i in range(len(data)):
        d.receive_data(data[i:i + 1])
        if i < len(data) - 1:
            assert d.next_event() is c.NEED_DATA
    assert d.next_event().payload == b"x" * 300


@pytest.mark.parametrize("data,exc", [
    (b"\x30\xff\xff\xff\xff\x01", c.MalformedPacket),           # remaining length > 4 bytes
    (b"\x30\x80\x00", c.MalformedPacket),                       # non-minimal remaining length
    (b"\x36\x04\x00\x01a\x00", c.MalformedPacket),              # QoS 3
    (b"\x38\x04\x00\x01ax", c.MalformedPacket),                 # QoS 0 + DUP
    (b"\x30\x04\x00\x02\xff\xfe", c.MalformedPacket),           # invalid UTF-8 topic
    (b"\x30\x04\x00\x02a\x00", c.MalformedPacket),              # U+0000 in topic
    (b"\x30\x03\x00\x05a", c.MalformedPacket),                  # topic beyond packet
    (b"\x32\x05\x00\x01a\x00\x00", c.ProtocolError),            # packet id 0
    (b"\x80\x06\x00\x01\x00\x01a\x00", c.MalformedPacket),      # SUBSCRIBE flags 0000
    (b"\xc1\x00", c.MalformedPacket),                           # PINGREQ flags
    (b"\xc0\x01\x00", c.MalformedPacket),                       # PINGREQ with a body
    (b"\x82\x02\x00\x01", c.ProtocolError),                     # SUBSCRIBE without filters
    (b"\x82\x06\x00\x01\x00\x01a\x03", c.MalformedPacket),      # subscribe QoS 3
    (b"\x20\x02\x00\x00", c.ProtocolError),                     # CONNACK from a client
    (b"\x00\x00", c.ProtocolError),                             # reserved type 0
    (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", c.ProtocolError),  # second CONNECT
])
def test_malformed_3_1_1(data, exc):
    d = MqttDecoder(version=4)
    d.receive_data(data)
    with pytest.raises(exc):
        d.next_event()


@pytest.mark.parametrize("data,exc", [
    (b"\x30\x07\x00\x01a\x02\x01\x02hi", c.ProtocolError),      # payload format indicator 2
    (b"\x30\x07\x00\x01a\x03\x02\x00\x00", c.MalformedPacket),  # property beyond packet
    (b"\x30\x09\x00\x01a\x05\x11\x00\x00\x00\x01", c.ProtocolError),  # CONNECT-only property
    (b"\x30\x06\x00\x01a\x01\x7fx", c.MalformedPacket),         # unknown property id
    (b"\x30\x08\x00\x01a\x04\x01\x01\x01\x01", c.ProtocolError),  # duplicate property
    (b"\x82\x06\x00\x01\x00\x00\x01a", c.MalformedPacket),      # subscribe: options missing
    (b"\x82\x07\x00\x01\x00\x00\x01a\xc1", c.MalformedPacket),  # reserved option bits
    (b"\x82\x07\x00\x01\x00\x00\x01a\x30", c.ProtocolError),    # retain handling 3
])
def test_malformed_5(data, exc):
    d = MqttDecoder(version=5)
    d.receive_data(data)
    with pytest.raises(exc):
        d.next_event()


def test_first_packet_must_be_connect():
    d = MqttDecoder()
    d.receive_data(b"\xc0\x00")
    with pytest.raises(c.ProtocolError):
        d.next_event()


def test_unsupported_protocol_level():
    d = MqttDecoder()
    d.receive_data(b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00")
    with pytest.raises(c.UnsupportedProtocolVersion) as info:
        d.next_event()
    assert info.value.level == 7


def test_maximum_packet_size():
    d = MqttDecoder(version=4, max_packet_size=10)
    d.receive_data(b"\x30\x0a")  # known too big from the fixed header alone
    with pytest.raises(c.PacketTooLarge):
        d.next_event()


def test_varint_encoding_bounds():
    assert c.encode_varint(0) == b"\x00"
    assert c.encode_varint(127) == b"\x7f"
    assert c.encode_varint(128) == b"\x80\x01"
    assert c.encode_varint(268_435_455) == b"\xff\xff\xff\x7f"
    with pytest.raises(ValueError):
        c.encode_varint(268_435_456)


# ------------------------------------------------------------------ topics
@pytest.mark.parametrize("topic,key", [
    ("a/b", "a.b"), ("a.b/c", "a/b.c"), ("/", "."), ("a//b", "a..b"), ("$SYS/x", "$SYS.x"),
])
def test_topic_key_mapping_round_trips(topic, key):
    assert topics.topic_to_key(topic) == key
    assert topics.key_to_topic(key) == topic


def test_filter_mapping():
    assert topics.filter_to_key("a/+/b.c/#") == "a.*.b/c.#"


@pytest.mark.parametrize("f,ok", [
    ("#", True), ("a/#", True), ("a/+/b", True), ("+", True), ("a/#/b", False), ("a#", False),
    ("a/b+", False), ("", False), ("/", True),
])
def test_valid_filter(f, ok):
    assert topics.valid_topic_filter(f) is ok


@pytest.mark.parametrize("f,t,ok", [
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
    ("+/+", "/x", True), ("#", "$SYS/x", False), ("+/x", "$SYS/x", False),
    ("$SYS/#", "$SYS/x", True), ("a/b", "a/b", True), ("a/+/c", "a//c", True),
])
def test_matches(f, t, ok):
    assert topics.matches(f, t) is ok


def test_parse_shared():
    assert topics.parse_shared("$share/g/a/b") == ("g", "a/b")
    assert topics.parse_shared("a/b") == (None, "a/b")
    for bad in ("$share/g", "$share//a", "$share/g+/a"):
        with pytest.raises(ValueError):
            topics.parse_shared(bad)
