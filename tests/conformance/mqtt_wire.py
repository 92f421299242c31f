"""MQTT packets as bytes, written from the specifications for the conformance tests.

Nothing here uses ``manifold.adapters.mqtt.codec``: the tests must not check the codec with
itself. Packet layouts follow MQTT 3.1.1 (OASIS Standard, section 3) and MQTT 5.0 (OASIS
Standard, section 3); property identifiers are MQTT 5.0 table 2-4; reason codes table 2-6.
Where a server reply is fully fixed by the spec, tests compare it with a byte fixture
(``CONNACK_ACCEPTED_311`` etc.); otherwise ``parse`` below takes it apart field by field.
"""
from __future__ import annotations

import struct

# Control packet types [MQTT 2.1.2]
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

# Fixed packets [MQTT 3.1.1 3.12, 3.13, 3.14; 3.2 with session present 0 and return code 0]
PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
DISCONNECT_BYTES = b"\xe0\x00"
CONNACK_ACCEPTED_311 = b"\x20\x02\x00\x00"
CONNACK_SESSION_PRESENT_311 = b"\x20\x02\x01\x00"

# MQTT 3.1.1 CONNACK return codes [3.2.2.3]
CONNACK_UNACCEPTABLE_PROTOCOL = 0x01
CONNACK_IDENTIFIER_REJECTED = 0x02
CONNACK_BAD_CREDENTIALS = 0x04

# MQTT 5.0 reason codes [table 2-6]
SUCCESS = 0x00
DISCONNECT_WITH_WILL = 0x04
NO_SUBSCRIPTION_EXISTED = 0x11
UNSPECIFIED_ERROR = 0x80
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
BAD_USER_NAME_OR_PASSWORD = 0x86
SERVER_SHUTTING_DOWN = 0x8B
BAD_AUTHENTICATION_METHOD = 0x8C
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95
PAYLOAD_FORMAT_INVALID = 0x99

# MQTT 5.0 properties [table 2-4]: name -> (identifier, type)
PROPERTIES = {
    "payload_format_indicator": (0x01, "byte"),
    "message_expiry_interval": (0x02, "u32"),
    "content_type": (0x03, "str"),
    "response_topic": (0x08, "str"),
    "correlation_data": (0x09, "bin"),
    "subscription_identifier": (0x0B, "varint"),
    "session_expiry_interval": (0x11, "u32"),
    "assigned_client_identifier": (0x12, "str"),
    "server_keep_alive": (0x13, "u16"),
    "authentication_method": (0x15, "str"),
    "authentication_data": (0x16, "bin"),
    "request_problem_information": (0x17, "byte"),
    "will_delay_interval": (0x18, "u32"),
    "request_response_information": (0x19, "byte"),
    "response_information": (0x1A, "str"),
    "server_reference": (0x1C, "str"),
    "reason_string": (0x1F, "str"),
    "receive_maximum": (0x21, "u16"),
    "topic_alias_maximum": (0x22, "u16"),
    "topic_alias": (0x23, "u16"),
    "maximum_qos": (0x24, "byte"),
    "retain_available": (0x25, "byte"),
    "user_property": (0x26, "pair"),
    "maximum_packet_size": (0x27, "u32"),
    "wildcard_subscription_available": (0x28, "byte"),
    "subscription_identifier_available": (0x29, "byte"),
    "shared_subscription_available": (0x2A, "byte"),
}
_BY_ID = {ident: (name, kind) for name, (ident, kind) in PROPERTIES.items()}


