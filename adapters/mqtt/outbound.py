"""Messages to the client: deliveries from the session's queues as PUBLISH packets (QoS,
RETAIN, subscription identifiers, topic aliases, the expiry left), and the client's PUBACK /
PUBREC / PUBCOMP that settle them.

``OutboundMethods`` is one part of ``MqttSession`` (session.py); it uses the session's state,
negotiated limits and output.
"""
from __future__ import annotations

from manifold.broker.consumer import Delivery
from manifold.broker.engine.credit import resume
from manifold.broker.message import Message

from . import codec as c
from . import topics
from .properties import mqtt_from_properties, publish_qos
from .server import MqttMessage, Outbound, Subscription


class OutboundMethods:
    """PUBLISH to the client and its acknowledgements [MQTT 4.3]."""

    # ---------------------------------------------------------------- acknowledgements
    def on_puback(self, p: c.Puback) -> None:
        out = self.state.outbound.get(p.packet_id)  # type: ignore[union-attr]
        if out is None or out.qos != 1:
            return  # MQTT §4.3.2: an unknown packet id is ignored
        del self.state.outbound[p.packet_id]  # type: ignore[union-attr]
        self._settle(out)

    def on_pubrec(self, p: c.Pubrec) -> None:
        state = self.state
        out = state.outbound.get(p.packet_id)  # type: ignore[union-attr]
        if out is None or out.qos != 2:
            if self.v5:
                self._send(c.serialize(c.Pubrel(p.packet_id, c.PACKET_IDENTIFIER_NOT_FOUND),
                                       c.MQTT_5))
            return
        if p.reason_code >= 0x80:
            # 5.0: the client refused it; the exchange ends here.
            del state.outbound[p.packet_id]  # type: ignore[union-attr]
            self._settle(out)
            return
        if out.delivery is not None:
            # The client owns the message now; only the packet id stays until PUBCOMP.
            out.delivery.ack()
            out.delivery = None
        out.released = True
        self._send(c.serialize(c.Pubrel(p.packet_id), self.version))

    def on_pubcomp(self, p: c.Pubcomp) -> None:
        state = self.state
        out = state.outbound.get(p.packet_id)  # type: ignore[union-attr]
        if out is None or not out.released:
            return
        del state.outbound[p.packet_id]  # type: ignore[union-attr]
        self._settle(out)

    def _settle(self, out: Outbound) -> None:
        held = len(self.state.outbound)  # type: ignore[union-attr]
        if out.delivery is not None:
            out.delivery.ack()  # pumps this delivery's queue
            out.delivery = None
        if self.window.freed(held + 1, held):
            # room for consumers of other queues (shared subscriptions) too
            self._resume_consumers()

    def _resume_consumers(self) -> None:
        state = self.state
        if state is None or state.conn is not self:
            return
        if state.consumer is not None:
            state.consumer.resume()
        resume(state.shared.values())

    # ---------------------------------------------------------------- deliveries
    def deliver(self, delivery: Delivery, share: Subscription | None) -> None:
        message = delivery.message
        is_mqtt = type(message) is MqttMessage
        topic = message.topic if is_mqtt else topics.key_to_topic(  # type: ignore[attr-defined]
            message.routing_key)
        state = self.state
        retained_copy = is_mqtt and message.retained_copy  # type: ignore[attr-defined]
        if share is not None:
            subs = (share,)
        else:
            subs = state.matching(topic)  # type: ignore[union-attr]
            if not retained_copy and subs and is_mqtt and \
                    message.origin is state:  # type: ignore[attr-defined]
                # [MQTT-3.8.3-3] No Local: not back to the publishing session
                subs = [s for s in subs if not s.no_local]
        if not subs:
            if not delivery.settled:
                delivery.ack()
            return
        qos = max(s.qos for s in subs) if len(subs) > 1 else subs[0].qos
        pub_qos = message.qos if is_mqtt else publish_qos(message)  # type: ignore[attr-defined]
        if pub_qos < qos:
            qos = pub_qos
        if retained_copy:
            retain = True  # [MQTT-3.3.1-8] sent because of a new subscription: RETAIN=1
        elif is_mqtt and message.retain:  # type: ignore[attr-defined]
            # [MQTT-3.3.1-12/13] Retain As Published keeps it, else 0
            retain = any(s.retain_as_published for s in subs)
        else:
            retain = False
        sub_ids = None
        if self.v5:
            if len(subs) == 1:  # the common case, without building a list
                if subs[0].identifier is not None:
                    sub_ids = [subs[0].identifier]
            else:
                sub_ids = [s.identifier for s in subs if s.identifier is not None] or None
        if qos == 0:
            self._send_publish(message, topic, 0, retain, sub_ids, None, False)
            if not delivery.settled:
                delivery.ack()
            return
        pid = state.alloc_pid()  # type: ignore[union-attr]
        # A message that may have been sent before (requeued, or recovered after a restart)
        # goes out with DUP=1.
        if not self._send_publish(message, topic, qos, retain, sub_ids, pid,
                                  delivery.redelivered):
            # too large for this client, or expired: dropped [MQTT-3.1.2-25]
            if not delivery.settled:
                delivery.ack()
            return
        if delivery.settled:  # a no-ack delivery (QoS 0 subscriptions)
            delivery = None  # type: ignore[assignment]
        state.outbound[pid] = Outbound(delivery, message, qos, retain, sub_ids)  # type: ignore[union-attr]

    def _send_publish(self, message: Message, topic: str, qos: int, retain: bool,
                      sub_ids: list | None, pid: int | None, dup: bool) -> bool:
        if not self.v5:  # 3.1.1 / 3.1: no properties, no client packet size limit
            self._send(c.encode_publish(topic.encode("utf-8"), message.body, qos, retain, dup,
                                        pid, None))
            return True
        is_mqtt = type(message) is MqttMessage
        expiration = message.properties.expiration
        if (is_mqtt and not message.mqtt_properties  # type: ignore[attr-defined]
                and expiration is None and not sub_ids and not self.client_alias_max):
            # the common case: no property to send, nothing to build
            packet = c.encode_publish(topic.encode("utf-8"), message.body, qos, retain, dup, pid,
                                      b"\x00")
            if len(packet) > self.client_max_packet:
                return False  # [MQTT-3.1.2-25]
            self._send(packet)
            return True
        if is_mqtt:
            props = message.mqtt_properties  # type: ignore[attr-defined]
            props = dict(props) if props else {}
        else:
            props = mqtt_from_properties(message.properties)
        # Message expiry: forward what is left of it [MQTT-3.3.2-6]; drop if expired.
        if expiration is not None:
            try:
                ttl_ms = int(expiration)
            except ValueError:
                ttl_ms = None
            if ttl_ms is not None:
                if message.timestamp_ms:
                    left_ms = message.timestamp_ms + ttl_ms - self.server.now_ms()
                    if left_ms <= 0 and not dup:
                        return False
                    props["message_expiry_interval"] = max(1, -(-left_ms // 1000))
                else:
                    props["message_expiry_interval"] = max(1, -(-ttl_ms // 1000))
        if sub_ids:
            props["subscription_identifier"] = sub_ids
        topic_bytes = topic.encode("utf-8")
        new_alias = None
        if self.client_alias_max and not dup:
            # Outbound topic aliases [MQTT 3.3.2.3.4]: the first message on a topic carries
            # topic + alias, later ones only the alias. Resends (DUP) carry the full topic,
            # since aliases do not outlive a connection.
            alias = self.out_aliases.get(topic)
            if alias is not None:
                props["topic_alias"] = alias
                topic_bytes = b""
            elif len(self.out_aliases) < self.client_alias_max:
                new_alias = len(self.out_aliases) + 1
                props["topic_alias"] = new_alias
        props_bytes = c.encode_properties(props) if props else b"\x00"
        packet = c.encode_publish(topic_bytes, message.body, qos, retain, dup, pid,
                                  props_bytes)
        if len(packet) > self.client_max_packet:
            return False  # [MQTT-3.1.2-25] (and the alias is not taken)
        if new_alias is not None:
            self.out_aliases[topic] = new_alias
        self._send(packet)
        return True
