"""AMQP 0-9-1 wire codec, sans-I/O: bytes in, events out; frames out as bytes.

Nothing here touches sockets or the event loop. The server-side :class:`Decoder` takes
``receive_data(bytes)`` and hands back events from ``next_event()`` (``NEED_DATA`` when the
buffer holds no complete event; short input never raises). Malformed input raises
:class:`FrameError` carrying the AMQP reply code (501 FRAME_ERROR, 502 SYNTAX_ERROR, 505
UNEXPECTED_FRAME, 540 NOT_IMPLEMENTED) so the session can close that one connection.

Hot paths are hand-written: Basic.Publish + content header + body frames are parsed inline and
assembled into one :class:`Publish` event (the raw content-header payload is kept, so an AMQP
consumer gets the exact property bytes the publisher sent, without re-encoding), Basic.Ack is
parsed inline, and Basic.Deliver frames are built from pre-encoded pieces (see
:func:`deliver_frames`). The other methods are decoded with pamqp (``pamqp.commands``), which is
correct for them and off the hot path. Field tables and content properties use ``fields``
(``decode_table`` / ``encode_table``), which round-trips every AMQP field type exactly (pamqp
narrows floats to 32 bits and guesses at timestamp units).
"""
from __future__ import annotations

import struct
from typing import Any

from pamqp import commands as _pamqp_commands
from pamqp import exceptions as _pamqp_exceptions

from manifold.broker.message import Properties

from .fields import (BASIC_CLASS, content_header_payload, decode_properties, decode_shortstr,
                     shortstr_lossy)

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_MIN_SIZE = 4096  # [AMQP 0-9-1 4.2.1] the smallest frame_max a peer may negotiate
FRAME_OVERHEAD = 8     # 7-byte frame header + frame-end octet
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

BASIC_PUBLISH, BASIC_ACK = 40, 80
_PUBLISH_ID = (BASIC_CLASS << 16) | BASIC_PUBLISH

NEED_DATA = None

_frame_header = struct.Struct(">BHI")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_two_u16 = struct.Struct(">HH")
_content_header_head = struct.Struct(">HHQH")  # class, weight, body size, property flags
_ack = struct.Struct(">QB")


class FrameError(Exception):
    """Input that breaks the framing or syntax rules: a connection exception."""

    def __init__(self, code: int, text: str, class_id: int = 0, method_id: int = 0):
        super().__init__(text)
        self.code = code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id


class ProtocolHeaderMismatch(Exception):
    """The client opened with something other than ``AMQP 0 0 9 1``: answer with ours, close
    [AMQP 0-9-1 4.2.2]."""


# ====================================================================== events
class ProtocolHeaderReceived:
    __slots__ = ()


PROTOCOL_HEADER_RECEIVED = ProtocolHeaderReceived()


class Heartbeat:
    __slots__ = ("channel",)

    def __init__(self, channel: int):
        self.channel = channel


class Method:
    """A method frame decoded by pamqp (``method`` is a ``pamqp.commands`` instance)."""
    __slots__ = ("channel", "method", "class_id", "method_id")

    def __init__(self, channel: int, method: Any, class_id: int, method_id: int):
        self.channel = channel
        self.method = method
        self.class_id = class_id
        self.method_id = method_id


class Ack:
    """Basic.Ack from the client (fast path)."""
    __slots__ = ("channel", "delivery_tag", "multiple")

    def __init__(self, channel: int, delivery_tag: int, multiple: bool):
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.multiple = multiple


class Publish:
    """A complete Basic.Publish: method, content header and all body frames.

    ``header`` is the raw content-header payload (class, weight, size, flags, property list), fit
    for ``Message.encoded``. ``body`` is None when the body was larger than the message size limit
    (it was discarded while reading; ``body_size`` says how large it was)."""
    __slots__ = ("channel", "exchange", "routing_key", "mandatory", "immediate", "properties",
                 "header", "body", "body_size", "exchange_and_key", "encoded")

    def __init__(self, channel: int, exchange: str, routing_key: str, mandatory: bool,
                 immediate: bool, properties: Properties, header: bytes, body: bytes | None,
                 body_size: int, exchange_and_key: bytes = b"", encoded: Any = None):
        self.channel = channel
        # exchange and routing key as two short strings, as Basic.Deliver/Return carry them
        self.exchange_and_key = exchange_and_key
        # an Encoded shared by every publish with the same header bytes (for Message.encoded)
        self.encoded = encoded if encoded is not None else Encoded(header, exchange_and_key)
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate
        self.properties = properties
        self.header = header
        self.body = body
        self.body_size = body_size