# ---------------------------------------------------------------- encoding
def varint(n: int) -> bytes:
    """Variable Byte Integer [MQTT 1.5.5]: 7 bits per byte, least significant first."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(s: str | bytes) -> bytes:
    """UTF-8 string / binary data: two-byte length, then the bytes [MQTT 1.5.4, 1.5.6]."""
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def frame(first: int, body: bytes) -> bytes:
    """Fixed header (type and flags, remaining length) and the rest [MQTT 2.1]."""
    return bytes([first]) + varint(len(body)) + body


def properties(props: dict | None) -> bytes:
    """A v5 property block: its length as a varint, then identifier + value pairs."""
    out = bytearray()
    for name, value in (props or {}).items():
        ident, kind = PROPERTIES[name]
        out += varint(ident)
        if kind == "byte":
            out.append(value)
        elif kind == "u16":
            out += struct.pack("!H", value)
        elif kind == "u32":
            out += struct.pack("!I", value)
        elif kind == "varint":
            out += varint(value)
        elif kind in ("str", "bin"):
            out += string(value)
        else:  # pair
            out += string(value[0]) + string(value[1])
    return varint(len(out)) + bytes(out)


def connect(client_id: str, *, level: int = 4, clean: bool = True, keep_alive: int = 60,
            props: dict | None = None, will: tuple | None = None,
            username: str | None = None, password: bytes | None = None) -> bytes:
    """CONNECT [MQTT 3.1.1 3.1 / 5.0 3.1]. ``will`` = (topic, payload, qos, retain[, props])."""
    flags = 0x02 if clean else 0
    payload = string(client_id)
    if will is not None:
        topic, message, qos, retain = will[:4]
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if level == 5:
            payload += properties(will[4] if len(will) > 4 else None)
        payload += string(topic) + string(message)
    if username is not None:
        flags |= 0x80
        payload += string(username)
    if password is not None:
        flags |= 0x40
        payload += string(password)
    header = string("MQTT") + bytes([level, flags]) + struct.pack("!H", keep_alive)
    if level == 5:
        header += properties(props)
    return frame(0x10, header + payload)


def publish(topic: str, payload: bytes, *, level: int = 4, qos: int = 0,
            packet_id: int | None = None, retain: bool = False, dup: bool = False,
            props: dict | None = None) -> bytes:
    """PUBLISH [3.3]: flags DUP (bit 3), QoS (bits 2-1), RETAIN (bit 0)."""
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = string(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if level == 5:
        body += properties(props)
    return frame(first, body + payload)


def ack(kind: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBCOMP (flags 0) and PUBREL (flags 0010) with reason Success, which
    v5 lets a sender leave out [MQTT 5.0 3.4.2.1]: the same four bytes in both versions."""
    return bytes([kind << 4 | (0x02 if kind == PUBREL else 0), 2]) + struct.pack("!H", packet_id)


def subscribe(packet_id: int, filters: list[tuple[str, int]], *, level: int = 4,
              props: dict | None = None) -> bytes:
    """SUBSCRIBE [3.8], flags 0010; each filter with its options byte (QoS in bits 1-0; v5
    No Local bit 2, Retain As Published bit 3, Retain Handling bits 5-4)."""
    body = struct.pack("!H", packet_id)
    if level == 5:
        body += properties(props)
    for topic_filter, options in filters:
        body += string(topic_filter) + bytes([options])
    return frame(0x82, body)


def unsubscribe(packet_id: int, filters: list[str], *, level: int = 4) -> bytes:
    body = struct.pack("!H", packet_id)
    if level == 5:
        body += properties(None)
    return frame(0xA2, body + b"".join(string(f) for f in filters))


def disconnect(reason: int = 0, props: dict | None = None) -> bytes:
    """A v5 DISCONNECT with a reason code and properties [MQTT 5.0 3.14]."""
    return frame(0xE0, bytes([reason]) + properties(props))


# ---------------------------------------------------------------- decoding
class Packet:
    """One packet from the server: ``kind``, ``flags``, ``raw`` (all its bytes) and the fields
    its type has."""

    def __init__(self, raw: bytes, body: bytes, level: int):
        self.raw = raw
        self.kind = raw[0] >> 4
        self.flags = raw[0] & 0x0F
        self.properties: dict = {}
        self.reason_code = 0
        parse = _PARSERS.get(self.kind)
        if parse is None:
            raise AssertionError(f"unexpected packet type {self.kind} from the server")
        parse(self, body, level)

    def __repr__(self) -> str:
        return f"Packet(kind={self.kind}, raw={self.raw[:40]!r})"


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        assert shift < 28, "remaining length over four bytes"


