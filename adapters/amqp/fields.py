"""AMQP 0-9-1 field values: field tables and the basic-class content properties.

Sans-I/O encoders and decoders, used by ``codec`` (frames) and by the session (server
properties, AMQPLAIN). Type letters as RabbitMQ reads them (AMQP 0-9-1 errata:
https://www.rabbitmq.com/amqp-0-9-1-errata.html).
"""
from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

from manifold.broker.message import EMPTY_PROPERTIES, Properties

BASIC_CLASS = 60
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_i64 = struct.Struct(">q")
_content_header_head = struct.Struct(">HHQH")  # class, weight, body size, property flags

# ---------------------------------------------------------------------- field tables
_i8 = struct.Struct(">b")
_u8 = struct.Struct(">B")
_i16 = struct.Struct(">h")
_i32 = struct.Struct(">i")
_f32 = struct.Struct(">f")
_f64 = struct.Struct(">d")
_dec = struct.Struct(">Bi")
_UTC = datetime.timezone.utc


def _decode_value(buf: Any, pos: int) -> tuple[Any, int]:
    kind = buf[pos]
    pos += 1
    if kind == 0x53:  # 'S' long string: text if it is UTF-8, else the raw bytes
        n = _u32.unpack_from(buf, pos)[0]
        pos += 4
        end = pos + n
        if end > len(buf):
            raise ValueError("long string past the end of the table")
        raw = bytes(buf[pos:end])
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            return raw, end
    if kind == 0x49:  # 'I' int32
        return _i32.unpack_from(buf, pos)[0], pos + 4
    if kind == 0x6C or kind == 0x4C:  # 'l' int64 ('L' seen from some clients)
        return _i64.unpack_from(buf, pos)[0], pos + 8
    if kind == 0x74:  # 't' boolean
        return buf[pos] != 0, pos + 1
    if kind == 0x46:  # 'F' nested table
        return decode_table(buf, pos)
    if kind == 0x41:  # 'A' array
        n = _u32.unpack_from(buf, pos)[0]
        pos += 4
        end = pos + n
        if end > len(buf):
            raise ValueError("array past the end of the table")
        items = []
        while pos < end:
            value, pos = _decode_value(buf, pos)
            items.append(value)
        if pos != end:
            raise ValueError("array length does not match its items")
        return items, end
    if kind == 0x62:  # 'b' int8
        return _i8.unpack_from(buf, pos)[0], pos + 1
    if kind == 0x42:  # 'B' uint8
        return _u8.unpack_from(buf, pos)[0], pos + 1
    if kind == 0x73:  # 's' int16
        return _i16.unpack_from(buf, pos)[0], pos + 2
    if kind == 0x75:  # 'u' uint16
        return _u16.unpack_from(buf, pos)[0], pos + 2
    if kind == 0x69:  # 'i' uint32
        return _u32.unpack_from(buf, pos)[0], pos + 4
    if kind == 0x66:  # 'f' float32
        return _f32.unpack_from(buf, pos)[0], pos + 4
    if kind == 0x64:  # 'd' float64
        return _f64.unpack_from(buf, pos)[0], pos + 8
    if kind == 0x44:  # 'D' decimal: scale octet, signed 32-bit mantissa
        scale, mantissa = _dec.unpack_from(buf, pos)
        return decimal.Decimal(mantissa).scaleb(-scale), pos + 5
    if kind == 0x54:  # 'T' timestamp, seconds since the epoch
        seconds = _u64.unpack_from(buf, pos)[0]
        try:
            return datetime.datetime.fromtimestamp(seconds, _UTC), pos + 8
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"timestamp {seconds} out of range") from None
    if kind == 0x56:  # 'V' void
        return None, pos
    if kind == 0x78:  # 'x' byte array
        n = _u32.unpack_from(buf, pos)[0]
        pos += 4
        end = pos + n
        if end > len(buf):
            raise ValueError("byte array past the end of the table")
        return bytearray(buf[pos:end]), end
    raise ValueError(f"unknown field type {chr(kind)!r}")


def decode_table(buf: Any, pos: int = 0) -> tuple[dict, int]:
    """Decode a field table (4-byte length, then name/value pairs) at ``pos``; returns the dict
    and the position after it. Raises ValueError (or struct.error) on malformed input."""
    n = _u32.unpack_from(buf, pos)[0]
    pos += 4
    end = pos + n
    if end > len(buf):
        raise ValueError("field table past the end of the frame")
    table: dict = {}
    while pos < end:
        klen = buf[pos]
        pos += 1
        key = bytes(buf[pos:pos + klen]).decode("utf-8")
        pos += klen
        if pos >= end:
            raise ValueError("field table entry without a value")
        table[key], pos = _decode_value(buf, pos)
    if pos != end:
        raise ValueError("field table length does not match its entries")
    return table, end


