"""Sans-I/O MQTT 3.1.1 / 5.0 codec: bytes <-> packets, no sockets, no asyncio.

``MqttDecoder.receive_data(bytes)`` buffers input; ``next_event()`` returns one packet or
``NEED_DATA`` (short input never raises). Input that breaks the spec raises :class:`MalformedPacket`
(5.0 reason 0x81), :class:`ProtocolError` (0x82), :class:`PacketTooLarge` (0x95) or
:class:`UnsupportedProtocolVersion` (CONNACK 0x01 / 0x84). ``serialize(packet, version)`` encodes.

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
_PROPERTY_TABLE = {
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
PROPERTY_IDS = {name: (pid, kind) for pid, (name, kind, _) in _PROPERTY_TABLE.items()}
# Properties that may repeat; they are kept as lists.
_REPEATABLE = {"user_property", "subscription_identifier"}
# Byte-valued properties that only take 0 or 1 [MQTT 3.1.2.11 etc.]
_BOOLEAN_BYTES = {"payload_format_indicator", "request_problem_information",
                  "request_response_information", "maximum_qos", "retain_available",
                  "wildcard_subscription_available", "subscription_identifier_available",
                  "shared_subscription_available"}


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


_ACKS = {PUBACK: Puback, PUBREC: Pubrec, PUBREL: Pubrel, PUBCOMP: Pubcomp}
# first byte -> class for the 2-byte acknowledgements (PUBREL carries flags 0010) [MQTT-2.2.2-1]
_SHORT_ACKS = {0x40: Puback, 0x50: Pubrec, 0x62: Pubrel, 0x70: Pubcomp}


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


def check_utf8(raw: bytes, what: str) -> str:
    """[MQTT-1.5.4-1] well-formed UTF-8 (no surrogates: Python's strict decoder refuses them);
    [MQTT-1.5.4-2] no U+0000."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000")
    return text