class _Pending:
    """A Basic.Publish whose content is still arriving on one channel."""
    __slots__ = ("exchange", "routing_key", "mandatory", "immediate", "properties", "header",
                 "size", "received", "chunks", "discard", "exchange_and_key")

    def __init__(self, exchange: str, routing_key: str, mandatory: bool, immediate: bool,
                 exchange_and_key: bytes):
        self.exchange_and_key = exchange_and_key
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate
        self.properties: Properties | None = None
        self.header = b""
        self.size = 0
        self.received = 0
        self.chunks: list = []
        self.discard = False



# ====================================================================== cached wire form
class Encoded:
    """The AMQP wire form of a message's envelope, cached on ``Message.encoded`` so that fan-out
    and redelivery do not re-encode: the content header payload (properties and body size),
    exchange and routing key as two short strings, and, for one channel number, every byte of a
    Basic.Deliver that follows the delivery tag and precedes the body. Nothing in it depends on
    the body bytes, so consecutive publishes with equal headers share one instance."""
    __slots__ = ("header", "exchange_and_key", "tail_channel", "tail")

    def __init__(self, header: bytes, exchange_and_key: bytes):
        self.header = header
        self.exchange_and_key = exchange_and_key
        self.tail_channel = -1
        self.tail = b""

    @classmethod
    def of(cls, message: Any) -> "Encoded":
        return cls(content_header_payload(message.properties, len(message.body)),
                   shortstr_lossy(message.exchange) + shortstr_lossy(message.routing_key))

    def tail_for(self, channel: int, body_size: int) -> bytes:
        if self.tail_channel != channel:
            pack = _frame_header.pack
            tail = (self.exchange_and_key + b"\xce" +
                    pack(FRAME_HEADER, channel, len(self.header)) + self.header)
            if body_size:
                tail += b"\xce" + pack(FRAME_BODY, channel, body_size)
            self.tail = tail
            self.tail_channel = channel
        return self.tail


# ====================================================================== decoder
def _decode_publish(payload: bytes) -> tuple | None:
    """Basic.Publish arguments: (exchange, routing key, mandatory, immediate, the two names as
    short strings), or None if malformed (the general path then reports it)."""
    try:
        exchange, p = decode_shortstr(payload, 2)  # after reserved-1 (short)
        routing_key, p = decode_shortstr(payload, p)
        bits = payload[p]
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    if p + 1 != len(payload):
        return None
    return exchange, routing_key, bool(bits & 1), bool(bits & 2), payload[2:-1]


_METHOD_INDEX = _pamqp_commands.INDEX_MAPPING
# Methods a server never receives [AMQP 0-9-1 1.x "client" chassis only].
_SERVER_TO_CLIENT_ONLY = {
    0x000A000A, 0x000A001E, 0x000A0029,  # connection.start, tune, open-ok
    0x0014000B, 0x0032000B, 0x0028000B,  # channel.open-ok, queue.declare-ok, exchange.declare-ok
    0x003C003C, 0x003C0047, 0x003C0048, 0x003C0032,  # basic.deliver, get-ok, get-empty, return
    0x003C000B, 0x003C0015,  # basic.qos-ok, consume-ok
    # basic.cancel-ok is accepted: clients of RabbitMQ 4.3+ answer a server-sent basic.cancel.
}


