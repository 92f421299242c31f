"""A virtual host: its exchanges, queues and bindings, and the operations adapters call on them.

Every adapter speaks to the core through :class:`VirtualHost` (obtained from
``Broker.open_vhost``) plus the :class:`~broker.consumer.Consumer` / ``Delivery`` pair. Errors are
the wire-neutral classes of ``broker.errors``; their texts follow RabbitMQ's wording.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import os
from typing import Any, Awaitable

from .clock import LoopClock
from .consumer import Consumer, Delivery
from .dedup import DedupWindow
from .errors import (AccessRefused, CommandInvalid, NotFound, PreconditionFailed)
from .exchanges import EXCHANGE_TYPES, DefaultExchange, Exchange, make_exchange
from .message import Message
from .queue import Queue
from .stream import Stream

log = logging.getLogger("manifold.broker")

STANDARD_EXCHANGES = (("amq.direct", "direct"), ("amq.fanout", "fanout"),
                      ("amq.topic", "topic"), ("amq.headers", "headers"), ("amq.match", "headers"))


class QueueInfo:
    __slots__ = ("name", "message_count", "consumer_count")

    def __init__(self, name: str, message_count: int, consumer_count: int):
        self.name = name
        self.message_count = message_count
        self.consumer_count = consumer_count

    def __iter__(self):
        return iter((self.name, self.message_count, self.consumer_count))


class PublishResult:
    """``routed``: queues that took the message; ``rejected``: a queue refused it (overflow);
    ``wait``: an awaitable that resolves once every durable copy is on disk, else None."""
    __slots__ = ("routed", "rejected", "wait")

    def __init__(self, routed: int, rejected: bool, wait: Awaitable[None] | None):
        self.routed = routed
        self.rejected = rejected
        self.wait = wait


def _gen_name(prefix: str = "amq.gen-") -> str:
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class VirtualHost:
    def __init__(self, name: str, *, store: Any = None, clock: Any = None,
                 consumer_timeout_ms: int = 0, resident_bytes: int | None = None,
                 memory: Any = None, max_queues: int = 0):
        self.name = name
        #: RabbitMQ's vhost limit: queues this vhost holds at most (0: no limit)
        self.max_queues = max_queues
        self.memory = memory
        self.resident_bytes = resident_bytes
        self.store = store
        self.clock = clock or LoopClock()
        self.consumer_timeout_ms = consumer_timeout_ms
        self.queues: dict[str, Queue | Stream] = {}
        self.exchanges: dict[str, Exchange] = {"": DefaultExchange(self.queues)}
        for ex_name, kind in STANDARD_EXCHANGES:
            self.exchanges[ex_name] = make_exchange(ex_name, kind, durable=True)
        self._timers: dict[Any, tuple[int, Any]] = {}
        self._dedup: dict[str, DedupWindow] = {}
        self._exchange_bindings = 0
        #: called after a durable exchange, queue or binding changed (the broker saves them)
        self.on_definitions_changed: Any = None
        if memory is not None and store is not None:
            memory.subscribe(self._memory_alarm)

    def _memory_alarm(self, alarm: bool) -> None:
        if alarm:
            # Not from inside the alarm's own listener loop: paging out clears the alarm.
            self.clock.call_at(self.clock.now_ms(), self._page_out)

    def _page_out(self) -> None:
        """Memory is short: every queue lets go of the bodies it can read back from disk, so
        publishers blocked by the alarm are let go again (RabbitMQ pages out the same way)."""
        for queue in list(self.queues.values()):
            if isinstance(queue, Queue):
                queue.page_out()

    def _durable_changed(self, *things: Any) -> None:
        if self.on_definitions_changed is not None and all(
                getattr(t, "durable", False) and getattr(t, "exclusive_owner", None) is None
                for t in things):
            self.on_definitions_changed()

    # ================================================================ QueueHost (for queues)
    def now_ms(self) -> int:
        return self.clock.now_ms()

    def schedule(self, queue: Any, when_ms: int) -> None:
        current = self._timers.get(queue)
        if current is not None:
            if current[0] <= when_ms:
                return
            current[1].cancel()
        handle = self.clock.call_at(when_ms, lambda: self._fire(queue))
        self._timers[queue] = (when_ms, handle)

    def _fire(self, queue: Any) -> None:
        self._timers.pop(queue, None)
        if not queue.deleted:
            queue.tick()

    def queue_unused(self, queue: Any) -> None:
        if self.queues.get(queue.name) is queue:
            self._delete_queue(queue)

    def dead_letter(self, queue: Queue, message: Message, reason: str) -> bool | Any:
        """Republish to the queue's dead-letter exchange with an ``x-death`` record, RabbitMQ style
        (most recent first; a repeat of the same queue and reason increments its ``count``).
        Returns False if no queue took the copy (no route, refused; a copy dropped by the cycle
        rule counts as taken), True if the queues hold it, or a future that resolves once every
        durable copy is on disk."""
        exchange = self.exchanges.get(queue.dlx or "")
        if exchange is None or queue.dlx is None:
            return False
        props = message.properties.copy()
        headers = props.headers if props.headers is not None else {}
        deaths = [dict(d) for d in headers.get("x-death") or [] if isinstance(d, dict)]
        now = datetime.datetime.fromtimestamp(self.now_ms() // 1000, datetime.timezone.utc)
        previous = next((d for d in deaths
                         if d.get("queue") == queue.name and d.get("reason") == reason), None)
        if previous is not None:
            deaths.remove(previous)
            record = previous
            record["count"] = int(record.get("count", 1)) + 1
            record["time"] = now
        else:
            record = {"count": 1, "reason": reason, "queue": queue.name, "time": now,
                      "exchange": message.exchange, "routing-keys": [message.routing_key]}
            if props.expiration is not None:
                record["original-expiration"] = props.expiration
        deaths.insert(0, record)
        headers["x-death"] = deaths
        headers.setdefault("x-first-death-queue", queue.name)
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-exchange", message.exchange)
        headers["x-last-death-queue"] = queue.name
        headers["x-last-death-reason"] = reason
        headers["x-last-death-exchange"] = message.exchange
        props.headers = headers
        # The TTL that expired the message must not expire it again downstream, nor its delay
        # delay it again.
        props.expiration = None
        headers.pop("x-delay", None)
        routing_key = queue.dlrk if queue.dlrk is not None else message.routing_key
        dead = Message(exchange.name, routing_key, message.body, props)
        dead_queues = {d.get("queue") for d in deaths}
        cycle_safe = any(d.get("reason") == "rejected" for d in deaths)
        waits = []
        taken = False
        for target in self._targets(exchange, routing_key, headers):
            # RabbitMQ's cycle rule: a message that comes back to a queue it already died in,
            # with no client rejection on the way, is dropped instead of looping forever.
            if target.name in dead_queues and not cycle_safe:
                taken = True
                continue
            outcome = target.enqueue(dead)
            if outcome is not False:
                taken = True
                if outcome is not True:
                    waits.append(outcome)
        if not waits:
            return taken
        return waits[0] if len(waits) == 1 else asyncio.gather(*waits)

    # ================================================================ exchanges
    def _exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"no exchange '{name}' in vhost '{self.name}'")
        return exchange

    def declare_exchange(self, name: str, kind: str = "direct", *, passive: bool = False,
                         durable: bool = True, auto_delete: bool = False, internal: bool = False,
                         arguments: dict | None = None) -> Exchange:
        if passive:
            return self._exchange(name)
        if name == "" or (name.startswith("amq.") and name not in self.exchanges):
            raise AccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'"
                                if name else "operation not permitted on the default exchange")
        if kind not in EXCHANGE_TYPES:
            raise CommandInvalid(f"invalid exchange type '{kind}'")
        existing = self.exchanges.get(name)
        if existing is not None:
            if existing.kind != kind:
                raise PreconditionFailed(
                    f"inequivalent arg 'type' for exchange '{name}' in vhost '{self.name}': "
                    f"received '{kind}' but current is '{existing.kind}'")
            if existing.durable != durable:
                raise PreconditionFailed(
                    f"inequivalent arg 'durable' for exchange '{name}' in vhost '{self.name}': "
                    f"received '{str(durable).lower()}' but current is "
                    f"'{str(existing.durable).lower()}'")
            return existing
        exchange = make_exchange(name, kind, durable=durable, auto_delete=auto_delete,
                                 internal=internal, arguments=arguments)
        self.exchanges[name] = exchange
        self._durable_changed(exchange)
        return exchange

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        if name == "" or name.startswith("amq."):
            raise AccessRefused(f"operation not permitted on exchange '{name}'"
                                if name else "operation not permitted on the default exchange")
        exchange = self.exchanges.get(name)
        if exchange is None:
            return  # idempotent, as in RabbitMQ 3.x
        if if_unused and exchange.bindings:
            raise PreconditionFailed(f"exchange '{name}' in vhost '{self.name}' in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        self.exchanges.pop(exchange.name, None)
        self._durable_changed(exchange)
        self._exchange_bindings -= sum(1 for b in exchange.bindings.values()
                                       if b.destination.is_exchange)
        exchange.bindings.clear()
        for other in list(self.exchanges.values()):
            self._exchange_bindings -= other.unbind_all(exchange)
            self._maybe_auto_delete(other)

    def _maybe_auto_delete(self, exchange: Exchange) -> None:
        if exchange.auto_delete and not exchange.bindings and exchange.name in self.exchanges:
            self._remove_exchange(exchange)

    def bind_exchange(self, destination: str, source: str, routing_key: str,
                      arguments: dict | None = None) -> None:
        dest, src = self._exchange(destination), self._exchange(source)
        if "" in (destination, source):
            raise AccessRefused("operation not permitted on the default exchange")
        if src.bind(dest, routing_key, arguments):
            self._exchange_bindings += 1
            self._durable_changed(src, dest)

    def unbind_exchange(self, destination: str, source: str, routing_key: str,
                        arguments: dict | None = None) -> None:
        dest, src = self._exchange(destination), self._exchange(source)
        if src.unbind(dest, routing_key, arguments):
            self._exchange_bindings -= 1
            self._durable_changed(src, dest)
            self._maybe_auto_delete(src)

    # ================================================================ queues
    def queue(self, name: str, owner: Any = None) -> Queue | Stream:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"no queue '{name}' in vhost '{self.name}'")
        queue.check_owner(owner)
        return queue

    def declare_queue(self, name: str = "", *, passive: bool = False, durable: bool = False,
                      exclusive: bool = False, auto_delete: bool = False,
                      arguments: dict | None = None, owner: Any = None) -> QueueInfo:
        if passive:
            queue = self.queue(name, owner)
            queue.touch()
            return QueueInfo(queue.name, queue.message_count, queue.consumer_count)
        if not name:
            name = _gen_name()
        elif name.startswith("amq.") and name not in self.queues:
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        arguments = arguments or {}
        existing = self.queues.get(name)
        if existing is not None:
            existing.check_owner(owner if exclusive or existing.exclusive_owner else None)
            self._check_equivalent(existing, durable, exclusive, auto_delete, arguments)
            existing.touch()
            return QueueInfo(name, existing.message_count, existing.consumer_count)
        if self.max_queues and len(self.queues) >= self.max_queues:
            # RabbitMQ's vhost limit max-queues: 406 PRECONDITION_FAILED
            raise PreconditionFailed(f"cannot declare queue '{name}': queue limit in vhost "
                                     f"'{self.name}' ({self.max_queues}) is reached")
        kind = arguments.get("x-queue-type", "classic")
        if kind in ("stream", "quorum"):
            for prop, bad in (("durable", not durable), ("exclusive", exclusive),
                              ("auto-delete", auto_delete)):
                if bad:
                    raise PreconditionFailed(
                        f"invalid property '{prop}' for queue '{name}' in vhost '{self.name}': "
                        f"{kind} queues must be durable, not exclusive and not auto-delete")
        queue: Queue | Stream
        if kind == "stream":
            queue = Stream(self, self.name, name, arguments=arguments, durable=durable,
                           store=self.store, memory=self.memory)
        else:
            log = self.store.queue_log(self.name, name) if (durable and self.store) else None
            queue = Queue(self, self.name, name, durable=durable,
                          exclusive_owner=owner if exclusive else None, auto_delete=auto_delete,
                          arguments=arguments, consumer_timeout_ms=self.consumer_timeout_ms,
                          log=log, resident_bytes=self.resident_bytes, memory=self.memory,
                          spill_log=self._spill_log_for(name))
            if kind == "quorum":
                _log_quorum_differences(queue, self.name)
        self.queues[name] = queue
        self._durable_changed(queue)
        return QueueInfo(name, 0, 0)

    def _spill_log_for(self, name: str) -> Any:
        """Opens the queue's spill log when it first needs one (most queues never do)."""
        store = self.store
        if store is None:
            return None
        return lambda: store.spill_log(self.name, name)

    def _check_equivalent(self, queue: Any, durable: bool, exclusive: bool, auto_delete: bool,
                          arguments: dict) -> None:
        def fail(what: str, received: Any, current: Any) -> None:
            def show(v: Any) -> str:
                return str(v).lower() if isinstance(v, bool) else str(v)
            raise PreconditionFailed(
                f"inequivalent arg '{what}' for queue '{queue.name}' in vhost '{self.name}': "
                f"received '{show(received)}' but current is '{show(current)}'")

        if queue.durable != durable:
            fail("durable", durable, queue.durable)
        if (queue.exclusive_owner is not None) != exclusive:
            fail("exclusive", exclusive, queue.exclusive_owner is not None)
        if queue.auto_delete != auto_delete:
            fail("auto_delete", auto_delete, queue.auto_delete)
        for key in set(arguments) | set(queue.arguments):
            if key.startswith("x-") and arguments.get(key) != queue.arguments.get(key):
                if key == "x-queue-type" and arguments.get(key, "classic") == queue.kind:
                    continue
                fail(key, arguments.get(key, "none"), queue.arguments.get(key, "none"))

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False,
                     owner: Any = None) -> int:
        queue = self.queues.get(name)
        if queue is None:
            return 0  # idempotent, as in RabbitMQ 3.x
        queue.check_owner(owner)
        if if_unused and queue.consumers:
            raise PreconditionFailed(f"queue '{name}' in vhost '{self.name}' in use")
        if if_empty and queue.message_count:
            raise PreconditionFailed(f"queue '{name}' in vhost '{self.name}' is not empty")
        return self._delete_queue(queue)

    def _delete_queue(self, queue: Any) -> int:
        self.queues.pop(queue.name, None)
        timer = self._timers.pop(queue, None)
        if timer is not None:
            timer[1].cancel()
        for exchange in list(self.exchanges.values()):
            if exchange.unbind_all(queue):
                self._maybe_auto_delete(exchange)
        # Saved after the unbinding: saved bindings to the deleted queue would stop the restart.
        self._durable_changed(queue)
        count = queue.delete()
        window = self._dedup.pop(queue.name, None)
        if window is not None:
            window.drop()
        log = getattr(queue, "log", None)
        if log is not None:
            log.drop()
        spill = getattr(queue, "spill", None)
        if spill is not None:
            spill.drop()
        for consumer in list(queue.consumers):
            queue.consumers.remove(consumer)
            consumer.cancelled(f"queue '{queue.name}' in vhost '{self.name}' was deleted")
        return count

    def set_queue_policy(self, name: str, policy: dict) -> None:
        """Replace the policy of queue ``name``: settings that override its declare arguments
        (TTL, delay, dead-lettering, delivery limit, message groups...) without taking part in the
        redeclare equivalence check, so that clients declaring the queue plainly still can."""
        queue = self.queue(name)
        if not hasattr(queue, "set_policy"):
            raise PreconditionFailed(f"queue '{name}' in vhost '{self.name}' takes no policy")
        queue.set_policy(policy)
        self._durable_changed(queue)

    def receive(self, name: str, max_count: int, timeout_ms: int,
                kept: bool = True) -> list[Delivery]:
        """Up to ``max_count`` messages checked out without a consumer; each returns to the queue
        ``timeout_ms`` later unless settled, a restart notwithstanding unless ``kept`` is false
        (see ``Queue.receive``)."""
        return self._work_queue(name).receive(max_count, timeout_ms, kept)

    def lease(self, name: str, msg_id: int) -> Delivery | None:
        return self._work_queue(name).lease(msg_id)

    def withdraw(self, name: str, msg_id: int) -> bool:
        return self._work_queue(name).withdraw(msg_id)

    @staticmethod
    def change_deadline(delivery: Delivery, timeout_ms: int) -> bool:
        """Give an unsettled delivery ``timeout_ms`` more before it returns (0: return it now)."""
        return delivery.queue.change_deadline(delivery, timeout_ms)

    def wait_ready(self, name: str, listener: Any) -> None:
        """Call ``listener()`` once when a message of queue ``name`` next becomes ready (or the
        queue is deleted). Long polls use it instead of polling; see :meth:`stop_waiting`."""
        self._work_queue(name).add_ready_listener(listener)

    def stop_waiting(self, name: str, listener: Any) -> None:
        queue = self.queues.get(name)
        if isinstance(queue, Queue):
            queue.remove_ready_listener(listener)

    def _work_queue(self, name: str) -> Queue:
        queue = self.queue(name)
        if not isinstance(queue, Queue):
            raise PreconditionFailed(f"queue '{name}' in vhost '{self.name}' is a stream")
        return queue

    def dedup_window(self, name: str, window_ms: int) -> DedupWindow:
        """The deduplication window of queue ``name`` (persisted through the store)."""
        window = self._dedup.get(name)
        if window is None:
            log = self.store.dedup_log(self.name, name) if self.store is not None else None
            window = self._dedup[name] = DedupWindow(log, self.clock, window_ms)
        return window

    def purge_queue(self, name: str, owner: Any = None, in_flight: bool = False) -> int:
        """Drop the ready messages (AMQP queue.purge); with ``in_flight`` also delayed and
        leased ones (SQS PurgeQueue)."""
        queue = self.queue(name, owner)
        return queue.purge_all() if in_flight else queue.purge()

    def _queue_binding(self, queue: str, exchange: str, owner: Any) -> tuple[Exchange, Any]:
        target = self.queue(queue, owner)
        if exchange == "":
            raise AccessRefused("operation not permitted on the default exchange")
        return self._exchange(exchange), target

    def bind_queue(self, queue: str, exchange: str, routing_key: str,
                   arguments: dict | None = None, owner: Any = None) -> None:
        source, target = self._queue_binding(queue, exchange, owner)
        if source.bind(target, routing_key, arguments):
            self._durable_changed(source, target)

    def unbind_queue(self, queue: str, exchange: str, routing_key: str,
                     arguments: dict | None = None, owner: Any = None) -> None:
        source, target = self._queue_binding(queue, exchange, owner)
        if source.unbind(target, routing_key, arguments):
            self._durable_changed(source, target)
            self._maybe_auto_delete(source)

    # ================================================================ publish
    def _targets(self, exchange: Exchange, routing_key: str, headers: dict | None) -> Any:
        """Queues a message reaches from ``exchange``, following exchange-to-exchange bindings
        and alternate exchanges, each queue once."""
        destinations = exchange.route(routing_key, headers)
        if not self._exchange_bindings and exchange.alternate_exchange is None:
            return tuple(destinations)
        queues: dict = {}
        visited = {exchange}
        stack = [(exchange, destinations)]
        while stack:
            source, found = stack.pop()
            found = tuple(found)
            if not found and source.alternate_exchange is not None:
                alternate = self.exchanges.get(source.alternate_exchange)
                if alternate is not None and alternate not in visited:
                    visited.add(alternate)
                    stack.append((alternate, alternate.route(routing_key, headers)))
            for dest in found:
                if dest.is_exchange:
                    if dest not in visited:
                        visited.add(dest)
                        stack.append((dest, dest.route(routing_key, headers)))
                else:
                    queues[dest] = None
        return tuple(queues)

    def publish(self, exchange: str, routing_key: str, message: Message) -> PublishResult:
        """Route and enqueue. ``result.routed == 0`` means unroutable (AMQP mandatory -> Return)."""
        ex = self.exchanges.get(exchange)
        if ex is None:
            raise NotFound(f"no exchange '{exchange}' in vhost '{self.name}'")
        if ex.internal:
            raise AccessRefused(f"cannot publish to internal exchange '{exchange}' in vhost "
                                f"'{self.name}'")
        if not message.timestamp_ms and message.properties.expiration is not None:
            # The publish time, from which a consumer is told how much of the lifetime is left
            # (MQTT 5 Message Expiry Interval [MQTT-3.3.2-6]); read only for expiring messages.
            message.timestamp_ms = self.clock.now_ms()
        if self._exchange_bindings or ex.alternate_exchange is not None:
            targets = self._targets(ex, routing_key, message.properties.headers)
        else:  # the common case: the exchange's own bindings are the whole answer
            # (a snapshot: a delivery may change the bindings while we enqueue)
            targets = tuple(ex.route(routing_key, message.properties.headers))
        routed = 0
        rejected = False
        waits = None
        for queue in targets:
            outcome = queue.enqueue(message)
            if outcome is False:
                rejected = True
                continue
            routed += 1
            if outcome is not True:
                if waits is None:
                    waits = [outcome]
                else:
                    waits.append(outcome)
        wait = None
        if waits is not None:
            wait = waits[0] if len(waits) == 1 else asyncio.gather(*waits)
        return PublishResult(routed, rejected, wait)

    # ================================================================ consume
    def consume(self, queue: str, consumer: Consumer, owner: Any = None) -> None:
        target = self.queue(queue, owner)
        target.add_consumer(consumer)

    def cancel(self, consumer: Consumer) -> None:
        """Stop deliveries to ``consumer``; its unsettled deliveries stay out until the adapter
        settles or rejects them (see :meth:`requeue`)."""
        queue = consumer.queue
        if queue is not None and not queue.deleted:
            queue.remove_consumer(consumer)

    def get(self, queue: str, *, no_ack: bool, owner: Any = None) -> tuple[Delivery | None, int]:
        target = self.queue(queue, owner)
        delivery = target.get(no_ack)
        return delivery, target.message_count

    @staticmethod
    def requeue(deliveries: Any) -> None:
        """Return unsettled deliveries to their queues (a channel, session or connection ended)."""
        queues: dict = {}
        for delivery in deliveries:
            if not delivery.settled:
                delivery.queue.settle(delivery, False, True, pump=False)
                queues[delivery.queue] = None
        for queue in queues:  # all returned first: redelivered in their old order
            if queue.consumers and not queue.deleted:
                queue.pump()

    def close_owner(self, owner: Any) -> None:
        """The connection ``owner`` ended: its exclusive queues go."""
        for queue in [q for q in self.queues.values() if q.exclusive_owner is owner]:
            self._delete_queue(queue)

    # ================================================================ definitions
    def definitions(self) -> dict:
        """Durable exchanges, queues and the bindings between them (what survives a restart)."""
        def durable(thing: Any) -> bool:
            return thing.durable and getattr(thing, "exclusive_owner", None) is None

        standard = {"", *(name for name, _ in STANDARD_EXCHANGES)}
        exchanges = [[e.name, e.kind, e.auto_delete, e.internal, e.arguments]
                     for e in self.exchanges.values() if e.name not in standard and durable(e)]
        queues = [[q.name, q.auto_delete, q.arguments, getattr(q, "policy", {})]
                  for q in self.queues.values() if durable(q)]
        bindings = []
        for exchange in self.exchanges.values():
            if exchange.name == "" or not exchange.durable:
                continue
            for b in exchange.bindings.values():
                if durable(b.destination):
                    kind = "exchange" if b.destination.is_exchange else "queue"
                    bindings.append([exchange.name, kind, b.destination.name, b.routing_key,
                                     b.arguments])
        return {"exchanges": exchanges, "queues": queues, "bindings": bindings}

    def restore(self, definitions: dict) -> int:
        """Recreate saved definitions and reload each durable queue's unsettled messages."""
        recovered = 0
        for name, kind, auto_delete, internal, arguments in definitions.get("exchanges", []):
            self.declare_exchange(name, kind, durable=True, auto_delete=auto_delete,
                                  internal=internal, arguments=arguments)
        for name, auto_delete, arguments, *rest in definitions.get("queues", []):
            self.declare_queue(name, durable=True, auto_delete=auto_delete, arguments=arguments)
            if rest and rest[0]:
                self.queues[name].set_policy(rest[0])
            recovered += self.queues[name].recover()
        for source, kind, dest, routing_key, arguments in definitions.get("bindings", []):
            if kind == "exchange":
                self.bind_exchange(dest, source, routing_key, arguments)
            else:
                self.bind_queue(dest, source, routing_key, arguments)
        return recovered

    def close(self) -> None:
        for queue in self.queues.values():
            if isinstance(queue, Stream):
                queue.close()  # stored reader offsets acked since the last flush
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


def _log_quorum_differences(queue: Queue, vhost: str) -> None:
    """What a user migrating from RabbitMQ quorum queues gets instead (adapters/amqp/MAPPING.md)."""
    at_least_once = queue.arguments.get("x-dead-letter-strategy") == "at-least-once"
    log.info("queue '%s' in vhost '%s': x-queue-type quorum is a single-node durable queue here "
             "(no replication); delivery limit %s; dead-lettering %s", queue.name, vhost,
             queue.delivery_limit if queue.delivery_limit is not None else "none",
             "at-least-once" if queue.dead_letter_at_least_once else "at-most-once")
    if at_least_once and not queue.dead_letter_at_least_once:
        log.warning("queue '%s' in vhost '%s': x-dead-letter-strategy at-least-once needs "
                    "x-overflow reject-publish; using at-most-once, as RabbitMQ does",
                    queue.name, vhost)
