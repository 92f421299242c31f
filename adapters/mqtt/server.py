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
from manifold.broker.engine.unacked import end_consumers
from manifold.broker.message import Message, Properties
from manifold.broker.message_codec import decode_value
from manifold.broker.queue import ENTRY_OVERHEAD_BYTES

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

    def __init__(self, tag: str, state: "SessionState", share: Subscription | None,
                 share_queue: str | None = None):
        super().__init__(tag, owner=state)
        self.state = state
        #: the shared subscription and its group's queue, for a shared-subscription member
        self.share = share
        self.share_queue = share_queue

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
                self.vhost.consume(consumer.share_queue, consumer)

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
        self.server.save_session(self, detached=True)

    def destroy(self) -> None:
        """End the session: its queue, subscriptions and in-flight state go [MQTT 4.1]."""
        if self.destroyed:
            return
        self.destroyed = True
        if self.durable:
            self.server.forget_session(self)
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None
        # Every consumer of the session stops, then its unsettled deliveries return to their
        # queues: a shared group's other members get them.
        consumers = list(self.shared.values())
        if self.consumer is not None:
            consumers.append(self.consumer)
        end_consumers(self.vhost, consumers,
                      [o.delivery for o in self.outbound.values() if o.delivery is not None])
        self.outbound.clear()
        for topic_filter in [f for f, s in self.subscriptions.items() if s.group is not None]:
            self.remove_subscription(topic_filter)
        self.subscriptions.clear()
        if self.consumer is not None:
            self.vhost.cancel(self.consumer)
            self.vhost.delete_queue(self.queue_name)
            self.consumer = None
        self.conn = None

    def to_record(self, detached: bool = False) -> dict:
        """What the store keeps of a persistent session (QoS 2 packet ids are kept apart)."""
        return {"client_id": self.client_id, "vhost": self.vhost.name, "expiry_s": self.expiry_s,
                "subscriptions": [s.to_record() for s in self.subscriptions.values()],
                "next_pid": self.next_pid, "detached_at": time.time() if detached else None}


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
        self._memory = broker.memory
        self._retained = broker.state_map("mqtt-retained")
        self._sessions = broker.state_map("mqtt-sessions")
        self._qos2 = broker.state_map("mqtt-qos2")

    def new_session(self) -> Any:
        return self.session_factory(self)

    async def close(self) -> None:
        for handle in self.will_timers.values():
            handle.cancel()
        self.will_timers.clear()
        for state in self.sessions.values():
            if state.expiry_timer is not None:
                state.expiry_timer.cancel()

    def now_ms(self) -> int:
        return self.broker.clock.now_ms()

    # ------------------------------------------------------------ for operators (read only)
    def sessions_info(self) -> list[dict]:
        """Sessions for the management API: client id, subscriptions, queued messages."""
        out = []
        for state in list(self.sessions.values()):
            queue = state.vhost.queues.get(state.queue_name) if state.vhost else None
            out.append({"client_id": state.client_id,
                        "vhost": state.vhost.name if state.vhost else "",
                        "connected": state.conn is not None, "expiry_s": state.expiry_s,
                        "subscriptions": [{"topic_filter": sub.topic_filter, "qos": sub.qos}
                                          for sub in state.subscriptions.values()],
                        "queued_messages": queue.message_count if queue is not None else 0,
                        "in_flight": len(state.outbound)})
        return out

    def retained_info(self) -> list[dict]:
        return [{"topic": topic, "payload_bytes": len(r.message.body), "qos": r.message.qos}
                for topic, r in list(self.retained.items())]

    # ------------------------------------------------------------ sessions
    def expire(self, state: SessionState) -> None:
        state.expiry_timer = None
        if self.sessions.get(state.client_id) is state and state.conn is None:
            del self.sessions[state.client_id]
            state.destroy()

    def end_session(self, state: SessionState) -> None:
        if self.sessions.get(state.client_id) is state:
            del self.sessions[state.client_id]
        state.destroy()

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
            # Durable when a persistent session starts the group, so QoS 1/2 messages for an
            # offline group survive a restart; an existing queue (restored) is taken as it is.
            existing = state.vhost.queues.get(name)
            durable = existing.durable if existing is not None else state.durable
            state.vhost.declare_queue(name, durable=durable, arguments=dict(QUEUE_ARGUMENTS))
            state.vhost.bind_queue(name, TOPIC_EXCHANGE, sub.key, None)
            entry = self.share_groups[key] = [name, 0]
        entry[1] += 1
        consumer = SessionConsumer(f"mqtt-{state.client_id}-{sub.topic_filter}", state, sub,
                                   entry[0])
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
    def retain(self, topic: str, message: MqttMessage, expiry_s: int | None) -> Any:
        """[MQTT-3.3.1-5] store, replacing; [MQTT-3.3.1-10/11] an empty payload clears. Only a
        QoS 1/2 retained message is written to the store (QoS 0 promises nothing); returns the
        awaitable of that write, or None."""
        self._uncount(self.retained.get(topic))
        if not message.body:
            if self.retained.pop(topic, None) is None:
                return None
            return self._retained.delete(topic)
        expires = None if expiry_s is None else self.now_ms() + expiry_s * 1000
        self.retained[topic] = Retained(message, expires)
        self._memory.add(len(message.body) + ENTRY_OVERHEAD_BYTES)
        if message.qos == 0:
            if topic in self._retained:
                return self._retained.delete(topic)  # an older durable value must not return
            return None
        return self._retained.put(topic, [message.body, message.qos,
                                          _props_record(message.mqtt_properties), expires,
                                          message.properties.as_dict()])

    def _uncount(self, entry: Retained | None) -> None:
        """Retained bodies count in the memory alarm like queued ones."""
        if entry is not None:
            self._memory.add(-len(entry.message.body) - ENTRY_OVERHEAD_BYTES)

    def retained_for(self, topic_filter: str) -> list[tuple[str, Retained]]:
        now = self.now_ms()
        out = []
        for topic, entry in list(self.retained.items()):
            if entry.expires_at_ms is not None and entry.expires_at_ms <= now:
                del self.retained[topic]  # message expiry applies to retained messages too
                self._uncount(entry)
                self._retained.delete(topic)
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

    # ------------------------------------------------------------ persistence (the store)
    # Retained messages, persistent sessions and QoS 2 packet ids live in the broker's store
    # (append-only, fsynced, group-committed with the messages): a PUBACK for a retained message
    # or a SUBACK in a persistent session waits for the write that covers it.
    def save_session(self, state: SessionState, detached: bool = False) -> Any:
        """Store a persistent session's subscriptions and expiry; returns an awaitable that
        resolves once they are durable, or None (clean session, or an in-memory store)."""
        if not state.durable or state.destroyed or not state.expiry_s:
            return None
        return self._sessions.put(state.client_id, state.to_record(detached))

    def forget_session(self, state: SessionState) -> None:
        self._sessions.delete(state.client_id)
        for pid in list(state.inbound_qos2):
            self._qos2.delete((state.client_id, pid))

    def qos2_received(self, state: SessionState, pid: int) -> Any:
        """[MQTT 4.3.3] the packet id of a QoS 2 PUBLISH is kept until PUBREL; for a persistent
        session it is stored with the message, so a resend after a restart is not delivered
        twice. Returns the awaitable of that write, or None."""
        state.inbound_qos2.add(pid)
        if not state.durable:
            return None
        return self._qos2.put((state.client_id, pid), 1)

    def qos2_released(self, state: SessionState, pid: int) -> Any:
        state.inbound_qos2.discard(pid)
        if not state.durable:
            return None
        return self._qos2.delete((state.client_id, pid))

    def save(self) -> None:
        """Kept for callers from before the store: every change is written as it happens."""

    def load(self) -> None:
        """Restore retained messages and persistent sessions (subscriptions, QoS 2 packet ids)
        stored by an earlier run, then remove the durable session and shared-subscription queues
        that no stored session uses any more (sessions that ended or expired)."""
        now = self.now_ms()
        retained = self._retained.load()
        sessions = self._sessions.load()
        stored_qos2 = self._qos2.load()
        if not retained and not sessions:
            self._import_snapshot(retained, sessions, stored_qos2)
        for topic, record in retained.items():
            try:
                body, qos, props, expires, amqp_props = record
                if expires is not None and expires <= now:
                    self._retained.delete(topic)
                    continue
                properties = Properties(**amqp_props)
                msg = MqttMessage(TOPIC_EXCHANGE, topics.topic_to_key(topic), body, properties,
                                  origin=None, retain=True, qos=qos,
                                  mqtt_properties=_props_from_record(props), timestamp_ms=now)
                self.retained[topic] = Retained(msg, expires)
                self._memory.add(len(body) + ENTRY_OVERHEAD_BYTES)
            except (TypeError, ValueError) as exc:
                log.warning("ignoring unreadable retained message on %r: %s", topic, exc)
        qos2: dict[str, set[int]] = {}
        for (client_id, pid) in stored_qos2:
            qos2.setdefault(client_id, set()).add(pid)
        for client_id, rec in sessions.items():
            try:
                self._restore_session(rec, qos2.get(client_id, set()))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring unreadable MQTT session %r: %s", client_id, exc)
        for client_id, pids in qos2.items():
            if client_id not in self.sessions:
                for pid in pids:
                    self._qos2.delete((client_id, pid))
        self._remove_orphan_queues()

    def _import_snapshot(self, retained: dict, sessions: dict, qos2: dict) -> None:
        """Once, on upgrade: move the state an older version kept in ``mqtt-state.msgpack``
        into the store (and into the dicts being loaded), then rename the file to
        ``mqtt-state.msgpack.imported``."""
        path = os.path.join(self.settings.server.data_dir, "mqtt-state.msgpack")
        if not os.path.exists(path):
            return
        waits = []
        try:
            with open(path, "rb") as fh:
                data = decode_value(fh.read())
            for topic, body, qos, props, expires, amqp_props in data.get("retained", []):
                retained[topic] = [body, qos, props, expires, amqp_props]
                waits.append(self._retained.put(topic, retained[topic]))
            for rec in data.get("sessions", []):
                for pid in rec.pop("inbound_qos2", []):
                    qos2[(rec["client_id"], pid)] = 1
                    waits.append(self._qos2.put((rec["client_id"], pid), 1))
                sessions[rec["client_id"]] = rec
                waits.append(self._sessions.put(rec["client_id"], rec))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("cannot import %s: %s", path, exc)
            return

        def imported(done: Any = None) -> None:
            if done is not None and (done.cancelled() or done.exception() is not None):
                log.error("importing %s failed; it is kept", path)
                return
            os.replace(path, path + ".imported")
            log.info("imported the MQTT state of %s into the store", path)

        waits = [w for w in waits if w is not None]
        if waits:  # the old file goes only once its content is durable in the store
            asyncio.gather(*waits).add_done_callback(imported)
        else:
            imported()

    def _restore_session(self, rec: dict, inbound_qos2: set[int]) -> None:
        vhost = self.broker.vhosts.get(rec.get("vhost", "/"))
        if vhost is None:
            return
        state = SessionState(self, rec["client_id"], vhost)
        state.expiry_s = rec["expiry_s"]
        state.durable = True
        state.inbound_qos2 = inbound_qos2
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
            # Detached when stored, or (the broker stopped while it was connected) now.
            detached_at = rec.get("detached_at") or time.time()
            left = max(0.0, detached_at + state.expiry_s - time.time())
            state.expiry_timer = asyncio.get_running_loop().call_later(left, self.expire, state)

    def _remove_orphan_queues(self) -> None:
        for vhost in self.broker.vhosts.values():
            used = {s.queue_name for s in self.sessions.values() if s.vhost is vhost}
            used.update(entry[0] for key, entry in self.share_groups.items() if key[0] == vhost.name)
            for name in [n for n in vhost.queues if n.startswith(("mqtt-subscription-",
                                                                   "mqtt-shared-"))]:
                if name not in used:
                    log.info("removing queue '%s' of an MQTT session that ended", name)
                    vhost.delete_queue(name)


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