class Decoder:
    """Server-side AMQP 0-9-1 frame reader.

    ``frame_max`` bounds every frame (header and end octet included) [AMQP 0-9-1 4.2.3];
    ``max_body`` bounds a message body (larger bodies are read and discarded, then reported as a
    :class:`Publish` with ``body=None`` so the session can raise the channel exception)."""

    def __init__(self, frame_max: int = 131072, max_body: int = 16 * 1024 * 1024):
        self.frame_max = frame_max
        self.max_body = max_body
        self._buf = bytearray()
        self._pos = 0
        self._header_seen = False
        self._pending: dict[int, _Pending] = {}
        # bytes of multi-frame bodies held until their last frame, over all channels
        self._held = 0
        self.max_held = max(2 * max_body, 1024 * 1024)
        # Publishers repeat themselves: the last method payload and property bytes decode once.
        self._last_publish: tuple = (None, None)
        self._last_props: tuple = (None, None)
        self._last_header: tuple = (None, None)
        self._last_encoded: Encoded | None = None
        # The exact bytes of the last publish's method frame, content header frame and body
        # frame header: a publisher repeating itself is recognised with one startswith().
        self._repeat: bytes | None = None
        self._repeat_event: Publish | None = None
        self._repeat_size = 0

    def receive_data(self, data: bytes) -> None:
        buf = self._buf
        if self._pos:
            if self._pos >= len(buf):
                buf.clear()
            else:
                del buf[:self._pos]
            self._pos = 0
        buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_event(self) -> Any:
        """The next complete event, or ``NEED_DATA``."""
        buf = self._buf
        if not self._header_seen:
            if len(buf) - self._pos < 8:
                have = bytes(buf[self._pos:self._pos + 4])
                if have != PROTOCOL_HEADER[:len(have)]:
                    raise ProtocolHeaderMismatch(have)  # not AMQP at all: no need to wait
                return NEED_DATA
            header = bytes(buf[self._pos:self._pos + 8])
            if header != PROTOCOL_HEADER:
                raise ProtocolHeaderMismatch(header)
            self._pos += 8
            self._header_seen = True
            return PROTOCOL_HEADER_RECEIVED
        limit = len(buf)
        frame_max = self.frame_max
        unpack_header = _frame_header.unpack_from
        while True:
            pos = self._pos
            repeat = self._repeat
            if repeat is not None and buf.startswith(repeat, pos) and not self._pending:
                # Same method, properties and body size as the last publish: only the body
                # differs. Checks were done when the pattern was recorded.
                start = pos + len(repeat)
                end = start + self._repeat_size
                if end < limit:
                    if buf[end] != FRAME_END:
                        raise FrameError(501, "FRAME_ERROR - type 3, invalid frame end octet "
                                              f"{buf[end]:#04x}, expected 0xce")
                    self._pos = end + 1
                    e = self._repeat_event
                    return Publish(e.channel, e.exchange, e.routing_key, e.mandatory,
                                   e.immediate, e.properties, e.header, bytes(buf[start:end]),
                                   e.body_size, e.exchange_and_key, e.encoded)
            if limit - pos < 7:
                return NEED_DATA
            ftype, channel, size = unpack_header(buf, pos)
            end = pos + 7 + size
            if size + FRAME_OVERHEAD > frame_max:
                raise FrameError(501, f"FRAME_ERROR - type {ftype}, frame size {size + 8} is "
                                      f"larger than the negotiated frame_max {frame_max}")
            if end >= limit:
                return NEED_DATA
            if buf[end] != FRAME_END:
                raise FrameError(501, f"FRAME_ERROR - type {ftype}, invalid frame end octet "
                                      f"{buf[end]:#04x}, expected 0xce")
            start = pos + 7
            if ftype == FRAME_METHOD and size >= 4 and _u32.unpack_from(buf, start)[0] == \
                    _PUBLISH_ID and channel not in self._pending:
                event = self._publish_whole(buf, channel, start, end, limit)
                if event is not None:
                    return event
            self._pos = end + 1
            if ftype == FRAME_METHOD:
                event = self._method(buf, channel, start, end)
            elif ftype == FRAME_HEADER:
                event = self._content_header(buf, channel, start, end)
            elif ftype == FRAME_BODY:
                event = self._body(buf, channel, start, end)
            elif ftype == FRAME_HEARTBEAT:
                if channel != 0:
                    raise FrameError(501, "FRAME_ERROR - heartbeat frame on a non-zero channel")
                event = Heartbeat(channel)
            else:
                raise FrameError(501, f"FRAME_ERROR - unknown frame type {ftype}")
            if event is not None:
                return event

    # ------------------------------------------------------------------ frame kinds
    def _method(self, buf: bytearray, channel: int, start: int, end: int) -> Any:
        if channel in self._pending:
            raise FrameError(505, "UNEXPECTED_FRAME - expected content header for class 60, "
                                  "got non content header frame instead")
        if end - start < 4:
            raise FrameError(502, "SYNTAX_ERROR - method frame shorter than its method id")
        class_id, method_id = _two_u16.unpack_from(buf, start)
        if class_id == BASIC_CLASS:
            if method_id == BASIC_PUBLISH:
                self._publish(buf, channel, start + 4, end)
                return None
            if method_id == BASIC_ACK and end - start == 13:
                tag, bits = _ack.unpack_from(buf, start + 4)
                return Ack(channel, tag, bool(bits & 1))
        index = (class_id << 16) | method_id
        factory = _METHOD_INDEX.get(index)
        if factory is None:
            raise FrameError(540, f"NOT_IMPLEMENTED - unknown method class {class_id} "
                                  f"method {method_id}", class_id, method_id)
        if index in _SERVER_TO_CLIENT_ONLY:
            raise FrameError(503, f"COMMAND_INVALID - method {factory.name} is sent only by "
                                  "the server", class_id, method_id)
        method = factory()
        try:
            method.unmarshal(bytes(buf[start + 4:end]))
        except (struct.error, ValueError, TypeError, IndexError, UnicodeDecodeError,
                _pamqp_exceptions.UnmarshalingException) as exc:
            raise FrameError(502, f"SYNTAX_ERROR - cannot decode {factory.name}: {exc}",
                             class_id, method_id) from None
        return Method(channel, method, class_id, method_id)

    def _publish_whole(self, buf: bytearray, channel: int, start: int, end: int,
                       limit: int) -> Publish | None:
        """Basic.Publish, its content header and a single body frame, all in the buffer: one
        event without the per-frame bookkeeping. Anything unusual (content split across reads
        or body frames, a bad frame, a wrong channel, undecodable fields) returns None and the
        general path, which reports errors, takes over at the same position."""
        payload = buf[start + 4:end]
        last_payload, last = self._last_publish
        if payload != last_payload:
            payload = bytes(payload)
            last = _decode_publish(payload)
            if last is None:
                return None
            self._last_publish = (payload, last)
        unpack_header = _frame_header.unpack_from
        p = end + 1
        if limit - p < 7:
            return None
        htype, hchannel, hsize = unpack_header(buf, p)
        hend = p + 7 + hsize
        if (htype != FRAME_HEADER or hchannel != channel or hsize < 14 or hend >= limit or
                hsize + FRAME_OVERHEAD > self.frame_max or buf[hend] != FRAME_END):
            return None
        class_id, _weight, size = _content_header_head.unpack_from(buf, p + 7)[:3]
        if class_id != BASIC_CLASS or size > self.max_body:
            return None
        header = buf[p + 7:hend]
        last_header, props = self._last_header
        if header == last_header:
            header = last_header
        else:
            header = bytes(header)
            props_raw = header[12:]
            if props_raw == self._last_props[0]:
                props = self._last_props[1]
            else:
                try:
                    props = decode_properties(props_raw, 0, len(props_raw))
                except (struct.error, ValueError, IndexError, UnicodeDecodeError):
                    return None
                self._last_props = (props_raw, props)
            self._last_header = (header, props)
        if size == 0:
            body = b""
            self._pos = hend + 1
        else:
            q = hend + 1
            if limit - q < 7:
                return None
            btype, bchannel, bsize = unpack_header(buf, q)
            bend = q + 7 + bsize
            if (btype != FRAME_BODY or bchannel != channel or bsize != size or bend >= limit or
                    bsize + FRAME_OVERHEAD > self.frame_max or buf[bend] != FRAME_END):
                return None
            body = bytes(buf[q + 7:bend])
            self._pos = bend + 1
        exchange, routing_key, mandatory, immediate, exchange_and_key = last
        # Publishes with the same envelope share one Encoded (and its deliver tails).
        encoded = self._last_encoded
        if encoded is None or encoded.header is not header or \
                encoded.exchange_and_key is not exchange_and_key:
            encoded = self._last_encoded = Encoded(header, exchange_and_key)
        event = Publish(channel, exchange, routing_key, mandatory, immediate, props,
                        header, body, size, exchange_and_key, encoded)
        if size:
            self._repeat = bytes(buf[start - 7:hend + 8])  # up to the body frame's payload
            self._repeat_size = size
            self._repeat_event = event
        return event

    def _publish(self, buf: bytearray, channel: int, pos: int, end: int) -> None:
        payload = bytes(buf[pos:end])
        last_payload, last = self._last_publish
        if payload == last_payload:
            exchange, routing_key, mandatory, immediate, exchange_and_key = last
        else:
            try:
                # reserved-1 (short), exchange (shortstr), routing-key (shortstr), bits
                p = 2
                exchange, p = decode_shortstr(payload, p)
                routing_key, p = decode_shortstr(payload, p)
                bits = payload[p]
                if p + 1 != len(payload):
                    raise ValueError("trailing bytes")
            except (IndexError, ValueError, UnicodeDecodeError) as exc:
                raise FrameError(502, f"SYNTAX_ERROR - cannot decode basic.publish: {exc}",
                                 BASIC_CLASS, BASIC_PUBLISH) from None
            mandatory, immediate = bool(bits & 1), bool(bits & 2)
            exchange_and_key = payload[2:-1]
            self._last_publish = (payload, (exchange, routing_key, mandatory, immediate,
                                            exchange_and_key))
        self._pending[channel] = _Pending(exchange, routing_key, mandatory, immediate,
                                          exchange_and_key)

    def _content_header(self, buf: bytearray, channel: int, start: int, end: int) -> Any:
        pending = self._pending.get(channel)
        if pending is None or pending.properties is not None:
            raise FrameError(505, "UNEXPECTED_FRAME - expected method frame, got non method "
                                  "frame instead")
        if end - start < 14:
            raise FrameError(502, "SYNTAX_ERROR - content header too short")
        class_id, _weight, size = _content_header_head.unpack_from(buf, start)[:3]
        if class_id != BASIC_CLASS:
            raise FrameError(505, f"UNEXPECTED_FRAME - content header for class {class_id}, "
                                  "expected class 60")
        header = bytes(buf[start:end])
        props_raw = header[12:]
        last_raw, last_props = self._last_props
        if props_raw == last_raw:
            props = last_props
        else:
            try:
                props = decode_properties(props_raw, 0, len(props_raw))
            except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
                raise FrameError(502, f"SYNTAX_ERROR - cannot decode content properties: {exc}",
                                 BASIC_CLASS, BASIC_PUBLISH) from None
            self._last_props = (props_raw, props)
        pending.properties = props
        pending.header = header
        pending.size = size
        if size > self.max_body:
            pending.discard = True
        if size == 0:
            return self._complete(channel, pending, b"")
        return None

    def _body(self, buf: bytearray, channel: int, start: int, end: int) -> Any:
        pending = self._pending.get(channel)
        if pending is None or pending.properties is None:
            raise FrameError(505, "UNEXPECTED_FRAME - expected method frame, got non method "
                                  "frame instead" if pending is None else
                                  "UNEXPECTED_FRAME - expected content header for class 60, "
                                  "got non content header frame instead")
        n = end - start
        received = pending.received + n
        if received > pending.size:
            raise FrameError(501, f"FRAME_ERROR - body of {received} bytes is larger than the "
                                  f"{pending.size} bytes announced in its content header")
        pending.received = received
        if received == pending.size and not pending.chunks:
            return self._complete(channel, pending, None if pending.discard else
                                  bytes(buf[start:end]))
        if not pending.discard:
            pending.chunks.append(bytes(buf[start:end]))
            self._held += n
            if self._held > self.max_held:
                # Half-sent messages on many channels at once: bound what one connection holds.
                raise FrameError(506, f"RESOURCE_ERROR - more than {self.max_held} bytes of "
                                      "unfinished message content on this connection")
        if received == pending.size:
            return self._complete(channel, pending,
                                  None if pending.discard else b"".join(pending.chunks))
        return None

    def _complete(self, channel: int, pending: _Pending, body: bytes | None) -> Publish:
        del self._pending[channel]
        if pending.chunks:
            self._held -= sum(len(c) for c in pending.chunks)
        return Publish(channel, pending.exchange, pending.routing_key, pending.mandatory,
                       pending.immediate, pending.properties, pending.header,  # type: ignore
                       body, pending.size, pending.exchange_and_key)

    def reset_channel(self, channel: int) -> None:
        """Forget a half-received publish on a channel that is being closed."""
        pending = self._pending.pop(channel, None)
        if pending is not None and pending.chunks:
            self._held -= sum(len(c) for c in pending.chunks)


