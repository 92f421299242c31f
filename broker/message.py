"""The one message model every protocol translates into and out of.

Field names follow AMQP 0-9-1 basic properties, the richest of the three protocols' property sets;
adapters/INTEROP.md says how MQTT 5 properties and STOMP headers map onto them.
"""
from __future__ import annotations

from typing import Any

PROPERTY_NAMES = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
    "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id",
)


class Properties:
    """AMQP basic properties; ``None`` means absent. ``headers`` is a dict of field-table values."""

    __slots__ = PROPERTY_NAMES

    def __init__(self, content_type: str | None = None, content_encoding: str | None = None,
                 headers: dict[str, Any] | None = None, delivery_mode: int | None = None,
                 priority: int | None = None, correlation_id: str | None = None,
                 reply_to: str | None = None, expiration: str | None = None,
                 message_id: str | None = None, timestamp: int | None = None,
                 type: str | None = None, user_id: str | None = None,
                 app_id: str | None = None):
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.headers = headers
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.type = type
        self.user_id = user_id
        self.app_id = app_id

    def copy(self) -> "Properties":
        clone = Properties.__new__(Properties)
        for name in PROPERTY_NAMES:
            setattr(clone, name, getattr(self, name))
        if clone.headers is not None:
            clone.headers = dict(clone.headers)
        return clone

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in PROPERTY_NAMES if getattr(self, n) is not None}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Properties) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"Properties({self.as_dict()!r})"


EMPTY_PROPERTIES = Properties()


class Message:
    """A published message. Immutable by convention once published: the core shares one object
    between every queue it was routed to, and copies it only to change it (dead-lettering).

    ``encoded`` is a cache an adapter may fill with its own wire form of the properties (the AMQP
    content header payload) so that fan-out does not re-encode them per delivery; any change of
    properties must produce a new Message.
    """

    __slots__ = ("exchange", "routing_key", "body", "properties", "encoded", "timestamp_ms")

    def __init__(self, exchange: str, routing_key: str, body: bytes,
                 properties: Properties = EMPTY_PROPERTIES, encoded: Any = None,
                 timestamp_ms: int = 0):
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.encoded = encoded
        # Arrival time in the broker (ms since the epoch), 0 if unknown: set by
        # VirtualHost.publish for messages with an ``expiration``, by the MQTT adapter for all
        # its messages, and by streams.
        self.timestamp_ms = timestamp_ms

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}

    def __repr__(self) -> str:
        return (f"Message({self.exchange!r}, {self.routing_key!r}, {self.body[:32]!r}, "
                f"{self.properties!r})")
