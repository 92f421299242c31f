"""Message <-> bytes for storage: msgpack of [exchange, routing_key, properties, body].

Header values may hold what AMQP field tables carry: datetimes (``x-death`` times), Decimals,
nested tables and arrays, bytes; msgpack extension types keep them exact.
"""
from __future__ import annotations

import datetime
import decimal
import operator
import threading
from typing import Any

import msgpack

from .message import PROPERTY_NAMES, Message, Properties

_EXT_DATETIME = 1
_EXT_DECIMAL = 2
FORMAT_VERSION = 1


def _default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return msgpack.ExtType(_EXT_DATETIME, str(value.timestamp()).encode())
    if isinstance(value, decimal.Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(value).encode())
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"cannot store a header value of type {type(value).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_DATETIME:
        return datetime.datetime.fromtimestamp(float(data.decode()), datetime.timezone.utc)
    if code == _EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    return msgpack.ExtType(code, data)


#: the property values in PROPERTY_NAMES order, in one call
_property_values = operator.attrgetter(*PROPERTY_NAMES)
#: one reusable msgpack Packer per thread (``packb`` builds a new one per call; a Packer is
#: not safe to share between threads), and the encoded start of the last message it packed
_packers = threading.local()
#: msgpack's header of the six-element array every stored message is
_ARRAY_OF_SIX = b"\x96"


def encode_message(message: Message) -> bytes:
    """``[FORMAT_VERSION, exchange, routing_key, [property values], body, timestamp_ms]`` in
    msgpack. Consecutive messages from one publisher usually share their Properties object (the
    AMQP decoder reuses it for a repeated content header: properties are immutable once
    published, see message.py), exchange and routing key: the bytes of everything before the
    body are then reused, and only body and timestamp are packed."""
    local = _packers
    packer = getattr(local, "packer", None)
    if packer is None:
        packer = local.packer = msgpack.Packer(default=_default, use_bin_type=True)
        local.start = (None, None, None, b"")
    properties, exchange, routing_key, start = local.start
    if (properties is not message.properties or exchange != message.exchange or
            routing_key != message.routing_key or properties.headers is not None):
        # (headers are a dict, which could change in place: never reused)
        properties, exchange, routing_key = (message.properties, message.exchange,
                                             message.routing_key)
        start = b"".join((_ARRAY_OF_SIX, packer.pack(FORMAT_VERSION), packer.pack(exchange),
                          packer.pack(routing_key), packer.pack(_property_values(properties))))
        local.start = (properties, exchange, routing_key, start)
    return start + packer.pack(message.body) + packer.pack(message.timestamp_ms)


def decode_message(data: bytes) -> Message:
    version, exchange, routing_key, values, body, timestamp_ms = msgpack.unpackb(
        data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown stored message format {version}")
    props = Properties(*values)  # (PROPERTY_NAMES order is the order __init__ takes)
    return Message(exchange, routing_key, body, props, timestamp_ms=timestamp_ms)


def encode_value(value: Any) -> bytes:
    """Any msgpack-able structure holding field-table values (definitions, arguments)."""
    return msgpack.packb(value, default=_default, use_bin_type=True)


def decode_value(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
