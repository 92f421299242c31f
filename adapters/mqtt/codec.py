"""Sans-I/O MQTT 3.1.1 / 5.0 codec: packets, constants and encoders; no sockets, no asyncio.

``serialize(packet, version)`` encodes; the decoder (bytes -> packets) is ``decoder.MqttDecoder``,
which raises this module's :class:`MalformedPacket` (5.0 reason 0x81), :class:`ProtocolError`
(0x82), :class:`PacketTooLarge` (0x95) or :class:`UnsupportedProtocolVersion` (CONNACK 0x01 /
0x84) for input that breaks the spec.

The protocol version is learnt from CONNECT (server role) or set by the user (client role); it
decides whether packets carry properties and reason codes. PUBLISH has hand-written fast paths in
both directions (``encode_publish``) because it is the hot path.
"""
from __future__ import annotations

from typing import Any

NEED_DATA = object()

# Packet types [MQTT 2.1.2]
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)

PACKET_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
                7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
                12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

# Packets each side may receive; anything else is a protocol error.
FROM_CLIENT = frozenset((CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE,
                         UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH))
FROM_SERVER = frozenset((CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK,
                         PINGRESP, DISCONNECT, AUTH))

MQTT_3_1, MQTT_3_1_1, MQTT_5 = 3, 4, 5

# 5.0 reason codes used by the broker [MQTT 2.4]
SUCCESS = 0x00
GRANTED_QOS_1, GRANTED_QOS_2 = 0x01, 0x02
DISCONNECT_WITH_WILL = 0x04
NO_MATCHING_SUBSCRIBERS = 0x10
NO_SUBSCRIPTION_EXISTED = 0x11
UNSPECIFIED_ERROR = 0x80
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
UNSUPPORTED_PROTOCOL_VERSION = 0x84
CLIENT_IDENTIFIER_NOT_VALID = 0x85
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SERVER_UNAVAILABLE = 0x88
SERVER_BUSY = 0x89
BAD_AUTHENTICATION_METHOD = 0x8C
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
PACKET_IDENTIFIER_IN_USE = 0x91
PACKET_IDENTIFIER_NOT_FOUND = 0x92
RECEIVE_MAXIMUM_EXCEEDED = 0x93
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95
QUOTA_EXCEEDED = 0x97
ADMINISTRATIVE_ACTION = 0x98
PAYLOAD_FORMAT_INVALID = 0x99
RETAIN_NOT_SUPPORTED = 0x9A
QOS_NOT_SUPPORTED = 0x9B
SERVER_SHUTTING_DOWN = 0x8B
SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2

# 3.1.1 CONNACK return codes [MQTT 3.2.2.3]
CONNACK_ACCEPTED = 0
CONNACK_UNACCEPTABLE_PROTOCOL = 1
CONNACK_IDENTIFIER_REJECTED = 2
CONNACK_SERVER_UNAVAILABLE = 3
CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORIZED = 5


class MqttError(Exception):
    reason_code = UNSPECIFIED_ERROR

    def __init__(self, text: str, reason_code: int | None = None):
        super().__init__(text)
        self.text = text
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(MqttError):
    reason_code = MALFORMED_PACKET


class ProtocolError(MqttError):
    reason_code = PROTOCOL_ERROR


class PacketTooLarge(MqttError):
    reason_code = PACKET_TOO_LARGE


class UnsupportedProtocolVersion(MqttError):
    """CONNECT named a protocol we do not speak: CONNACK 0x01 (3.1.1) or 0x84 (5.0), then close."""
    reason_code = UNSUPPORTED_PROTOCOL_VERSION

    def __init__(self, text: str, level: int):
        super().__init__(text)
        self.level = level


# ============================================================================ properties
BYTE, U16, U32, VARINT, UTF8, BINARY, PAIR = range(7)

