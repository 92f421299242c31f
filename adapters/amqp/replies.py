"""The frames the server sends, one named function per AMQP 0-9-1 method.

Each returns one complete method frame. Class and method ids are the ones of the AMQP 0-9-1
specification (amqp0-9-1.xml); RabbitMQ extensions (Basic.Nack, Connection.Blocked /
Unblocked, Connection.UpdateSecretOk, Exchange.Bind / Unbind) use RabbitMQ's ids.
Content frames (headers and bodies) come from ``codec``.
"""
from __future__ import annotations

from .codec import method_frame, u16, u32, u64
from .fields import shortstr

CONNECTION, CHANNEL, EXCHANGE, QUEUE, BASIC, CONFIRM, TX = 10, 20, 40, 50, 60, 85, 90

_FALSE, _TRUE = b"\x00", b"\x01"


def close_payload(code: int, text: str, class_id: int, method_id: int) -> bytes:
    """reply-code, reply-text (cut to a short string's 255 bytes), failing class and method."""
    raw = text.encode("utf-8")[:255]
    return u16(code) + bytes((len(raw),)) + raw + u16(class_id) + u16(method_id)


# ---------------------------------------------------------------- connection (channel 0)
def connection_start(payload: bytes) -> bytes:
    return method_frame(0, CONNECTION, 10, payload)


def connection_tune(channel_max: int, frame_max: int, heartbeat: int) -> bytes:
    return method_frame(0, CONNECTION, 30, u16(channel_max) + u32(frame_max) + u16(heartbeat))


def connection_open_ok() -> bytes:
    return method_frame(0, CONNECTION, 41, b"\x00")  # known-hosts: empty short string


def connection_close(code: int, text: str, class_id: int = 0, method_id: int = 0) -> bytes:
    return method_frame(0, CONNECTION, 50, close_payload(code, text, class_id, method_id))


def connection_close_ok() -> bytes:
    return method_frame(0, CONNECTION, 51)


def connection_blocked(reason: str) -> bytes:
    return method_frame(0, CONNECTION, 60, shortstr(reason))


def connection_unblocked() -> bytes:
    return method_frame(0, CONNECTION, 61)


def connection_update_secret_ok() -> bytes:
    return method_frame(0, CONNECTION, 71)


# ---------------------------------------------------------------- channel
def channel_open_ok(channel: int) -> bytes:
    return method_frame(channel, CHANNEL, 11, b"\x00\x00\x00\x00")  # reserved long string


def channel_flow_ok(channel: int, active: bool) -> bytes:
    return method_frame(channel, CHANNEL, 21, _TRUE if active else _FALSE)


def channel_close(channel: int, code: int, text: str, class_id: int, method_id: int) -> bytes:
    return method_frame(channel, CHANNEL, 40, close_payload(code, text, class_id, method_id))


def channel_close_ok(channel: int) -> bytes:
    return method_frame(channel, CHANNEL, 41)


# ---------------------------------------------------------------- exchange
def exchange_declare_ok(channel: int) -> bytes:
    return method_frame(channel, EXCHANGE, 11)


def exchange_delete_ok(channel: int) -> bytes:
    return method_frame(channel, EXCHANGE, 21)


def exchange_bind_ok(channel: int) -> bytes:
    return method_frame(channel, EXCHANGE, 31)


def exchange_unbind_ok(channel: int) -> bytes:
    return method_frame(channel, EXCHANGE, 51)


# ---------------------------------------------------------------- queue
def queue_declare_ok(channel: int, name: str, message_count: int, consumer_count: int) -> bytes:
    return method_frame(channel, QUEUE, 11,
                        shortstr(name) + u32(message_count) + u32(consumer_count))


def queue_bind_ok(channel: int) -> bytes:
    return method_frame(channel, QUEUE, 21)


def queue_purge_ok(channel: int, message_count: int) -> bytes:
    return method_frame(channel, QUEUE, 31, u32(message_count))


def queue_delete_ok(channel: int, message_count: int) -> bytes:
    return method_frame(channel, QUEUE, 41, u32(message_count))


def queue_unbind_ok(channel: int) -> bytes:
    return method_frame(channel, QUEUE, 51)


# ---------------------------------------------------------------- basic
def basic_qos_ok(channel: int) -> bytes:
    return method_frame(channel, BASIC, 11)


def basic_consume_ok(channel: int, consumer_tag: str) -> bytes:
    return method_frame(channel, BASIC, 21, shortstr(consumer_tag))


def basic_cancel(channel: int, consumer_tag: bytes) -> bytes:
    """Server-sent cancel (RabbitMQ consumer_cancel_notify); the tag is already a short
    string, and no-wait is set: the server does not wait for the client's CancelOk."""
    return method_frame(channel, BASIC, 30, consumer_tag + _TRUE)


def basic_cancel_ok(channel: int, consumer_tag: str) -> bytes:
    return method_frame(channel, BASIC, 31, shortstr(consumer_tag))


def basic_return(channel: int, code: int, text: str, exchange_and_key: bytes) -> bytes:
    return method_frame(channel, BASIC, 50, u16(code) + shortstr(text) + exchange_and_key)


def basic_get_ok(channel: int, delivery_tag: int, redelivered: bool, exchange_and_key: bytes,
                 message_count: int) -> bytes:
    return method_frame(channel, BASIC, 71, u64(delivery_tag) +
                        (_TRUE if redelivered else _FALSE) + exchange_and_key +
                        u32(message_count))


def basic_get_empty(channel: int) -> bytes:
    return method_frame(channel, BASIC, 72, b"\x00")  # reserved short string


def basic_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """A publisher confirm [RabbitMQ confirms]."""
    return method_frame(channel, BASIC, 80, u64(delivery_tag) + (_TRUE if multiple else _FALSE))


def basic_recover_ok(channel: int) -> bytes:
    return method_frame(channel, BASIC, 111)


def basic_nack(channel: int, delivery_tag: int) -> bytes:
    """A negative publisher confirm for one publish (multiple=false, requeue=false)."""
    return method_frame(channel, BASIC, 120, u64(delivery_tag) + b"\x00")


# ---------------------------------------------------------------- confirm / tx
def confirm_select_ok(channel: int) -> bytes:
    return method_frame(channel, CONFIRM, 11)


def tx_select_ok(channel: int) -> bytes:
    return method_frame(channel, TX, 11)


def tx_commit_ok(channel: int) -> bytes:
    return method_frame(channel, TX, 21)


def tx_rollback_ok(channel: int) -> bytes:
    return method_frame(channel, TX, 31)
