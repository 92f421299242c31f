"""SUBSCRIBE (granted QoS, shared subscriptions, retained messages after the SUBACK) and
UNSUBSCRIBE; their acks wait for the session's write in a persistent session.

``SubscribeMethods`` is one part of ``MqttSession`` (session.py).
"""
from __future__ import annotations

import logging

from manifold.broker.errors import BrokerError

from . import codec as c
from . import topics
from .server import TOPIC_EXCHANGE, MqttMessage, Subscription

log = logging.getLogger("manifold.mqtt")


class SubscribeMethods:
    """SUBSCRIBE and UNSUBSCRIBE."""

    # ================================================================ SUBSCRIBE
    def on_subscribe(self, p: c.Subscribe) -> None:
        state = self.state
        sub_id = None
        ids = p.properties.get("subscription_identifier")
        if ids:
            if len(ids) > 1:
                raise c.ProtocolError("more than one subscription identifier")
            sub_id = ids[0]
        codes = []
        new_subs = []
        for topic_filter, opts in p.subscriptions:
            try:
                group, inner = topics.parse_shared(topic_filter)
            except ValueError:
                codes.append(c.TOPIC_FILTER_INVALID if self.v5 else 0x80)
                continue
            if not topics.valid_topic_filter(inner):
                codes.append(c.TOPIC_FILTER_INVALID if self.v5 else 0x80)
                continue
            if group is not None and opts.no_local:
                raise c.ProtocolError("No Local on a shared subscription")  # [MQTT-3.8.3-4]
            # Read on amq.topic and topic read on the filter; never rights on the subscription
            # queue the broker makes for the client (unlike RabbitMQ).
            grant = self.grant
            if not (grant.allowed("read", "exchange", TOPIC_EXCHANGE) and grant.topic_allowed(
                    "read", TOPIC_EXCHANGE, topics.filter_to_key(inner))):
                log.warning("MQTT %s: SUBSCRIBE to %r refused for user '%s'", self.client_id,
                            topic_filter, grant.user)
                codes.append(c.NOT_AUTHORIZED if self.v5 else 0x80)
                continue
            sub = Subscription(topic_filter, inner, group, opts.qos, opts.no_local,
                               opts.retain_as_published, opts.retain_handling, sub_id)
            try:
                is_new = state.add_subscription(sub)  # type: ignore[union-attr]
            except BrokerError as exc:
                log.warning("subscribe %s failed: %s", topic_filter, exc.text)
                codes.append(c.UNSPECIFIED_ERROR if self.v5 else 0x80)
                continue
            codes.append(opts.qos)  # MQTT §3.9.3: granted QoS = requested (QoS 2 is supported)
            new_subs.append((sub, is_new))
        def send_retained() -> None:
            # Retained messages after the SUBACK [MQTT-3.3.1-9], not for shared subscriptions.
            for sub, is_new in new_subs:
                if sub.group is not None or sub.retain_handling == 2 or (
                        sub.retain_handling == 1 and not is_new):
                    continue
                self._send_retained(sub)

        # In a persistent session the SUBACK means the subscription is durable: it waits for
        # the session's write (if that fails, no SUBACK: the connection closes).
        stored = self.server.save_session(state) if new_subs else None
        self._ack_after(stored, c.serialize(c.Suback(p.packet_id, codes), self.version),
                        then=send_retained)

    def _send_retained(self, sub: Subscription) -> None:
        """Retained messages matching the filter go through the session queue, so they obey the
        in-flight window like any other message, marked as retained copies (RETAIN=1)."""
        state = self.state
        now = self.server.now_ms()
        for topic, entry in self.server.retained_for(sub.filter):
            m = entry.message
            props = m.properties
            mprops = m.mqtt_properties
            if entry.expires_at_ms is not None:
                left_s = max(1, -(-(entry.expires_at_ms - now) // 1000))
                props = props.copy()
                props.expiration = str(left_s * 1000)
                mprops = dict(mprops or {})
                mprops["message_expiry_interval"] = left_s
            copy = MqttMessage(TOPIC_EXCHANGE, m.routing_key, m.body, props, origin=m.origin,
                               retain=True, qos=m.qos, mqtt_properties=mprops, timestamp_ms=now,
                               retained_copy=True, topic=topic)
            self.vhost.publish("", state.queue_name, copy)  # type: ignore[union-attr]

    def on_unsubscribe(self, p: c.Unsubscribe) -> None:
        codes = []
        for topic_filter in p.filters:
            existed = self.state.remove_subscription(topic_filter)  # type: ignore[union-attr]
            codes.append(c.SUCCESS if existed else c.NO_SUBSCRIPTION_EXISTED)
        stored = self.server.save_session(self.state)  # type: ignore[arg-type]
        self._ack_after(stored, c.serialize(c.Unsuback(p.packet_id, codes), self.version))
