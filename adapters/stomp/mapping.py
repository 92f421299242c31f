"""STOMP destinations and headers <-> core exchanges, queues and message properties.

Pure functions (no I/O, no core state), shared by the session and the tests. The conventions are
RabbitMQ's STOMP plugin's (see MAPPING.md), so that clients moving over keep working.
"""
from __future__ import annotations

import datetime
from typing import Any

from manifold.broker.message import EMPTY_PROPERTIES, Properties

# ---------------------------------------------------------------------------- destinations
QUEUE, TOPIC, EXCHANGE, AMQ_QUEUE, TEMP_QUEUE, REPLY_QUEUE = (
    "queue", "topic", "exchange", "amq-queue", "temp-queue", "reply-queue")

_PREFIXES = (("/queue/", QUEUE), ("/topic/", TOPIC), ("/exchange/", EXCHANGE),
             ("/amq/queue/", AMQ_QUEUE), ("/temp-queue/", TEMP_QUEUE),
             ("/reply-queue/", REPLY_QUEUE))

VALID_DESTINATIONS = ("'{}' is not a valid destination.\nValid destination types are: "
                      "/exchange/, /topic/, /queue/, /amq/queue/, /temp-queue/, /reply-queue/.")


class DestinationError(ValueError):
    """Not one of the destination forms; the session answers with an ERROR frame."""


def parse_destination(destination: str) -> tuple[str, str, str]:
    """``(kind, name, key)``: for /exchange/<name>/<key> both parts; for the others ``name`` is
    the queue name, topic routing key or temp-queue label and ``key`` is ``""``."""
    for prefix, kind in _PREFIXES:
        if destination.startswith(prefix):
            rest = destination[len(prefix):]
            if kind == EXCHANGE:
                name, _, key = rest.partition("/")
                if not name:
                    break
                return kind, name, key
            if not rest:
                break
            return kind, rest, ""
    raise DestinationError(VALID_DESTINATIONS.format(destination))


def destination_of(exchange: str, routing_key: str) -> str:
    """The ``destination`` header of a MESSAGE, from where the message was published (RabbitMQ
    derives it the same way, so /topic/a.* subscribers see the concrete /topic/a.b)."""
    if exchange == "":
        return "/queue/" + routing_key
    if exchange == "amq.topic":
        return "/topic/" + routing_key
    if routing_key:
        return "/exchange/" + exchange + "/" + routing_key
    return "/exchange/" + exchange