def _encode_value(value: Any, out: list) -> None:
    if isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(b"S" + _u32.pack(len(raw)))
        out.append(raw)
    elif isinstance(value, bool):
        out.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, int):
        # Always a signed 64-bit 'l', as pika does and as RabbitMQ writes the integers it adds
        # (x-death count, x-stream-offset): Java clients read those as Long.
        if -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
            out.append(b"l" + _i64.pack(value))
        else:
            _encode_value(str(value), out)  # no AMQP integer type holds it
    elif isinstance(value, dict):
        out.append(b"F")
        out.append(encode_table(value))
    elif isinstance(value, (list, tuple)):
        parts: list = []
        for item in value:
            _encode_value(item, parts)
        body = b"".join(parts)
        out.append(b"A" + _u32.pack(len(body)))
        out.append(body)
    elif isinstance(value, float):
        out.append(b"d" + _f64.pack(value))
    elif isinstance(value, bytearray):
        out.append(b"x" + _u32.pack(len(value)))
        out.append(bytes(value))
    elif isinstance(value, (bytes, memoryview)):
        # A long string is binary in AMQP: non-UTF-8 bytes travel as 'S' unchanged.
        out.append(b"S" + _u32.pack(len(value)))
        out.append(bytes(value))
    elif isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        out.append(b"T" + _u64.pack(int(value.timestamp())))
    elif isinstance(value, decimal.Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):
            raise ValueError(f"decimal {value} cannot be encoded")
        mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        scale = -exponent
        if scale < 0:
            mantissa *= 10 ** (-scale)
            scale = 0
        if scale > 255 or not -0x80000000 <= mantissa <= 0x7FFFFFFF:
            raise ValueError(f"decimal {value} does not fit AMQP's decimal")
        out.append(b"D" + _dec.pack(scale, mantissa))
    elif value is None:
        out.append(b"V")
    else:
        # A value from another protocol's adapter that AMQP has no type for: send its text
        # rather than fail the delivery.
        _encode_value(str(value), out)


def encode_table(table: dict | None) -> bytes:
    parts: list = []
    if table:
        for key, value in table.items():
            parts.append(shortstr_lossy(key))
            _encode_value(value, parts)
    body = b"".join(parts)
    return _u32.pack(len(body)) + body


# ---------------------------------------------------------------------- basic properties
# Property flag bits, most significant first [AMQP 0-9-1 4.2.6.1, class basic].
_F_CONTENT_TYPE, _F_CONTENT_ENCODING, _F_HEADERS, _F_DELIVERY_MODE = 0x8000, 0x4000, 0x2000, 0x1000
_F_PRIORITY, _F_CORRELATION_ID, _F_REPLY_TO, _F_EXPIRATION = 0x0800, 0x0400, 0x0200, 0x0100
_F_MESSAGE_ID, _F_TIMESTAMP, _F_TYPE, _F_USER_ID = 0x0080, 0x0040, 0x0020, 0x0010
_F_APP_ID, _F_CLUSTER_ID = 0x0008, 0x0004


def decode_shortstr(buf: Any, pos: int) -> tuple[str, int]:
    n = buf[pos]
    pos += 1
    end = pos + n
    if end > len(buf):
        raise ValueError("short string past the end of the frame")
    return bytes(buf[pos:end]).decode("utf-8"), end


def decode_properties(buf: Any, pos: int, end: int) -> Properties:
    """Decode the property flags and list at ``buf[pos:end]``."""
    flags = _u16.unpack_from(buf, pos)[0]
    pos += 2
    if flags == 0:
        return EMPTY_PROPERTIES
    if flags & 1:
        raise ValueError("continued property flags are not used by class basic")
    view = buf[:end] if end != len(buf) else buf
    p = Properties()
    if flags & _F_CONTENT_TYPE:
        p.content_type, pos = decode_shortstr(view, pos)
    if flags & _F_CONTENT_ENCODING:
        p.content_encoding, pos = decode_shortstr(view, pos)
    if flags & _F_HEADERS:
        p.headers, pos = decode_table(view, pos)
    if flags & _F_DELIVERY_MODE:
        p.delivery_mode = view[pos]
        pos += 1
    if flags & _F_PRIORITY:
        p.priority = view[pos]
        pos += 1
    if flags & _F_CORRELATION_ID:
        p.correlation_id, pos = decode_shortstr(view, pos)
    if flags & _F_REPLY_TO:
        p.reply_to, pos = decode_shortstr(view, pos)
    if flags & _F_EXPIRATION:
        p.expiration, pos = decode_shortstr(view, pos)
    if flags & _F_MESSAGE_ID:
        p.message_id, pos = decode_shortstr(view, pos)
    if flags & _F_TIMESTAMP:
        p.timestamp = _u64.unpack_from(view, pos)[0]
        pos += 8
    if flags & _F_TYPE:
        p.type, pos = decode_shortstr(view, pos)
    if flags & _F_USER_ID:
        p.user_id, pos = decode_shortstr(view, pos)
    if flags & _F_APP_ID:
        p.app_id, pos = decode_shortstr(view, pos)
    if flags & _F_CLUSTER_ID:
        _, pos = decode_shortstr(view, pos)  # deprecated; read and dropped
    if pos != end:
        raise ValueError("content header longer than its properties")
    return p


