"""MQTT 5 PUBLISH properties <-> the core's message properties (adapters/INTEROP.md)."""
from __future__ import annotations

from typing import Any

from manifold.broker.message import Message, Properties

from . import topics
from .server import MqttMessage

# Shared property objects for the common case (no MQTT 5 properties): messages are immutable.
_PLAIN_PROPERTIES = {q: Properties(delivery_mode=2 if q else 1, headers={"x-mqtt-publish-qos": q})
                     for q in (0, 1, 2)}


def publish_qos(message: Message) -> int:
    """The QoS a message was published with (adapters/INTEROP.md: other protocols: 1 if persistent)."""
    if type(message) is MqttMessage:
        return message.qos
    headers = message.properties.headers
    if headers:
        q = headers.get("x-mqtt-publish-qos")
        if isinstance(q, int) and 0 <= q <= 2:
            return q
    return 1 if message.properties.delivery_mode == 2 else 0


def properties_from_mqtt(props: dict, qos: int) -> Properties:
    """MQTT 5 PUBLISH properties -> core properties (adapters/INTEROP.md mapping)."""
    if not props:
        return _PLAIN_PROPERTIES[qos]
    headers: dict[str, Any] = {"x-mqtt-publish-qos": qos}
    for name, value in props.get("user_property", ()):
        headers[name] = value
    correlation_id = None
    data = props.get("correlation_data")
    if data is not None:
        try:
            correlation_id = data.decode("utf-8")
        except UnicodeDecodeError:
            headers["x-correlation-data"] = bytes(data)
    reply_to = props.get("response_topic")
    expiry = props.get("message_expiry_interval")
    return Properties(content_type=props.get("content_type"), headers=headers,
                      delivery_mode=2 if qos else 1, correlation_id=correlation_id,
                      reply_to=topics.topic_to_key(reply_to) if reply_to is not None else None,
                      expiration=str(expiry * 1000) if expiry is not None else None)


def mqtt_from_properties(p: Properties) -> dict:
    """Core properties of a message from another protocol -> MQTT 5 PUBLISH properties."""
    out: dict = {}
    if p.content_type is not None:
        out["content_type"] = p.content_type
    if p.reply_to is not None:
        out["response_topic"] = topics.key_to_topic(p.reply_to)
    if p.correlation_id is not None:
        out["correlation_data"] = str(p.correlation_id).encode("utf-8")
    headers = p.headers
    if headers:
        pairs = []
        for k, v in headers.items():
            if k == "x-mqtt-publish-qos":
                continue
            if k == "x-correlation-data" and isinstance(v, (bytes, bytearray)):
                out.setdefault("correlation_data", bytes(v))
                continue
            if isinstance(v, (bytes, bytearray)):
                try:
                    v = bytes(v).decode("utf-8")
                except UnicodeDecodeError:
                    continue
            elif not isinstance(v, str):
                if isinstance(v, (list, dict)):
                    continue  # x-death and other tables have no MQTT form
                v = str(v)
            pairs.append((str(k), v))
        if pairs:
            out["user_property"] = pairs
    return out


def topic_of(message: Message) -> str:
    if type(message) is MqttMessage:
        return message.topic  # type: ignore[attr-defined]
    return topics.key_to_topic(message.routing_key)