# id -> (name, type, packets it may appear in; "W" = will properties)
PROPERTY_TABLE = {
    0x01: ("payload_format_indicator", BYTE, {PUBLISH, "W"}),
    0x02: ("message_expiry_interval", U32, {PUBLISH, "W"}),
    0x03: ("content_type", UTF8, {PUBLISH, "W"}),
    0x08: ("response_topic", UTF8, {PUBLISH, "W"}),
    0x09: ("correlation_data", BINARY, {PUBLISH, "W"}),
    0x0B: ("subscription_identifier", VARINT, {PUBLISH, SUBSCRIBE}),
    0x11: ("session_expiry_interval", U32, {CONNECT, CONNACK, DISCONNECT}),
    0x12: ("assigned_client_identifier", UTF8, {CONNACK}),
    0x13: ("server_keep_alive", U16, {CONNACK}),
    0x15: ("authentication_method", UTF8, {CONNECT, CONNACK, AUTH}),
    0x16: ("authentication_data", BINARY, {CONNECT, CONNACK, AUTH}),
    0x17: ("request_problem_information", BYTE, {CONNECT}),
    0x18: ("will_delay_interval", U32, {"W"}),
    0x19: ("request_response_information", BYTE, {CONNECT}),
    0x1A: ("response_information", UTF8, {CONNACK}),
    0x1C: ("server_reference", UTF8, {CONNACK, DISCONNECT}),
    0x1F: ("reason_string", UTF8, {CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK,
                                   DISCONNECT, AUTH}),
    0x21: ("receive_maximum", U16, {CONNECT, CONNACK}),
    0x22: ("topic_alias_maximum", U16, {CONNECT, CONNACK}),
    0x23: ("topic_alias", U16, {PUBLISH}),
    0x24: ("maximum_qos", BYTE, {CONNACK}),
    0x25: ("retain_available", BYTE, {CONNACK}),
    0x26: ("user_property", PAIR, {CONNECT, CONNACK, PUBLISH, "W", PUBACK, PUBREC, PUBREL,
                                   PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT,
                                   AUTH}),
    0x27: ("maximum_packet_size", U32, {CONNECT, CONNACK}),
    0x28: ("wildcard_subscription_available", BYTE, {CONNACK}),
    0x29: ("subscription_identifier_available", BYTE, {CONNACK}),
    0x2A: ("shared_subscription_available", BYTE, {CONNACK}),
}
PROPERTY_IDS = {name: (pid, kind) for pid, (name, kind, _) in PROPERTY_TABLE.items()}
# Properties that may repeat; they are kept as lists.
REPEATABLE_PROPERTIES = {"user_property", "subscription_identifier"}


# ============================================================================ packets
class Packet:
    __slots__ = ()
    type = 0

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Will(Packet):
    __slots__ = ("topic", "payload", "qos", "retain", "properties")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 properties: dict | None = None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties or {}


class Connect(Packet):
    __slots__ = ("protocol_name", "protocol_level", "clean_start", "keep_alive", "client_id",
                 "will", "username", "password", "properties")
    type = CONNECT

    def __init__(self, client_id: str = "", *, protocol_level: int = MQTT_3_1_1,
                 protocol_name: str | None = None, clean_start: bool = True, keep_alive: int = 60,
                 will: Will | None = None, username: str | None = None,
                 password: bytes | None = None, properties: dict | None = None):
        self.protocol_name = protocol_name or ("MQIsdp" if protocol_level == 3 else "MQTT")
        self.protocol_level = protocol_level
        self.clean_start = clean_start
        self.keep_alive = keep_alive
        self.client_id = client_id
        self.will = will
        self.username = username
        self.password = password
        self.properties = properties or {}


class Connack(Packet):
    __slots__ = ("session_present", "reason_code", "properties")
    type = CONNACK

    def __init__(self, session_present: bool = False, reason_code: int = 0,
                 properties: dict | None = None):
        self.session_present = session_present
        self.reason_code = reason_code
        self.properties = properties or {}