# ====================================================================== encoder
def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return _frame_header.pack(ftype, channel, len(payload)) + payload + FRAME_END_BYTE


def method_frame(channel: int, class_id: int, method_id: int, payload: bytes = b"") -> bytes:
    return (_frame_header.pack(FRAME_METHOD, channel, len(payload) + 4) +
            _two_u16.pack(class_id, method_id) + payload + FRAME_END_BYTE)


def longstr(value: bytes | str) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return _u32.pack(len(raw)) + raw


def u16(value: int) -> bytes:
    return _u16.pack(value)


def u32(value: int) -> bytes:
    return _u32.pack(value)


def u64(value: int) -> bytes:
    return _u64.pack(value)


def content_frames(channel: int, header_payload: bytes, body: bytes, frame_max: int,
                   out: list) -> None:
    """Append the content header frame and the body frame(s) to ``out``; bodies longer than
    ``frame_max - 8`` are split [AMQP 0-9-1 4.2.6.2]."""
    pack = _frame_header.pack
    out.append(pack(FRAME_HEADER, channel, len(header_payload)))
    out.append(header_payload)
    n = len(body)
    chunk = frame_max - FRAME_OVERHEAD
    if n <= chunk:
        if n:
            out.append(b"\xce" + pack(FRAME_BODY, channel, n))
            out.append(body)
        out.append(FRAME_END_BYTE)
        return
    out.append(FRAME_END_BYTE)
    view = memoryview(body)
    for offset in range(0, n, chunk):
        piece = view[offset:offset + chunk]
        out.append(pack(FRAME_BODY, channel, len(piece)))
        out.append(piece)
        out.append(FRAME_END_BYTE)