def shortstr(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"short string longer than 255 bytes: {value[:32]!r}...")
    return bytes((len(raw),)) + raw


def shortstr_lossy(value: Any) -> bytes:
    """A short string for values that may come from other protocols (an MQTT topic or content
    type can exceed AMQP's 255 bytes): cut at 255 bytes on a UTF-8 character boundary."""
    raw = value if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8")
    if len(raw) > 255:
        raw = raw[:255].decode("utf-8", "ignore").encode("utf-8")
    return bytes((len(raw),)) + bytes(raw)


def encode_properties(p: Properties) -> bytes:
    """Property flags and list for a content header."""
    if p is EMPTY_PROPERTIES:
        return b"\x00\x00"
    flags = 0
    parts = [b""]
    if p.content_type is not None:
        flags |= _F_CONTENT_TYPE
        parts.append(shortstr_lossy(p.content_type))
    if p.content_encoding is not None:
        flags |= _F_CONTENT_ENCODING
        parts.append(shortstr_lossy(p.content_encoding))
    if p.headers is not None:
        flags |= _F_HEADERS
        parts.append(encode_table(p.headers))
    if p.delivery_mode is not None:
        flags |= _F_DELIVERY_MODE
        parts.append(bytes((_octet(p.delivery_mode),)))
    if p.priority is not None:
        flags |= _F_PRIORITY
        parts.append(bytes((_octet(p.priority),)))
    if p.correlation_id is not None:
        flags |= _F_CORRELATION_ID
        parts.append(shortstr_lossy(p.correlation_id))
    if p.reply_to is not None:
        flags |= _F_REPLY_TO
        parts.append(shortstr_lossy(p.reply_to))
    if p.expiration is not None:
        flags |= _F_EXPIRATION
        parts.append(shortstr_lossy(str(p.expiration)))
    if p.message_id is not None:
        flags |= _F_MESSAGE_ID
        parts.append(shortstr_lossy(p.message_id))
    if p.timestamp is not None:
        flags |= _F_TIMESTAMP
        ts = p.timestamp
        if isinstance(ts, datetime.datetime):
            ts = int(ts.timestamp())
        try:
            parts.append(_u64.pack(min(max(int(ts), 0), 2 ** 64 - 1)))
        except (TypeError, ValueError):
            parts.append(_u64.pack(0))
    if p.type is not None:
        flags |= _F_TYPE
        parts.append(shortstr_lossy(p.type))
    if p.user_id is not None:
        flags |= _F_USER_ID
        parts.append(shortstr_lossy(p.user_id))
    if p.app_id is not None:
        flags |= _F_APP_ID
        parts.append(shortstr_lossy(p.app_id))
    parts[0] = _u16.pack(flags)
    return b"".join(parts)


def _octet(value: Any) -> int:
    try:
        return min(255, max(0, int(value)))
    except (TypeError, ValueError):
        return 0


def content_header_payload(properties: Properties, body_size: int) -> bytes:
    """The payload of a content header frame (what ``Message.encoded`` caches)."""
    return _content_header_head.pack(BASIC_CLASS, 0, body_size, 0)[:-2] + \
        encode_properties(properties)


def with_header_entry(header: bytes, entry: bytes) -> bytes:
    """A content header payload ``header`` with one more field-table entry ``entry`` (name and
    value, encoded) in its headers property: spliced into the bytes, not re-encoded (stream
    deliveries add their x-stream-offset to a message's cached header this way). The caller
    makes sure the name is not in the table already."""
    flags = _u16.unpack_from(header, 12)[0]
    pos = 14  # after class, weight, body size and the flags [AMQP 0-9-1 4.2.6.1]
    if flags & _F_CONTENT_TYPE:
        pos += 1 + header[pos]
    if flags & _F_CONTENT_ENCODING:
        pos += 1 + header[pos]
    if flags & _F_HEADERS:
        length = _u32.unpack_from(header, pos)[0]
        end = pos + 4 + length
        return b"".join((header[:pos], _u32.pack(length + len(entry)), header[pos + 4:end],
                         entry, header[end:]))
    return b"".join((header[:12], _u16.pack(flags | _F_HEADERS), header[14:pos],
                     _u32.pack(len(entry)), entry, header[pos:]))