def _read_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from("!H", buf, pos)
    return buf[pos + 2:pos + 2 + n], pos + 2 + n


def _read_properties(buf: bytes, pos: int) -> tuple[dict, int]:
    length, pos = read_varint(buf, pos)
    end = pos + length
    props: dict = {}
    while pos < end:
        ident, pos = read_varint(buf, pos)
        name, kind = _BY_ID[ident]
        if kind == "byte":
            value, pos = buf[pos], pos + 1
        elif kind == "u16":
            (value,), pos = struct.unpack_from("!H", buf, pos), pos + 2
        elif kind == "u32":
            (value,), pos = struct.unpack_from("!I", buf, pos), pos + 4
        elif kind == "varint":
            value, pos = read_varint(buf, pos)
        elif kind == "bin":
            value, pos = _read_string(buf, pos)
        elif kind == "str":
            raw, pos = _read_string(buf, pos)
            value = raw.decode("utf-8")
        else:
            key, pos = _read_string(buf, pos)
            val, pos = _read_string(buf, pos)
            value = (key.decode(), val.decode())
        if name in ("user_property", "subscription_identifier"):
            props.setdefault(name, []).append(value)  # may repeat
        else:
            props[name] = value
    assert pos == end, "property block length mismatch"
    return props, end


def _connack(p: Packet, body: bytes, level: int) -> None:
    assert body[0] in (0, 1), "CONNACK acknowledge flags: bits 7-1 reserved [3.2.2.1]"
    p.session_present = bool(body[0])
    p.reason_code = body[1]
    if level == 5:
        p.properties, _ = _read_properties(body, 2)
    else:
        assert len(body) == 2


def _publish(p: Packet, body: bytes, level: int) -> None:
    p.dup = bool(p.flags & 0x08)
    p.qos = (p.flags >> 1) & 0x03
    p.retain = bool(p.flags & 0x01)
    topic, pos = _read_string(body, 0)
    p.topic = topic.decode("utf-8")
    p.packet_id = None
    if p.qos:
        (p.packet_id,) = struct.unpack_from("!H", body, pos)
        pos += 2
    if level == 5:
        p.properties, pos = _read_properties(body, pos)
    p.payload = body[pos:]


def _ack(p: Packet, body: bytes, level: int) -> None:
    (p.packet_id,) = struct.unpack_from("!H", body, 0)
    if len(body) > 2:
        p.reason_code = body[2]
        if len(body) > 3:
            p.properties, _ = _read_properties(body, 3)


def _suback(p: Packet, body: bytes, level: int) -> None:
    (p.packet_id,) = struct.unpack_from("!H", body, 0)
    pos = 2
    if level == 5:
        p.properties, pos = _read_properties(body, pos)
    p.reason_codes = list(body[pos:])


def _empty(p: Packet, body: bytes, level: int) -> None:
    assert body == b""


def _disconnect(p: Packet, body: bytes, level: int) -> None:
    if body:
        p.reason_code = body[0]
        if len(body) > 1:
            p.properties, _ = _read_properties(body, 1)


_PARSERS = {CONNACK: _connack, PUBLISH: _publish, PUBACK: _ack, PUBREC: _ack, PUBREL: _ack,
            PUBCOMP: _ack, SUBACK: _suback, UNSUBACK: _suback, PINGRESP: _empty,
            DISCONNECT: _disconnect}


def split(buf: bytearray) -> tuple[bytes, bytes] | None:
    """Take one whole packet off the front of ``buf``: (raw packet, body), or None for more."""
    if len(buf) < 2:
        return None
    pos = 1
    length = shift = 0
    while True:
        if pos >= len(buf):
            return None
        byte = buf[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    if len(buf) < pos + length:
        return None
    raw = bytes(buf[:pos + length])
    del buf[:pos + length]
    return raw, raw[pos:]