class _Reader:
    """Cursor over one packet's body; every read checks the remaining length."""
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos
        self.end = len(data)

    def remaining(self) -> int:
        return self.end - self.pos

    def byte(self) -> int:
        if self.pos >= self.end:
            raise MalformedPacket("packet shorter than its contents")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u16(self) -> int:
        if self.pos + 2 > self.end:
            raise MalformedPacket("packet shorter than its contents")
        v = (self.data[self.pos] << 8) | self.data[self.pos + 1]
        self.pos += 2
        return v

    def u32(self) -> int:
        if self.pos + 4 > self.end:
            raise MalformedPacket("packet shorter than its contents")
        v = int.from_bytes(self.data[self.pos:self.pos + 4], "big")
        self.pos += 4
        return v

    def varint(self) -> int:
        value = 0
        shift = 0
        for i in range(4):
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                # [MQTT-1.5.5-1] the minimum number of bytes: a trailing 0x00 is not allowed.
                if i and b == 0:
                    raise MalformedPacket("variable byte integer not in its shortest form")
                return value
            shift += 7
        raise MalformedPacket("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        n = self.u16()
        if self.pos + n > self.end:
            raise MalformedPacket("string or binary data longer than the packet")
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(v)

    def string(self, what: str) -> str:
        return check_utf8(self.binary(), what)

    def rest(self) -> bytes:
        v = self.data[self.pos:self.end]
        self.pos = self.end
        return bytes(v)


def _read_properties(r: _Reader, where: Any) -> dict:
    """Property list [MQTT 2.2.2]; a property not allowed in ``where`` or repeated when it may
    not be is a protocol error [MQTT 2.2.2.2]."""
    length = r.varint()
    if r.pos + length > r.end:
        raise MalformedPacket("property length beyond the packet")
    end = r.pos + length
    props: dict = {}
    saved_end = r.end
    r.end = end
    try:
        while r.pos < end:
            pid = r.varint()
            entry = _PROPERTY_TABLE.get(pid)
            if entry is None:
                raise MalformedPacket(f"unknown property identifier 0x{pid:02X}")
            name, kind, allowed = entry
            if where not in allowed:
                raise ProtocolError(f"property {name} not allowed in "
                                    f"{PACKET_NAMES.get(where, 'will properties')}")
            if kind == BYTE:
                value: Any = r.byte()
                if name in _BOOLEAN_BYTES and value > 1:
                    raise ProtocolError(f"property {name} must be 0 or 1")
            elif kind == U16:
                value = r.u16()
            elif kind == U32:
                value = r.u32()
            elif kind == VARINT:
                value = r.varint()
                if value == 0:
                    raise ProtocolError("subscription identifier 0")  # [MQTT-3.8.2.1.2]
            elif kind == UTF8:
                value = r.string(name)
            elif kind == BINARY:
                value = r.binary()
            else:
                value = (r.string("user property name"), r.string("user property value"))
            if name in _REPEATABLE:
                props.setdefault(name, []).append(value)
            elif name in props:
                raise ProtocolError(f"property {name} included more than once")
            else:
                props[name] = value
    finally:
        r.end = saved_end
    if props.get("receive_maximum", 1) == 0:
        raise ProtocolError("receive maximum 0")  # [MQTT 3.1.2.11.3]
    if props.get("maximum_packet_size", 1) == 0:
        raise ProtocolError("maximum packet size 0")
    return props


def encode_properties(props: dict | None) -> bytes:
    if not props:
        return b"\x00"
    out = bytearray()
    for name, value in props.items():
        if value is None:
            continue
        pid, kind = PROPERTY_IDS[name]
        values = value if name in _REPEATABLE else (value,)
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


# ============================================================================ decoder
class MqttDecoder:
    """Incremental decoder. ``role`` is "server" (decodes what clients send) or "client"."""

    def __init__(self, role: str = "server", *, version: int | None = None,
                 max_packet_size: int = 268_435_460):
        self.role = role
        self.accepted = FROM_CLIENT if role == "server" else FROM_SERVER
        #: None until CONNECT was seen (server role); 3, 4 or 5 afterwards
        self.version = version
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._pos = 0

    def receive_data(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_event(self) -> Any:
        buf = self._buf
        pos = self._pos
        n = len(buf)
        if n - pos < 2:
            return NEED_DATA
        first = buf[pos]
        # Remaining Length [MQTT 2.2.3]: a variable byte integer of at most 4 bytes.
        length = buf[pos + 1]
        if length < 0x80:  # one byte: the common case for small packets
            i = pos + 2
        else:
            length, i = self._remaining_length(buf, pos, n)
            if i < 0:
                return NEED_DATA
        total = i - pos + length
        if total > self.max_packet_size:
            raise PacketTooLarge(f"packet of {total} bytes exceeds the maximum packet size "
                                 f"{self.max_packet_size}")
        if n - i < length:
            return NEED_DATA
        end = i + length
        if length == 2 and first in _SHORT_ACKS and self.version is not None:
            # hot path: a PUBACK/PUBREC/PUBREL/PUBCOMP with no reason code
            pid = (buf[i] << 8) | buf[i + 1]
            self._consumed(end, n)
            if pid == 0:
                raise ProtocolError("packet identifier 0")  # [MQTT-2.3.1-1]
            return _SHORT_ACKS[first](pid)
        body = bytes(buf[i:end])
        self._consumed(end, n)
        ptype = first >> 4
        if ptype == PUBLISH and self.version is not None:
            return self._publish(first & 0x0F, body)
        return self.decode(ptype, first & 0x0F, body)

    @staticmethod
    def _remaining_length(buf: bytearray, pos: int, n: int) -> tuple[int, int]:
        """Multi-byte remaining length: (value, index after it), or (0, -1) if incomplete."""
        length = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= n:
                if i - pos - 1 >= 4:
                    raise MalformedPacket("remaining length longer than 4 bytes")
                return 0, -1
            b = buf[i]
            i += 1
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                if i - pos - 1 > 1 and b == 0:
                    # [MQTT-1.5.5-1] the minimum number of bytes
                    raise MalformedPacket("remaining length not in its shortest form")
                return length, i
            shift += 7
            if i - pos - 1 >= 4:
                raise MalformedPacket("remaining length longer than 4 bytes")

    def _consumed(self, end: int, n: int) -> None:
        if end == n:
            self._buf.clear()
            self._pos = 0
        else:
            self._pos = end

    def decode(self, ptype: int, flags: int, body: bytes) -> Packet:
        if ptype not in self.accepted:
            raise ProtocolError(f"{PACKET_NAMES.get(ptype, 'reserved packet type')} "
                                f"({ptype}) not allowed from the "
                                f"{'client' if self.role == 'server' else 'server'}")
        if ptype == PUBLISH:
            return self._publish(flags, body)
        # [MQTT-2.2.2-1/2] reserved flag bits: 0010 for PUBREL, SUBSCRIBE, UNSUBSCRIBE, else 0.
        expected = 2 if ptype in (PUBREL, SUBSCRIBE, UNSUBSCRIBE) else 0
        if flags != expected:
            raise MalformedPacket(f"{PACKET_NAMES[ptype]} fixed header flags must be "
                                  f"{expected:04b}, got {flags:04b}")
        if ptype == CONNECT:
            return self._connect(body)
        if self.version is None:
            raise ProtocolError("the first packet must be CONNECT")  # [MQTT-3.1.0-1]
        v5 = self.version == MQTT_5
        r = _Reader(body)
        if ptype in _ACKS:
            pid = r.u16()
            if pid == 0:
                raise ProtocolError("packet identifier 0")  # [MQTT-2.3.1-1]
            code = 0
            props: dict = {}
            if v5:
                if r.remaining():
                    code = r.byte()
                if r.remaining():
                    props = _read_properties(r, ptype)
            if r.remaining():
                raise MalformedPacket(f"{PACKET_NAMES[ptype]} longer than its contents")
            return _ACKS[ptype](pid, code, props)
        if ptype == SUBSCRIBE:
            return self._subscribe(r, v5)
        if ptype == UNSUBSCRIBE:
            pid = r.u16()
            if pid == 0:
                raise ProtocolError("packet identifier 0")
            props = _read_properties(r, UNSUBSCRIBE) if v5 else {}
            filters = []
            while r.remaining():
                filters.append(r.string("topic filter"))
            if not filters:
                raise ProtocolError("UNSUBSCRIBE with no topic filter")  # [MQTT-3.10.3-2]
            return Unsubscribe(pid, filters, props)
        if ptype in (PINGREQ, PINGRESP):
            if body:
                raise MalformedPacket(f"{PACKET_NAMES[ptype]} with a remaining length")
            return Pingreq() if ptype == PINGREQ else Pingresp()
        if ptype == DISCONNECT:
            if not v5:
                if body:
                    raise MalformedPacket("DISCONNECT with a remaining length")
                return Disconnect()
            code = r.byte() if r.remaining() else 0
            props = _read_properties(r, DISCONNECT) if r.remaining() else {}
            if r.remaining():
                raise MalformedPacket("DISCONNECT longer than its contents")
            return Disconnect(code, props)
        if ptype == AUTH:
            if not v5:
                raise ProtocolError("AUTH is an MQTT 5 packet")
            code = r.byte() if r.remaining() else 0
            props = _read_properties(r, AUTH) if r.remaining() else {}
            return Auth(code, props)
        if ptype == CONNACK:
            ack_flags = r.byte()
            if ack_flags & 0xFE:
                raise MalformedPacket("CONNACK reserved flags set")
            code = r.byte()
            props = _read_properties(r, CONNACK) if v5 and r.remaining() else {}
            return Connack(bool(ack_flags & 1), code, props)
        if ptype in (SUBACK, UNSUBACK):
            pid = r.u16()
            props = _read_properties(r, ptype) if v5 else {}
            codes = list(r.rest())
            return (Suback if ptype == SUBACK else Unsuback)(pid, codes, props)
        raise ProtocolError(f"unexpected packet type {ptype}")  # pragma: no cover

    def _publish(self, flags: int, body: bytes) -> Publish:
        if self.version is None:
            raise ProtocolError("the first packet must be CONNECT")  # [MQTT-3.1.0-1]
        qos = (flags >> 1) & 3
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
        dup = bool(flags & 8)
        if dup and qos == 0:
            raise MalformedPacket("PUBLISH QoS 0 with DUP set")  # [MQTT-3.3.1-2]
        if len(body) < 2:
            raise MalformedPacket("PUBLISH shorter than its topic length")
        tlen = (body[0] << 8) | body[1]
        pos = 2 + tlen
        if pos > len(body):
            raise MalformedPacket("PUBLISH topic longer than the packet")
        raw_topic = body[2:pos]
        try:
            topic = raw_topic.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket("topic name is not valid UTF-8") from None  # [MQTT-1.5.3-1]
        if "\x00" in topic:
            raise MalformedPacket("topic name contains U+0000")  # [MQTT-1.5.3-2]
        pid = None
        if qos:
            if pos + 2 > len(body):
                raise MalformedPacket("PUBLISH shorter than its packet identifier")
            pid = (body[pos] << 8) | body[pos + 1]
            if pid == 0:
                raise ProtocolError("packet identifier 0")  # [MQTT-2.3.1-1]
            pos += 2
        props: dict = {}
        if self.version == MQTT_5:
            if pos < len(body) and body[pos] == 0:
                pos += 1  # the common case: no properties
            else:
                r = _Reader(body, pos)
                props = _read_properties(r, PUBLISH)
                pos = r.pos
        return Publish(topic, body[pos:], qos, bool(flags & 1), dup, pid, props)

    def _connect(self, body: bytes) -> Connect:
        if self.role != "server":
            raise ProtocolError("CONNECT from the server")
        if self.version is not None:
            raise ProtocolError("second CONNECT on a connection")  # [MQTT-3.1.0-2]
        r = _Reader(body)
        name = r.string("protocol name")
        level = r.byte()
        if (name, level) not in (("MQTT", 4), ("MQTT", 5), ("MQIsdp", 3)):
            if name not in ("MQTT", "MQIsdp"):
                # [MQTT-3.1.2-1] not an MQTT protocol name: close without CONNACK.
                raise ProtocolError(f"protocol name {name!r} is not MQTT")
            raise UnsupportedProtocolVersion(f"protocol level {level} is not supported", level)
        self.version = level
        v5 = level == MQTT_5
        flags = r.byte()
        if flags & 1:
            raise MalformedPacket("CONNECT reserved flag set")  # [MQTT-3.1.2-3]
        clean = bool(flags & 2)
        will_flag = bool(flags & 4)
        will_qos = (flags >> 3) & 3
        will_retain = bool(flags & 0x20)
        password_flag = bool(flags & 0x40)
        username_flag = bool(flags & 0x80)
        if will_qos == 3:
            raise MalformedPacket("will QoS 3")  # [MQTT-3.1.2-14]
        if not will_flag and (will_qos or will_retain):
            raise MalformedPacket("will QoS or retain set without the will flag")  # [MQTT-3.1.2-11/13/15]
        if password_flag and not username_flag and not v5:
            raise MalformedPacket("password flag without username flag")  # [MQTT-3.1.2-22]
        keep_alive = r.u16()
        props = _read_properties(r, CONNECT) if v5 else {}
        client_id = r.string("client identifier")
        will = None
        if will_flag:
            will_props = _read_properties(r, "W") if v5 else {}
            will_topic = r.string("will topic")
            will_payload = r.binary()
            will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
        username = r.string("user name") if username_flag else None
        password = r.binary() if password_flag else None
        if r.remaining():
            raise MalformedPacket("CONNECT longer than its contents")
        return Connect(client_id, protocol_level=level, protocol_name=name, clean_start=clean,
                       keep_alive=keep_alive, will=will, username=username, password=password,
                       properties=props)

    def _subscribe(self, r: _Reader, v5: bool) -> Subscribe:
        pid = r.u16()
        if pid == 0:
            raise ProtocolError("packet identifier 0")
        props = _read_properties(r, SUBSCRIBE) if v5 else {}
        subs = []
        while r.remaining():
            topic_filter = r.string("topic filter")
            options = r.byte()
            qos = options & 3
            if qos == 3:
                raise MalformedPacket("subscription QoS 3")  # [MQTT-3-8.3-4]
            if v5:
                if options & 0xC0:
                    raise MalformedPacket("subscription options reserved bits set")  # [MQTT-3.8.3-5]
                rh = (options >> 4) & 3
                if rh == 3:
                    raise ProtocolError("retain handling 3")
                opts = SubscriptionOptions(qos, bool(options & 4), bool(options & 8), rh)
            else:
                if options & 0xFC:
                    raise MalformedPacket("SUBSCRIBE requested QoS reserved bits set")  # [MQTT-3-8.3-4]
                opts = SubscriptionOptions(qos)
            subs.append((topic_filter, opts))
        if not subs:
            raise ProtocolError("SUBSCRIBE with no topic filter")  # [MQTT-3.8.3-3]
        return Subscribe(pid, subs, props)


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
    if t in _ACKS:
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
