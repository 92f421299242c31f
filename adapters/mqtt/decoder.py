"""Sans-I/O MQTT 3.1.1 / 5.0 decoder: bytes in, ``codec`` packets out.

``MqttDecoder.receive_data(bytes)`` buffers input; ``next_event()`` returns one packet or
``NEED_DATA`` (short input never raises). Input that breaks the spec raises
:class:`~codec.MalformedPacket` (5.0 reason 0x81), :class:`~codec.ProtocolError` (0x82),
:class:`~codec.PacketTooLarge` (0x95) or :class:`~codec.UnsupportedProtocolVersion`
(CONNACK 0x01 / 0x84). The protocol version is learnt from CONNECT (server role) or set by the
user (client role). The packets, constants and encoders are in ``codec``.
"""
from __future__ import annotations

from typing import Any

from .codec import (ACKS, AUTH, Auth, BINARY, BYTE, CONNACK, CONNECT, Connack, Connect,
                    DISCONNECT, Disconnect, FROM_CLIENT, FROM_SERVER, MQTT_5,
                    MalformedPacket, NEED_DATA, PACKET_NAMES, PINGREQ,
                    PINGRESP, PROPERTY_TABLE, PUBLISH, PUBREL, Packet,
                    PacketTooLarge, Pingreq, Pingresp, ProtocolError, Puback,
                    Pubcomp, Publish, Pubrec, Pubrel, REPEATABLE_PROPERTIES,
                    SUBACK, SUBSCRIBE, Suback, Subscribe, SubscriptionOptions,
                    U16, U32, UNSUBACK, UNSUBSCRIBE, UTF8, Unsuback,
                    Unsubscribe, UnsupportedProtocolVersion, VARINT, Will)

# Byte-valued properties that only take 0 or 1 [MQTT 3.1.2.11 etc.]
_BOOLEAN_BYTES = {"payload_format_indicator", "request_problem_information",
                  "request_response_information", "maximum_qos", "retain_available",
                  "wildcard_subscription_available", "subscription_identifier_available",
                  "shared_subscription_available"}
# first byte -> class for the 2-byte acknowledgements (PUBREL carries flags 0010) [MQTT-2.2.2-1]
_SHORT_ACKS = {0x40: Puback, 0x50: Pubrec, 0x62: Pubrel, 0x70: Pubcomp}


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
            entry = PROPERTY_TABLE.get(pid)
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
            if name in REPEATABLE_PROPERTIES:
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
        if ptype in ACKS:
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
            return ACKS[ptype](pid, code, props)
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