# ---------------------------------------------------------------------------- queue arguments
#: ``x-`` headers of SEND / SUBSCRIBE that are queue arguments (RabbitMQ's list, plus the core's)
INT_QUEUE_ARGS = frozenset(("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                            "x-max-priority", "x-delivery-limit", "x-consumer-timeout", "x-delay"))
STR_QUEUE_ARGS = frozenset(("x-overflow", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                            "x-queue-type", "x-queue-mode", "x-max-age",
                            "x-single-active-consumer", "x-stream-max-segment-size-bytes",
                            "x-queue-master-locator", "x-queue-leader-locator"))


def queue_arguments(headers: dict[str, str], on_send: bool = False) -> dict[str, Any]:
    """Queue arguments named by ``x-`` headers; integer arguments become ints (a bad number is
    kept as text so that the core reports it with RabbitMQ's PRECONDITION_FAILED wording).
    On SEND, ``x-delay`` is the message's own delay, never a queue argument."""
    args: dict[str, Any] = {}
    for key, value in headers.items():
        if key in INT_QUEUE_ARGS:
            if on_send and key == "x-delay":
                continue
            try:
                args[key] = int(value)
            except ValueError:
                args[key] = value
        elif key in STR_QUEUE_ARGS:
            if key == "x-single-active-consumer":
                args[key] = value.lower() == "true"
            elif key == "x-stream-max-segment-size-bytes":
                try:
                    args[key] = int(value)
                except ValueError:
                    args[key] = value
            else:
                args[key] = value
    return args


def stream_offset(value: str) -> Any:
    """``x-stream-offset`` header -> core offset spec: first | last | next | offset=<n> | <n> |
    timestamp=<unix seconds> | an interval such as 1h (RabbitMQ's STOMP forms)."""
    if value.startswith("offset="):
        value = value[7:]
    elif value.startswith("timestamp="):
        try:
            return datetime.datetime.fromtimestamp(int(value[10:]), datetime.timezone.utc)
        except (ValueError, OverflowError, OSError):
            return value
    if value.isdigit():
        return int(value)
    return value


# ---------------------------------------------------------------------------- properties
#: headers that steer the frame itself and never become message headers
FRAME_HEADERS = frozenset(("destination", "receipt", "transaction", "content-length"))

#: STOMP header -> AMQP basic property (adapters/INTEROP.md, the interop table)
PROPERTY_HEADERS = {
    "content-type": "content_type",
    "content-encoding": "content_encoding",
    "correlation-id": "correlation_id",
    "reply-to": "reply_to",
    "expiration": "expiration",
    "priority": "priority",
    "persistent": "delivery_mode",
    "amqp-message-id": "message_id",
    "timestamp": "timestamp",
    "type": "type",
    "user-id": "user_id",
    "app-id": "app_id",
}

#: headers a MESSAGE frame sets itself: message headers of these names are not copied out
MESSAGE_RESERVED = frozenset(("subscription", "destination", "message-id", "ack", "redelivered",
                              "content-length", "receipt", "transaction", "x-stream-offset")
                             ) | frozenset(PROPERTY_HEADERS)


def headers_to_properties(headers: dict[str, str]) -> Properties:
    """SEND headers -> message properties. Bodies are never touched; headers without a property
    of their own go to ``properties.headers`` unchanged (string values)."""
    props: Properties | None = None
    extra: dict[str, Any] | None = None
    for key, value in headers.items():
        if key in FRAME_HEADERS:
            continue
        name = PROPERTY_HEADERS.get(key)
        if name is None:
            if extra is None:
                extra = {}
            extra[key] = value
            continue
        if props is None:
            props = Properties()
        if name == "delivery_mode":
            # STOMP "persistent:true" <-> AMQP delivery mode 2; anything else is transient.
            props.delivery_mode = 2 if value.lower() == "true" else 1
        elif name in ("priority", "timestamp"):
            try:
                setattr(props, name, int(value))
            except ValueError:
                if extra is None:
                    extra = {}
                extra[key] = value  # not a number: keep it readable rather than lose it
        else:
            setattr(props, name, value)
    if extra is not None:
        if props is None:
            props = Properties()
        props.headers = extra
    return props if props is not None else EMPTY_PROPERTIES


def _header_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, datetime.datetime):
        return str(int(value.timestamp()))
    if value is None or isinstance(value, (list, tuple, dict)):
        return None  # field tables and arrays (x-death) have no STOMP form
    return str(value)


def properties_to_headers(props: Properties) -> list[tuple[str, str]]:
    """Message properties -> MESSAGE headers (unescaped), in a stable order."""
    out: list[tuple[str, str]] = []
    if props is EMPTY_PROPERTIES:
        return out
    if props.content_type is not None:
        out.append(("content-type", props.content_type))
    if props.content_encoding is not None:
        out.append(("content-encoding", props.content_encoding))
    if props.correlation_id is not None:
        out.append(("correlation-id", _header_text(props.correlation_id) or ""))
    if props.reply_to is not None:
        out.append(("reply-to", props.reply_to))
    if props.expiration is not None:
        out.append(("expiration", str(props.expiration)))
    if props.priority is not None:
        out.append(("priority", str(props.priority)))
    if props.delivery_mode is not None:
        out.append(("persistent", "true" if props.delivery_mode == 2 else "false"))
    if props.message_id is not None:
        out.append(("amqp-message-id", str(props.message_id)))
    if props.timestamp is not None:
        out.append(("timestamp", _header_text(props.timestamp) or ""))
    if props.type is not None:
        out.append(("type", props.type))
    if props.user_id is not None:
        out.append(("user-id", props.user_id))
    if props.app_id is not None:
        out.append(("app-id", props.app_id))
    if props.headers:
        for key, value in props.headers.items():
            if key in MESSAGE_RESERVED:
                continue
            text = _header_text(value)
            if text is not None:
                out.append((key, text))
    return out