_deliver_tail = struct.Struct(">QB")


def deliver_prefix(channel: int, ctag: bytes, exchange_and_key_len: int) -> bytes:
    """Frame header, method id and consumer tag of a Basic.Deliver (all that precedes the
    delivery tag); depends only on the consumer and the length of exchange + routing key."""
    size = 13 + len(ctag) + exchange_and_key_len
    return _frame_header.pack(FRAME_METHOD, channel, size) + b"\x00\x3c\x00\x3c" + ctag


def deliver_frames(channel: int, ctag: bytes, delivery_tag: int, redelivered: bool,
                   exchange_and_key: bytes, header_payload: bytes, body: bytes,
                   frame_max: int, out: list) -> None:
    """Basic.Deliver + content, appended to ``out`` as pre-encoded pieces. ``ctag`` and
    ``exchange_and_key`` are already short strings (cached per consumer / per message)."""
    size = 13 + len(ctag) + len(exchange_and_key)
    out.append(_frame_header.pack(FRAME_METHOD, channel, size) + b"\x00\x3c\x00\x3c")
    out.append(ctag)
    out.append(_deliver_tail.pack(delivery_tag, redelivered))
    out.append(exchange_and_key)
    out.append(FRAME_END_BYTE)
    content_frames(channel, header_payload, body, frame_max, out)