class Publish(Packet):
    __slots__ = ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
    type = PUBLISH

    def __init__(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                 dup: bool = False, packet_id: int | None = None, properties: dict | None = None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = properties if properties is not None else {}


class _Ack(Packet):
    """PUBACK, PUBREC, PUBREL, PUBCOMP: packet id, reason code and properties (5.0)."""
    __slots__ = ("packet_id", "reason_code", "properties")

    def __init__(self, packet_id: int, reason_code: int = 0, properties: dict | None = None):
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties or {}


class Puback(_Ack):
    __slots__ = ()
    type = PUBACK


class Pubrec(_Ack):
    __slots__ = ()
    type = PUBREC


class Pubrel(_Ack):
    __slots__ = ()
    type = PUBREL


class Pubcomp(_Ack):
    __slots__ = ()
    type = PUBCOMP


class SubscriptionOptions(Packet):
    __slots__ = ("qos", "no_local", "retain_as_published", "retain_handling")

    def __init__(self, qos: int = 0, no_local: bool = False, retain_as_published: bool = False,
                 retain_handling: int = 0):
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling


class Subscribe(Packet):
    __slots__ = ("packet_id", "subscriptions", "properties")
    type = SUBSCRIBE

    def __init__(self, packet_id: int, subscriptions: list[tuple[str, SubscriptionOptions]],
                 properties: dict | None = None):
        self.packet_id = packet_id
        self.subscriptions = subscriptions
        self.properties = properties or {}


class Suback(Packet):
    __slots__ = ("packet_id", "reason_codes", "properties")
    type = SUBACK

    def __init__(self, packet_id: int, reason_codes: list[int], properties: dict | None = None):
        self.packet_id = packet_id
        self.reason_codes = reason_codes
        self.properties = properties or {}


class Unsubscribe(Packet):
    __slots__ = ("packet_id", "filters", "properties")
    type = UNSUBSCRIBE

    def __init__(self, packet_id: int, filters: list[str], properties: dict | None = None):
        self.packet_id = packet_id
        self.filters = filters
        self.properties = properties or {}


class Unsuback(Packet):
    __slots__ = ("packet_id", "reason_codes", "properties")
    type = UNSUBACK

    def __init__(self, packet_id: int, reason_codes: list[int] | None = None,
                 properties: dict | None = None):
        self.packet_id = packet_id
        self.reason_codes = reason_codes or []
        self.properties = properties or {}


class Pingreq(Packet):
    __slots__ = ()
    type = PINGREQ


class Pingresp(Packet):
    __slots__ = ()
    type = PINGRESP


class Disconnect(Packet):
    __slots__ = ("reason_code", "properties")
    type = DISCONNECT

    def __init__(self, reason_code: int = 0, properties: dict | None = None):
        self.reason_code = reason_code
        self.properties = properties or {}


class Auth(Packet):
    __slots__ = ("reason_code", "properties")
    type = AUTH

    def __init__(self, reason_code: int = 0, properties: dict | None = None):
        self.reason_code = reason_code
        self.properties = properties or {}


ACKS = {PUBACK: Puback, PUBREC: Pubrec, PUBREL: Pubrel, PUBCOMP: Pubcomp}


# ============================================================================ primitives
def encode_varint(n: int) -> bytes:
    """Variable Byte Integer [MQTT 1.5.5]: 7 bits per byte, at most 4 bytes."""
    if n < 128:
        return bytes((n,))
    if n > 268_435_455:
        raise ValueError(f"variable byte integer {n} exceeds 268435455")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_string(s: str) -> bytes:
    data = s.encode("utf-8")
    if len(data) > 65535:
        raise ValueError("UTF-8 string longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def encode_binary(b: bytes) -> bytes:
    if len(b) > 65535:
        raise ValueError("binary data longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def encode_properties(props: dict | None) -> bytes:
    if not props:
        return b"\x00"
    out = bytearray()
    for name, value in props.items():
        if value is None:
            continue
        pid, kind = PROPERTY_IDS[name]
        values = value if name in REPEATABLE_PROPERTIES else (value,)
        for v in values:
            out += encode_varint(pid)
            if kind == BYTE:
                out.append(v)
            elif kind == U16:
                out += v.to_bytes(2, "big")
            elif kind == U32:
                out += v.to_bytes(4, "big")
            elif kind == VARINT:
                out += encode_varint(v)
            elif kind == UTF8:
                out += encode_string(v)
            elif kind == BINARY:
                out += encode_binary(bytes(v))
            else:
                out += encode_string(v[0]) + encode_string(v[1])
    return encode_varint(len(out)) + bytes(out)


# ============================================================================ encoder
def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_publish(topic: bytes, payload: bytes, qos: int, retain: bool, dup: bool,
                   packet_id: int | None, props: bytes | None) -> bytes:
    """The hot path: ``topic`` already UTF-8 encoded, ``props`` an encoded property list for 5.0
    (``b"\\x00"`` when there are none) or None for 3.1.1."""
    first = 0x30 | (qos << 1) | (8 if dup else 0) | (1 if retain else 0)
    tl = len(topic)
    if qos:
        head = bytes((tl >> 8, tl & 0xFF)) + topic + packet_id.to_bytes(2, "big")  # type: ignore[union-attr]
    else:
        head = bytes((tl >> 8, tl & 0xFF)) + topic
    if props is not None:
        head += props
    length = len(head) + len(payload)
    if length < 128:
        return bytes((first, length)) + head + payload
    return bytes((first,)) + encode_varint(length) + head + payload


def serialize(packet: Packet, version: int = MQTT_3_1_1) -> bytes:
    v5 = version == MQTT_5
    t = packet.type
    if t == PUBLISH:
        p: Any = packet
        return encode_publish(p.topic.encode("utf-8"), bytes(p.payload), p.qos, p.retain, p.dup,
                              p.packet_id, encode_properties(p.properties) if v5 else None)
    if t in ACKS:
        p = packet
        body = p.packet_id.to_bytes(2, "big")
        if v5 and (p.reason_code or p.properties):
            body += bytes((p.reason_code,))
            if p.properties:
                body += encode_properties(p.properties)
        return _frame((t << 4) | (2 if t == PUBREL else 0), body)
    if t == CONNACK:
        p = packet
        body = bytes((1 if p.session_present else 0, p.reason_code))
        if v5:
            body += encode_properties(p.properties)
        return _frame(0x20, body)
    if t == SUBACK or t == UNSUBACK:
        p = packet
        body = p.packet_id.to_bytes(2, "big")
        if v5:
            body += encode_properties(p.properties)
        if t == SUBACK or v5:
            body += bytes(p.reason_codes)
        return _frame(t << 4, body)
    if t == PINGREQ:
        return b"\xc0\x00"
    if t == PINGRESP:
        return b"\xd0\x00"
    if t == DISCONNECT:
        p = packet
        if not v5:
            return b"\xe0\x00"
        if not p.reason_code and not p.properties:
            return b"\xe0\x00"
        body = bytes((p.reason_code,))
        if p.properties:
            body += encode_properties(p.properties)
        return _frame(0xE0, body)
    if t == AUTH:
        p = packet
        return _frame(0xF0, bytes((p.reason_code,)) + encode_properties(p.properties))
    if t == SUBSCRIBE:
        p = packet
        body = bytearray(p.packet_id.to_bytes(2, "big"))
        if v5:
            body += encode_properties(p.properties)
        for topic_filter, o in p.subscriptions:
            body += encode_string(topic_filter)
            opts = o.qos
            if v5:
                opts |= (4 if o.no_local else 0) | (8 if o.retain_as_published else 0) | (
                    o.retain_handling << 4)
            body.append(opts)
        return _frame(0x82, bytes(body))
    if t == UNSUBSCRIBE:
        p = packet
        body = bytearray(p.packet_id.to_bytes(2, "big"))
        if v5:
            body += encode_properties(p.properties)
        for topic_filter in p.filters:
            body += encode_string(topic_filter)
        return _frame(0xA2, bytes(body))
    if t == CONNECT:
        p = packet
        v5 = p.protocol_level == MQTT_5
        body = bytearray(encode_string(p.protocol_name))
        body.append(p.protocol_level)
        flags = 2 if p.clean_start else 0
        if p.will is not None:
            flags |= 4 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
        if p.password is not None:
            flags |= 0x40
        if p.username is not None:
            flags |= 0x80
        body.append(flags)
        body += p.keep_alive.to_bytes(2, "big")
        if v5:
            body += encode_properties(p.properties)
        body += encode_string(p.client_id)
        if p.will is not None:
            if v5:
                body += encode_properties(p.will.properties)
            body += encode_string(p.will.topic) + encode_binary(p.will.payload)
        if p.username is not None:
            body += encode_string(p.username)
        if p.password is not None:
            body += encode_binary(p.password)
        return _frame(0x10, bytes(body))
    raise ValueError(f"cannot serialize {packet!r}")
