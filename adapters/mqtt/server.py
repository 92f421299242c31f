"""Per-server MQTT state: the session registry (client id -> session state, for takeover and
persistent sessions), retained messages, shared-subscription groups, delayed wills.

Nothing here is global: ``make_server`` builds one :class:`MqttServer` per broker service.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable, Protocol

from manifold.broker.consumer import Consumer, Delivery
from manifold.broker.message import Message, Properties

from . import topics

log = logging.getLogger("manifold.mqtt")

TOPIC_EXCHANGE = "amq.topic"
NEVER_EXPIRES = 0xFFFFFFFF

# The queue of a session never times its deliveries out: an MQTT client may hold an unacknowledged
# QoS 1/2 message as long as its session lives (it is resent on reconnect) [MQTT-4.4.0-1].
QUEUE_ARGUMENTS = {"x-consumer-timeout": 0}


class MqttMessage(Message):
    """A Message published by an MQTT client. The core sees a plain Message; the adapter keeps
    what MQTT needs beyond the shared properties: the publishing session (for No Local), the
    RETAIN flag (for Retain As Published), the publish QoS and the original MQTT 5 properties
    (user property order and duplicates, payload format indicator) for MQTT subscribers."""

    __slots__ = ("origin", "retain", "qos", "mqtt_properties", "retained_copy", "topic")

    def __init__(self, exchange: str, routing_key: str, body: bytes, properties: Properties,
                 *, origin: Any, retain: bool, qos: int, mqtt_properties: dict | None,
                 timestamp_ms: int, retained_copy: bool = False, topic: str | None = None):
        # Message.__init__ inlined: this runs once per published message.
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.encoded = None
        self.timestamp_ms = timestamp_ms
        #: the MQTT topic (saves converting the routing key back per delivery)
        self.topic = topic if topic is not None else topics.key_to_topic(routing_key)
        self.origin = origin
        self.retain = retain
        self.qos = qos
        self.mqtt_properties = mqtt_properties
        #: a copy made for one subscriber from the retained store (sent with RETAIN=1)
        self.retained_copy = retained_copy


class Subscription:
    __slots__ = ("filter", "topic_filter", "qos", "no_local", "retain_as_published",
                 "retain_handling", "identifier", "group", "key")

    def __init__(self, topic_filter: str, inner: str, group: str | None, qos: int,
                 no_local: bool = False, retain_as_published: bool = False,
                 retain_handling: int = 0, identifier: int | None = None):
        #: what the client sent (``$share/g/a/b`` for shared subscriptions)
        self.topic_filter = topic_filter
        #: the filter matched against topics (``a/b``)
        self.filter = inner
        self.group = group
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.identifier = identifier
        self.key = topics.filter_to_key(inner)

    def to_record(self) -> list:
        return [self.topic_filter, self.filter, self.group, self.qos, self.no_local,
                self.retain_as_published, self.retain_handling, self.identifier]

    @classmethod
    def from_record(cls, r: list) -> "Subscription":
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


class Outbound:
    """A QoS 1/2 PUBLISH sent to the client and not yet completed. ``delivery`` is None once the
    client owns the message (PUBREC), while the PUBREL/PUBCOMP exchange finishes."""
    __slots__ = ("delivery", "message", "qos", "retain", "sub_ids", "released")

    def __init__(self, delivery: Delivery | None, message: Message, qos: int, retain: bool,
                 sub_ids: list | None):
        self.delivery = delivery
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.released = False


class AttachedConnection(Protocol):
    """What a session state needs of the connection attached to it (``session.MqttSession``,
    which imports this module, so the type is named here rather than imported)."""

    def can_deliver(self) -> bool: ...

    def deliver(self, delivery: Delivery, share: Subscription | None) -> None: ...

    def server_ended(self, reason: str) -> None: ...


class SessionConsumer(Consumer):
    """The session's consumer on its own queue or on a shared-subscription queue. Credit is the
    session's in-flight window (client Receive Maximum) and the connection's output buffer."""

    def __init__(self, tag: str, state: "SessionState", share: Subscription | None):
        super().__init__(tag, owner=state)
        self.state = state
        self.share = share

    def has_credit(self) -> bool:
        conn = self.state.conn
        return conn is not None and conn.can_deliver()

    def cancelled(self, reason: str) -> None:
        """The queue was deleted under the session (e.g. by an AMQP client): the session cannot
        go on without it, so it ends and its client is disconnected (5.0: reason 0x80)."""
        self.queue = None
        state = self.state
        if self.share is None:
            state.consumer = None
        conn = state.conn
        state.server.end_session(state)
        if conn is not None:
            conn.server_ended(reason)

    def deliver(self, delivery: Delivery) -> None:
        conn = self.state.conn
        if conn is None:  # pragma: no cover - has_credit guards this
            delivery.reject(True)
            return
        conn.deliver(delivery, self.share)


class SessionState:
    """What survives the connection of a persistent session [MQTT 4.1]: subscriptions, the
    session queue with its messages, QoS 1/2 messages in flight to the client, and the QoS 2
    packet identifiers received but not yet released."""

    def __init__(self, server: "MqttServer", client_id: str, vhost: Any):
        self.server = server
        self.client_id = client_id
        self.vhost = vhost
        self.queue_name = f"mqtt-subscription-{client_id}"
        self.subscriptions: dict[str, Subscription] = {}
        self.consumer: SessionConsumer | None = None
        self.shared: dict[str, SessionConsumer] = {}  # topic_filter -> consumer
        self.outbound: dict[int, Outbound] = {}
        self.inbound_qos2: set[int] = set()
        self.next_pid = 1
        self.expiry_s = 0
        self.conn: AttachedConnection | None = None
        self.expiry_timer: asyncio.TimerHandle | None = None
        self.durable = False
        self._match_cache: dict[str, list[Subscription]] = {}
        self.destroyed = False

    # ------------------------------------------------------------ packet identifiers
    def alloc_pid(self) -> int:
        pid = self.next_pid
        outbound = self.outbound
        for _ in range(65535):
            if pid not in outbound:
                break
            pid = pid % 65535 + 1
        self.next_pid = pid % 65535 + 1
        return pid

    # ------------------------------------------------------------ subscriptions
    def matching(self, topic: str) -> list[Subscription]:
        """The non-shared subscriptions matching ``topic`` (cached per topic)."""
        hit = self._match_cache.get(topic)
        if hit is None:
            hit = [s for s in self.subscriptions.values()
                   if s.group is None and topics.matches(s.filter, topic)]
            if len(self._match_cache) > 1024:
                self._match_cache.clear()
            self._match_cache[topic] = hit
        return hit

    def ensure_queue(self) -> None:
        """Declare the session queue on first use; consume it while a client is attached."""
        if self.consumer is not None:
            return
        self.vhost.declare_queue(self.queue_name, durable=self.durable,
                                 arguments=dict(QUEUE_ARGUMENTS))
        self.consumer = SessionConsumer(f"mqtt-{self.client_id}", self, None)
        if self.conn is not None:
            self.vhost.consume(self.queue_name, self.consumer)

    def update_no_ack(self) -> None:
        """QoS 0 only: consume without acks (cheaper). The queue reads ``no_ack`` per checkout,
        so switching is safe while deliveries are out."""
        if self.consumer is not None:
            self.consumer.no_ack = all(s.qos == 0 for s in self.subscriptions.values()
                                       if s.group is None)

    def add_subscription(self, sub: Subscription) -> bool:
        """Returns True if the subscription is new (for Retain Handling 1)."""
        old = self.subscriptions.get(sub.topic_filter)
        self.subscriptions[sub.topic_filter] = sub
        self._match_cache.clear()
        if sub.group is None:
            self.ensure_queue()
            if old is None and not any(s.key == sub.key and s is not sub and s.group is None
                                       for s in self.subscriptions.values()):
                self.vhost.bind_queue(self.queue_name, TOPIC_EXCHANGE, sub.key, None)
            self.update_no_ack()
        elif old is None:
            self.shared[sub.topic_filter] = self.server.join_share(self, sub)
        else:
            self.shared[sub.topic_filter].share = sub
        return old is None

    def remove_subscription(self, topic_filter: str) -> bool:
        sub = self.subscriptions.pop(topic_filter, None)
        if sub is None:
            return False
        self._match_cache.clear()
        if sub.group is None:
            if not any(s.key == sub.key and s.group is None for s in self.subscriptions.values()):
                self.vhost.unbind_queue(self.queue_name, TOPIC_EXCHANGE, sub.key, None)
            self.update_no_ack()
        else:
            consumer = self.shared.pop(topic_filter)
            self.server.leave_share(self, sub, consumer)
        return True

    # ------------------------------------------------------------ lifecycle
    def attach(self, conn: AttachedConnection) -> None:
        self.conn = conn
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None
        if self.consumer is not None and self.consumer.queue is None:
            self.vhost.consume(self.queue_name, self.consumer)
        for topic_filter, consumer in self.shared.items():
            if consumer.queue is None:
                self.vhost.consume(consumer.share_queue, consumer)  # type: ignore[attr-defined]

    def detach(self) -> None:
        """The connection ended; the session stays (persistent) until it expires."""
        self.conn = None
        if self.consumer is not None:
            self.vhost.cancel(self.consumer)
            self.consumer.queue = None
        for consumer in self.shared.values():
            self.vhost.cancel(consumer)
            consumer.queue = None
        if self.expiry_s != NEVER_EXPIRES:
            loop = asyncio.get_running_loop()
            self.expiry_timer = loop.call_later(self.expiry_s, self.server.expire, self)
        self.server.save()

    def destroy(self) -> None:
        """End the session: its queue, subscriptions and in-flight state go [MQTT 4.1]."""
        if self.destroyed:
            return
        self.destroyed = True
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None
        # Unsettled deliveries return to their queues: a shared group's other members get them.
        self.vhost.requeue([o.delivery for o in self.outbound.values() if o.delivery is not None])
        self.outbound.clear()
        for topic_filter in [f for f, s in self.subscriptions.items() if s.group is not None]:
            self.remove_subscription(topic_filter)
        self.subscriptions.clear()
        if self.consumer is not None:
            self.vhost.cancel(self.consumer)
            self.vhost.delete_queue(self.queue_name)
            self.consumer = None
        self.conn = None

    def to_record(self) -> dict:
        return {"client_id": self.client_id, "vhost": self.vhost.name, "expiry_s": self.expiry_s,
                "subscriptions": [s.to_record() for s in self.subscriptions.values()],
                "inbound_qos2": sorted(self.inbound_qos2), "next_pid": self.next_pid,
                "detached_at": time.time()}


class Retained:
    __slots__ = ("message", "expires_at_ms")

    def __init__(self, message: MqttMessage, expires_at_ms: int | None):
        self.message = message
        self.expires_at_ms = expires_at_ms


class MqttServer:
    name = "mqtt"

    def __init__(self, broker: Any, settings: Any,
                 session_factory: Callable[["MqttServer"], Any]):
        self.broker = broker
        self.settings = settings
        self.mqtt = settings.mqtt
        #: builds one connection's session (``session.MqttSession``). Passed in by
        #: ``make_server`` so that imports go one way: session.py uses this module's types.
        self.session_factory = session_factory
        self.sessions: dict[str, SessionState] = {}
        #: topic -> retained message [MQTT 3.3.1.3]
        self.retained: dict[str, Retained] = {}
        #: (vhost, group, filter) -> [queue name, member count]
        self.share_groups: dict[tuple, list] = {}
        self.will_timers: dict[str, asyncio.TimerHandle] = {}
        self.data_dir = settings.server.data_dir
        self._save_handle: asyncio.TimerHandle | None = None

    def new_session(self) -> Any:
        return self.session_factory(self)

    async def close(self) -> None:
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        self.save_now()
        for handle in self.will_timers.values():
            handle.cancel()
        self.will_timers.clear()
        for state in self.sessions.values():
            if state.expiry_timer is not None:
                state.expiry_timer.cancel()

    def now_ms(self) -> int:
        return self.broker.clock.now_ms()

    # ------------------------------------------------------------ sessions
    def expire(self, state: SessionState) -> None:
        state.expiry_timer = None
        if self.sessions.get(state.client_id) is state and state.conn is None:
            del self.sessions[state.client_id]
            state.destroy()
            self.save()

    def end_session(self, state: SessionState) -> None:
        if self.sessions.get(state.client_id) is state:
            del self.sessions[state.client_id]
        state.destroy()
        self.save()

    # ------------------------------------------------------------ shared subscriptions
    def join_share(self, state: SessionState, sub: Subscription) -> SessionConsumer:
        """One queue per (group, filter), consumed by every member: the queue's round robin gives
        each message to one member [MQTT 4.8.2]."""
        key = (state.vhost.name, sub.group, sub.filter)
        entry = self.share_groups.get(key)
        if entry is None:
            # A share name cannot contain "/" [MQTT-4.8.2-2], so the first "/" separates it
            # from the binding key unambiguously.
            name = f"mqtt-shared-{sub.group}/{sub.key}"
            state.vhost.declare_queue(name, arguments=dict(QUEUE_ARGUMENTS))
            state.vhost.bind_queue(name, TOPIC_EXCHANGE, sub.key, None)
            entry = self.share_groups[key] = [name, 0]
        entry[1] += 1
        consumer = SessionConsumer(f"mqtt-{state.client_id}-{sub.topic_filter}", state, sub)
        consumer.share_queue = entry[0]  # type: ignore[attr-defined]
        consumer.no_ack = False
        if state.conn is not None:
            state.vhost.consume(entry[0], consumer)
        return consumer

    def leave_share(self, state: SessionState, sub: Subscription,
                    consumer: SessionConsumer) -> None:
        state.vhost.cancel(consumer)
        consumer.queue = None
        # Messages in flight to this member go back to the group [MQTT 4.8.2].
        for pid, out in list(state.outbound.items()):
            if out.delivery is not None and out.delivery.consumer is consumer:
                out.delivery.reject(True)
                out.delivery = None
        key = (state.vhost.name, sub.group, sub.filter)
        entry = self.share_groups.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self.share_groups[key]
            state.vhost.delete_queue(entry[0])

    # ------------------------------------------------------------ retained messages
    def retain(self, topic: str, message: MqttMessage, expiry_s: int | None) -> None:
        """[MQTT-3.3.1-5] store, replacing; [MQTT-3.3.1-10/11] an empty payload clears."""
        if not message.body:
            self.retained.pop(topic, None)
        else:
            expires = None if expiry_s is None else self.now_ms() + expiry_s * 1000
            self.retained[topic] = Retained(message, expires)
        self.save()

    def retained_for(self, topic_filter: str) -> list[tuple[str, Retained]]:
        now = self.now_ms()
        out = []
        for topic, entry in list(self.retained.items()):
            if entry.expires_at_ms is not None and entry.expires_at_ms <= now:
                del self.retained[topic]  # message expiry applies to retained messages too
                continue
            if topics.matches(topic_filter, topic):
                out.append((topic, entry))
        return out

    # ------------------------------------------------------------ wills
    def schedule_will(self, client_id: str, delay_s: int, publish: Any) -> None:
        self.cancel_will(client_id)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.will_timers.pop(client_id, None)
            publish()

        self.will_timers[client_id] = loop.call_later(delay_s, fire)

    def cancel_will(self, client_id: str) -> None:
        handle = self.will_timers.pop(client_id, None)
        if handle is not None:
            handle.cancel()

    # ------------------------------------------------------------ persistence (msgpack)
    def _path(self) -> str:
        return os.path.join(self.data_dir, "mqtt-state.msgpack")

    def save(self) -> None:
        """Coalesce saves: at most one snapshot write per second (the retained store can be large)."""
        if self._save_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._save_handle = loop.call_later(1.0, self._save_timer)

    def _save_timer(self) -> None:
        self._save_handle = None
        self.save_now()

    def save_now(self) -> None:
        import msgpack
        now = self.now_ms()
        retained = []
        for topic, entry in self.retained.items():
            if entry.expires_at_ms is not None and entry.expires_at_ms <= now:
                continue
            m = entry.message
            retained.append([topic, m.body, m.qos, _props_record(m.mqtt_properties),
                             entry.expires_at_ms, m.properties.as_dict()])
        sessions = [s.to_record() for s in self.sessions.values()
                    if s.expiry_s and not s.destroyed]
        data = {"version": 1, "retained": retained, "sessions": sessions}
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            tmp = self._path() + ".tmp"
            with open(tmp, "wb") as fh:
                fh.write(msgpack.packb(data, use_bin_type=True))
            os.replace(tmp, self._path())
        except OSError as exc:  # pragma: no cover - a full disk must not stop the broker
            log.warning("cannot save MQTT state: %s", exc)

    def load(self) -> None:
        """Restore retained messages and persistent sessions (subscriptions, QoS 2 packet ids)
        written by an earlier run. Messages that were queued for an offline session survive only
        if the core's store kept its durable queue."""
        import msgpack
        try:
            with open(self._path(), "rb") as fh:
                data = msgpack.unpackb(fh.read(), raw=False, strict_map_key=False)
        except (OSError, ValueError, msgpack.UnpackException):
            return
        if not isinstance(data, dict) or data.get("version") != 1:
            return
        now = self.now_ms()
        try:
            for topic, body, qos, props, expires, amqp_props in data.get("retained", []):
                if expires is not None and expires <= now:
                    continue
                headers = amqp_props.get("headers")
                properties = Properties(**{k: v for k, v in amqp_props.items() if k != "headers"},
                                        headers=headers)
                msg = MqttMessage(TOPIC_EXCHANGE, topics.topic_to_key(topic), body, properties,
                                  origin=None, retain=True, qos=qos,
                                  mqtt_properties=_props_from_record(props), timestamp_ms=now)
                self.retained[topic] = Retained(msg, expires)
            for rec in data.get("sessions", []):
                vhost = self.broker.vhosts.get(rec.get("vhost", "/"))
                if vhost is None:
                    continue
                state = SessionState(self, rec["client_id"], vhost)
                state.expiry_s = rec["expiry_s"]
                state.durable = True
                state.inbound_qos2 = set(rec.get("inbound_qos2", []))
                state.next_pid = rec.get("next_pid", 1)
                for r in rec.get("subscriptions", []):
                    sub = Subscription.from_record(r)
                    state.subscriptions[sub.topic_filter] = sub
                    if sub.group is None:
                        state.ensure_queue()
                        vhost.bind_queue(state.queue_name, TOPIC_EXCHANGE, sub.key, None)
                    else:
                        state.shared[sub.topic_filter] = self.join_share(state, sub)
                state.update_no_ack()
                self.sessions[state.client_id] = state
                if state.expiry_s != NEVER_EXPIRES:
                    left = max(0.0, rec.get("detached_at", time.time()) + state.expiry_s
                               - time.time())
                    state.expiry_timer = asyncio.get_running_loop().call_later(
                        left, self.expire, state)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable MQTT state: %s", exc)


def _props_record(props: dict | None) -> dict | None:
    if not props:
        return None
    out = dict(props)
    if "user_property" in out:
        out["user_property"] = [list(p) for p in out["user_property"]]
    return out


def _props_from_record(props: dict | None) -> dict | None:
    if not props:
        return None
    out = dict(props)
    if "user_property" in out:
        out["user_property"] = [tuple(p) for p in out["user_property"]]
    return out
