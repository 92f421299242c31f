"""Messages from the client: PUBLISH (topic aliases, QoS 1/2, retained copies), and the
PUBACK / PUBREC / PUBCOMP that answer it, released in order once what they promise is stored
[MQTT-4.6.0-2] (``broker.engine.in_order.InOrderReplies``).

``InboundMethods`` is one part of ``MqttSession`` (session.py).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from manifold.broker.errors import AccessRefused, BrokerError

from . import codec as c
from . import topics
from .properties import properties_from_mqtt
from .server import TOPIC_EXCHANGE, MqttMessage

log = logging.getLogger("manifold.mqtt")


class InboundMethods:
    """PUBLISH from the client and its acknowledgements; PUBREL."""

    # ================================================================ inbound PUBLISH
    def _route(self, vhost: Any, topic: str, payload: bytes, qos: int, retain: bool,
               props: dict, origin: Any) -> Any:
        if props:
            props = {k: v for k, v in props.items()
                     if k not in ("topic_alias", "subscription_identifier", "will_delay_interval")}
        key = self._keys.get(topic)
        if key is None:
            key = topics.topic_to_key(topic)
            if len(self._keys) >= 256:
                self._keys.clear()
            self._keys[topic] = key
        # Publishing needs write on amq.topic and topic write on the routing key (RabbitMQ).
        self.grant.check_publish(TOPIC_EXCHANGE, key)
        message = MqttMessage(TOPIC_EXCHANGE, key, payload,
                              properties_from_mqtt(props, qos), origin=origin, retain=retain,
                              qos=qos, mqtt_properties=props or None,
                              timestamp_ms=self.server.now_ms(), topic=topic)
        stored = None
        if retain:
            stored = self.server.retain(topic, message, props.get("message_expiry_interval")
                                        if props else None)
        if self.conn is not None:
            self.conn.mark_publishing()
        result = vhost.publish(TOPIC_EXCHANGE, message.routing_key, message)
        if stored is not None:
            # A PUBACK for a retained message means the retained copy is durable too.
            result.wait = stored if result.wait is None else asyncio.gather(result.wait, stored)
        return result

    def on_publish(self, p: c.Publish) -> None:
        topic = p.topic
        props = p.properties
        qos = p.qos
        if props:
            alias = props.get("topic_alias")
            if alias is not None:
                # [MQTT-3.3.2-8/9] alias within 1..our Topic Alias Maximum
                if alias == 0 or alias > self.settings.topic_alias_maximum:
                    self._disconnect(c.TOPIC_ALIAS_INVALID, f"topic alias {alias} out of range",
                                     "topic alias out of range")
                    return
                if topic:
                    self.in_aliases[alias] = topic
                else:
                    known = self.in_aliases.get(alias)
                    if known is None:
                        raise c.ProtocolError(f"unknown topic alias {alias}")
                    topic = known
            if props.get("payload_format_indicator") == 1:
                try:
                    p.payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._ack_publish_error(p, c.PAYLOAD_FORMAT_INVALID,
                                            "payload is not valid UTF-8")
                    return
            if "subscription_identifier" in props:
                raise c.ProtocolError("subscription identifier in a PUBLISH from a client")
        if not topic or "+" in topic or "#" in topic:
            # [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-1] not empty
            if self.v5:
                self._disconnect(c.TOPIC_NAME_INVALID, "invalid topic name", "invalid topic name")
            else:
                self._close(f"invalid topic name {topic!r}")
            return
        if qos == 2:
            state = self.state
            pid = p.packet_id
            if pid in state.inbound_qos2:  # type: ignore[union-attr]
                # MQTT §4.3.3: a resend before PUBREL is acknowledged, not delivered twice.
                self._send(c.serialize(c.Pubrec(pid), self.version))  # type: ignore[arg-type]
                return
            if len(state.inbound_qos2) >= self.settings.receive_maximum:  # type: ignore[union-attr]
                self._disconnect(c.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded",
                                 "receive maximum exceeded")
                return
        try:
            result = self._route(self.vhost, topic, p.payload, qos, p.retain, props, self.state)
        except AccessRefused as exc:
            self._publish_denied(p, exc.text)
            return
        except BrokerError as exc:
            self._ack_publish_error(p, c.IMPLEMENTATION_SPECIFIC_ERROR, exc.text)
            return
        if qos == 0:
            return
        code = 0
        if result.rejected:
            code = c.QUOTA_EXCEEDED
        elif result.routed == 0 and self.v5:
            code = c.NO_MATCHING_SUBSCRIBERS
        wait = result.wait
        if qos == 1:
            if code:
                packet = c.serialize(c.Puback(p.packet_id, code), self.version)  # type: ignore[arg-type]
            else:
                packet = b"\x40\x02" + p.packet_id.to_bytes(2, "big")  # type: ignore[union-attr]
        else:
            if code < 0x80:
                stored = self.server.qos2_received(self.state, p.packet_id)  # type: ignore[arg-type]
                if stored is not None:
                    wait = stored if wait is None else asyncio.gather(wait, stored)
            packet = c.serialize(c.Pubrec(p.packet_id, code), self.version)  # type: ignore[arg-type]
        if wait is None:
            self._acks.add((packet, None, None))  # _ack_after without the call: hot path
            return
        # A write that failed is never acknowledged: MQTT 5 gets reason 0x80 (the client may
        # resend), MQTT 3.1.1 cannot refuse a PUBLISH, so the connection is closed and the
        # client resends on reconnect [MQTT-4.4.0-1].
        pid = p.packet_id
        cls = c.Puback if qos == 1 else c.Pubrec

        def refused() -> bytes | None:
            if qos == 2:
                self.server.qos2_released(self.state, pid)  # not stored: a resend is new
            if not self.v5:
                return None
            return c.serialize(cls(pid, c.UNSPECIFIED_ERROR), c.MQTT_5)  # type: ignore[arg-type]

        self._ack_after(wait, packet, refused)

    def _publish_denied(self, p: c.Publish, text: str) -> None:
        """MQTT 5: PUBACK/PUBREC 0x87 (not authorized). 3.1.1 has no negative ack: the message
        is dropped and logged, and acknowledged so the client does not resend it; the connection
        stays (as in Mosquitto)."""
        log.warning("MQTT %s: PUBLISH to %r dropped: %s", self.client_id, p.topic, text)
        if p.qos == 0:
            return
        pid = p.packet_id
        if self.v5:
            props = {"reason_string": text} if self.request_problem_info else None
            cls = c.Puback if p.qos == 1 else c.Pubrec
            packet = c.serialize(cls(pid, c.NOT_AUTHORIZED, props), c.MQTT_5)  # type: ignore
        elif p.qos == 1:
            packet = c.serialize(c.Puback(pid), self.version)  # type: ignore[arg-type]
        else:
            self.state.inbound_qos2.add(pid)  # type: ignore[union-attr,arg-type]
            packet = c.serialize(c.Pubrec(pid), self.version)  # type: ignore[arg-type]
        self._ack_after(None, packet)  # in order behind acks still waiting for an fsync

    def _ack_publish_error(self, p: c.Publish, code: int, text: str) -> None:
        if p.qos == 0:
            if self.v5 and code == c.PAYLOAD_FORMAT_INVALID:
                self._disconnect(code, text, text)
            return
        if not self.v5:
            self._close(text)  # 3.1.1 has no way to refuse a PUBLISH
            return
        props = {"reason_string": text} if self.request_problem_info else None
        cls = c.Puback if p.qos == 1 else c.Pubrec
        self._send(c.serialize(cls(p.packet_id, code, props), c.MQTT_5))  # type: ignore[arg-type]

    def _ack_after(self, wait: Any, packet: bytes, refused: Any = None, then: Any = None) -> None:
        """PUBACK/PUBREC/PUBCOMP/SUBACK once what it acknowledges is safe; acknowledgements
        stay in order [MQTT-4.6.0-2]. If the write fails, ``refused()`` gives the packet to send
        instead, or None: then the connection is closed. ``then()`` runs after the packet went."""
        self._acks.add((packet, refused, then), wait)

    def _release_ack(self, ack: tuple, error: Any) -> bool:
        packet, refused, then = ack
        if error is not None:
            packet = refused() if refused is not None else None
            if packet is None:
                self._close(f"could not store a message: {error}")
                return False
            self._send(packet)
            return True
        self._send(packet)
        if then is not None:
            then()
        return True

    def on_pubrel(self, p: c.Pubrel) -> None:
        # MQTT §4.3.3: discard the packet id state, then PUBCOMP; an unknown id gets 0x92 (5.0).
        state = self.state
        wait = None
        if p.packet_id in state.inbound_qos2:  # type: ignore[union-attr]
            # PUBCOMP waits until the packet id is gone from the store too: a new PUBLISH that
            # reuses it after a restart must not be taken for a resend.
            wait = self.server.qos2_released(state, p.packet_id)  # type: ignore[arg-type]
            code = 0
        else:
            code = c.PACKET_IDENTIFIER_NOT_FOUND
        self._ack_after(wait, c.serialize(c.Pubcomp(p.packet_id, code), self.version))
