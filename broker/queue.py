"""A work queue (SQS / RabbitMQ classic semantics): one consumer per message, acks, redelivery.

The queue is a state machine in the style of RabbitMQ's ``rabbit_fifo.erl``: :meth:`Queue.apply`
takes a command (enqueue, checkout, settle, return, discard, credit, expire, purge...; see
broker/queue_commands.py), changes the queue's state and returns ``(reply, effects)``. It never
touches the event loop, the network or the disk: time is read from ``host.now_ms()``, and what
must happen outside is an effect the caller runs with :meth:`Queue.run` after ``apply`` returned:
deliveries (``consumer.deliver``), store writes, timers (``host.schedule(queue, when_ms)``; the
host then sends :class:`Tick`), dead-letters (``host.dead_letter``) and the deletion of an unused
queue (``host.queue_unused``).

The methods adapters and the vhost call (``enqueue``, ``settle``, ``add_consumer``...) are thin
wrappers: each runs its command's handler, then the effects. An effect may lead back to the queue
(a consumer that acks inside ``deliver``, a dead-letter routed into the same queue): that command
then runs at once, but its effects join the queue of effects already running, behind the ones
before them. So no command runs inside another, and each consumer gets its deliveries in the
order they were checked out.

Credit is opaque (``consumer.has_credit()`` may depend on the connection's output buffer or an
MQTT in-flight window, which only a delivery changes), so a pump checks out at most one message
per consumer per round and, if more could go, asks for another round (:data:`CONTINUE`) that
runs after those deliveries.

Parts: queue_ready.py (ready messages and their order), queue_paging.py (bodies in memory or on
disk, cold runs, recovery), queue_deadletter.py (discard, dead-lettering), queue_receives.py
(SQS-style receives, receive state kept across restarts), queue_args.py (declare arguments),
entry.py (one message in the queue).
"""
from __future__ import annotations

import heapq
import logging
from collections import deque
from typing import Any, Awaitable, Protocol

from manifold.persistence.records import FLAG_READ_ON_RECOVERY
from manifold.persistence.store import Log

from .consumer import Consumer, Delivery
from .entry import DELAYED, ENTRY_OVERHEAD_BYTES, GONE, READY, UNACKED, Entry
from .errors import PreconditionFailed, ResourceLocked
from .groups import NO_GROUP, MessageGroups
from .message import Message
from .message_codec import encode_message
from .queue_args import (DEAD_LETTER_RETRY_MS, GROUP_HEADER, QUORUM_DELIVERY_LIMIT,
                         parse_expiration, validate_arguments)
from .queue_commands import (STORE_WRITES, Append, Cancel, ChangeDeadline, Checkout, Command,
                             Credit, DeadLetter, Delete, Discard, Effect, Enqueue, Get, PageOut, Purge,
                             Receive, Remove, Return, Settle, Tick, TimedOut, Timer, Unused,
                             Withdraw)
from .queue_deadletter import QueueDeadLetters
from .queue_paging import QueuePaging
from .queue_ready import QueueReady
from .queue_receives import QueueReceives

log = logging.getLogger("manifold.queue")

__all__ = ["Queue", "QueueHost", "Entry", "ENTRY_OVERHEAD_BYTES", "DEAD_LETTER_RETRY_MS",
           "QUORUM_DELIVERY_LIMIT", "validate_arguments", "consumer_priority"]


class QueueHost(Protocol):
    def now_ms(self) -> int: ...
    def schedule(self, queue: Any, when_ms: int) -> None: ...
    def dead_letter(self, queue: Any, message: Message, reason: str) -> bool | Any: ...
    def queue_unused(self, queue: Any) -> None: ...


class _Continue(Effect):
    """Pump another round: the deliveries before it have run, so credit is current again."""
    __slots__ = ()

    def run(self, queue: Any) -> None:
        queue._pump()


#: the one :class:`_Continue` effect (it carries no state)
CONTINUE = _Continue()


def consumer_priority(consumer: Consumer) -> int:
    """The ``x-priority`` consumer argument (0 when absent)."""
    priority = consumer.arguments.get("x-priority", 0) if consumer.arguments else 0
    return priority if isinstance(priority, int) and not isinstance(priority, bool) else 0


class Queue(QueueReady, QueuePaging, QueueDeadLetters, QueueReceives):
    is_exchange = False

    def __init__(self, host: QueueHost, vhost: str, name: str, *, durable: bool = False,
                 exclusive_owner: Any = None, auto_delete: bool = False,
                 arguments: dict | None = None, consumer_timeout_ms: int = 0,
                 log: Log | None = None, resident_bytes: int | None = None,
                 memory: Any = None, spill_log: Any = None):
        self.host = host
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = dict(arguments or {})
        self.log = log
        #: settings applied after declaration (RabbitMQ's policies; SQS queue attributes): they
        #: override the arguments but take no part in the redeclare equivalence check
        self.policy: dict = {}
        self._default_consumer_timeout_ms = consumer_timeout_ms
        self._resident_bytes_setting = resident_bytes
        validate_arguments(name, vhost, self.arguments)
        #: "classic" or "quorum": a quorum queue is a classic one with RabbitMQ's quorum-queue
        #: delivery limit default and at-least-once dead-lettering (adapters/amqp/MAPPING.md)
        self.kind: str = self.arguments.get("x-queue-type", "classic")
        #: dead-lettered messages no queue has taken yet: (retry at ms, entry, message, reason)
        self._dead_letter_held: deque[tuple[int, Entry, Message, str]] = deque()
        self.max_priority: int = self.arguments.get("x-max-priority") or 0
        #: round-robin position per consumer priority (x-priority consumer argument)
        self._rr_by_priority: dict[int, int] = {}
        self._configure()
        self.resident_bytes = 0
        #: the broker's MemoryBudget (or None): told about every resident body byte
        self.memory = memory
        #: opens the log transient messages are paged out to (None: they stay in memory)
        self._open_spill = spill_log
        self.spill: Log | None = None

        self._next_id = 1
        self._fresh: list[deque[Entry]] = [deque() for _ in range(self.max_priority + 1)]
        self._returned: list[tuple[int, int, Entry]] = []
        self._expiries: list[tuple[int, int, Entry]] = []
        self._delayed: list[tuple[int, int, Entry]] = []
        self._timeouts: list[tuple[int, int, Delivery]] = []
        self._timeout_seq = 0
        self.ready_count = 0
        #: ready messages waiting in cold runs (no entry object; see coldrun.py)
        self.cold_count = 0
        self.ready_bytes = 0
        self.unacked_count = 0
        self.delayed_count = 0
        #: cumulative counters read by the management API and /metrics (rates are their deltas)
        self.published_total = 0
        self.delivered_total = 0
        self.acked_total = 0
        self.consumers: list[Consumer] = []
        self._rr = 0
        self._had_consumers = False
        self.deleted = False
        #: consumer-less deliveries with a deadline (``receive``), by message id
        self._leases: dict[int, Delivery] = {}
        #: callables waiting for a message to become ready (long polls), woken one per message
        self._ready_listeners: deque = deque()
        self.grouped: MessageGroups | None = None
        self._set_grouped(bool(self.arguments.get("x-message-groups")))
        #: effects waiting to run: store writes (run first, and before any store read), then
        #: the others in order; ``_running`` while a run is going on further up the stack
        self._writes: list[Effect] = []
        self._effects: deque[Any] = deque()
        self._running = False
        self.last_used_ms = host.now_ms()
        if self.expires_ms:
            host.schedule(self, self.last_used_ms + self.expires_ms)

    def _configure(self) -> None:
        args = {**self.arguments, **self.policy}
        self.message_ttl: int | None = args.get("x-message-ttl")
        self.expires_ms: int | None = args.get("x-expires")
        self.max_length: int | None = args.get("x-max-length")
        self.max_length_bytes: int | None = args.get("x-max-length-bytes")
        self.overflow: str = args.get("x-overflow", "drop-head")
        self.dlx: str | None = args.get("x-dead-letter-exchange")
        self.dlrk: str | None = args.get("x-dead-letter-routing-key")
        reasons = args.get("x-dead-letter-reasons")
        #: why a message may be dead-lettered (None: for every reason, as in RabbitMQ)
        self.dead_letter_reasons: frozenset | None = None if reasons is None else frozenset(reasons)
        limit = args.get("x-delivery-limit")
        if limit is None and self.kind == "quorum":
            limit = QUORUM_DELIVERY_LIMIT
        self.delivery_limit: int | None = None if limit is None or limit < 0 else limit
        # RabbitMQ: at-least-once dead-lettering is for quorum queues with reject-publish
        # overflow (else the source could not hold messages the targets have not taken yet).
        self.dead_letter_at_least_once = (
            self.kind == "quorum" and args.get("x-dead-letter-strategy") == "at-least-once" and
            self.overflow == "reject-publish")
        self.delay_ms: int = args.get("x-delay") or 0
        # x-single-active-consumer: only the oldest consumer gets messages; the next takes over
        # when it goes (ordered processing with failover, RabbitMQ's SAC).
        self.single_active: bool = bool(args.get("x-single-active-consumer", False))
        timeout = args.get("x-consumer-timeout")
        self.consumer_timeout_ms: int = (self._default_consumer_timeout_ms if timeout is None
                                         else timeout)
        # Past this many bytes of ready bodies in memory, bodies that are safely on disk leave
        # memory (RabbitMQ's lazy mode is the limit 0); None keeps everything resident.
        self.resident_limit: int | None = (0 if args.get("x-queue-mode") == "lazy"
                                           else self._resident_bytes_setting)

    def _set_grouped(self, grouped: bool) -> None:
        if grouped and self.grouped is None:
            self.grouped = MessageGroups()
        elif not grouped:
            self.grouped = None

    def set_policy(self, policy: dict) -> None:
        """Replace the policy (validated like arguments). ``x-message-groups`` changes only while
        the queue is empty (it chooses the queue's structures); ``x-max-priority`` never does."""
        validate_arguments(self.name, self.vhost, {**self.arguments, **policy})
        grouped = bool({**self.arguments, **policy}.get("x-message-groups"))
        if grouped != (self.grouped is not None) and (
                self.ready_count or self.unacked_count or self.delayed_count):
            raise PreconditionFailed(f"queue '{self.name}' in vhost '{self.vhost}': message "
                                     "grouping cannot change while the queue holds messages")
        self.policy = dict(policy)
        old_ttl = self.message_ttl
        self._configure()
        self._set_grouped(bool({**self.arguments, **self.policy}.get("x-message-groups")))
        if self.message_ttl != old_ttl:
            self._retime(old_ttl)  # (SQS: a new MessageRetentionPeriod holds for every message)
        if self.expires_ms and not self.consumers:
            self._effects.append(Timer(self.last_used_ms + self.expires_ms))
        self._trim()
        self._run()

    # ---------------------------------------------------------------- the machine
    def apply(self, command: Command) -> tuple[Any, list]:
        """Run ``command`` against the queue's state. Returns its reply and the effects the
        caller must run, in order, with :meth:`run` (store writes that a store read in the same
        command had to see have run already: writes never call back into the queue)."""
        reply = _HANDLERS[command.__class__](self, command)
        effects = self._writes + list(self._effects)
        self._writes = []
        self._effects.clear()
        return reply, effects

    def run(self, effects: list) -> None:
        """Run what :meth:`apply` returned: store writes first, then the rest in order (behind
        any effects already running, if this is called from one of them)."""
        for effect in effects:
            if effect.__class__ in STORE_WRITES:
                effect.run(self)
        self._effects.extend(e for e in effects if e.__class__ not in STORE_WRITES)
        self._run()

    def _flush_writes(self) -> None:
        writes = self._writes
        if writes:
            self._writes = []
            for write in writes:
                write.run(self)

    def _run(self) -> None:
        """Run the pending effects, unless a run further up the stack will (it picks up effects
        added meanwhile, in order, after the ones it holds)."""
        writes = self._writes
        if writes:  # (_flush_writes, inlined: once per command)
            self._writes = []
            for write in writes:
                write.run(self)
        if self._running:
            return
        effects = self._effects
        if not effects:
            return
        self._running = True
        try:
            # Commands the effects lead to append theirs at the tail: they run after these.
            while effects:
                effect = effects.popleft()
                if effect.__class__ is Delivery:
                    consumer = effect.consumer
                    if consumer.queue is self:
                        consumer.deliver(effect)
                    else:  # the consumer left after its checkout: the message goes back
                        self._settle(effect, False, True)
                else:
                    effect.run(self)
                if self._writes:
                    self._flush_writes()
        finally:
            self._running = False

    # ---------------------------------------------------------------- introspection
    @property
    def message_count(self) -> int:
        """Ready messages (what AMQP Queue.DeclareOk reports)."""
        return self.ready_count

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def check_owner(self, owner: Any) -> None:
        if self.exclusive_owner is not None and self.exclusive_owner is not owner:
            raise ResourceLocked(
                f"cannot obtain exclusive access to locked queue '{self.name}' in vhost "
                f"'{self.vhost}'. It could be originally declared on another connection or the "
                "exclusive property value does not match that of the original declaration.")

    def touch(self) -> None:
        self.last_used_ms = self.host.now_ms()

    def next_deadline(self) -> int | None:
        deadlines = [heap[0][0] for heap in (self._delayed, self._expiries, self._timeouts,
                                             self._dead_letter_held) if heap]
        if self.expires_ms and not self.consumers:
            deadlines.append(self.last_used_ms + self.expires_ms)
        return min(deadlines) if deadlines else None

    # ---------------------------------------------------------------- public commands
    # Thin wrappers: the handler, then the effects. The hot ones call the handler directly
    # rather than building a command object.
    def enqueue(self, message: Message) -> bool | Awaitable[None]:
        """Take a message. Returns False if refused (overflow reject-publish), True if taken, or
        an awaitable that resolves once the message is on disk (durable queue, persistent message)."""
        reply = self._enqueue(message)
        if self._writes or self._effects:
            self._run()
        if reply.__class__ is bool:
            return reply  # type: ignore[return-value]
        return reply.result or True  # type: ignore[union-attr]

    def settle(self, delivery: Delivery, ack: bool, requeue: bool, pump: bool = True) -> bool:
        """Ack, requeue or drop one delivery. ``pump=False`` when returning several at once:
        the caller pumps after the last, so they are redelivered in their old order."""
        reply = self._settle(delivery, ack, requeue, pump)
        if self._writes or self._effects:
            self._run()
        return reply

    def settle_many(self, deliveries: list[Delivery], ack: bool, requeue: bool) -> None:
        """Settle several deliveries of this queue at once (an AMQP ``multiple`` ack, a STOMP
        cumulative ack): one command per delivery, then one pump and one run of the effects, so
        a requeued batch is redelivered in its old order."""
        for delivery in deliveries:
            self._settle(delivery, ack, requeue, False)
        if self.ready_count and self.consumers and not self.deleted:
            self._pump()
        if self._writes or self._effects:
            self._run()

    def pump(self) -> None:
        """Hand ready messages to consumers with credit, round robin (the Credit command)."""
        self._pump()
        self._run()

    def add_consumer(self, consumer: Consumer) -> None:
        self._attach(consumer)
        self._run()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Stop delivering to ``consumer``. Its unsettled deliveries stay out until settled or
        rejected by the adapter (AMQP keeps them on the channel after Basic.Cancel)."""
        self._detach(consumer)
        self._run()

    def get(self, no_ack: bool) -> Delivery | None:
        """AMQP Basic.Get / SQS ReceiveMessage without a consumer."""
        return self._call(Get(no_ack))

    def receive(self, max_count: int, visibility_ms: int, kept: bool = True) -> list[Delivery]:
        """Check out up to ``max_count`` ready messages without a consumer, each returning to the
        queue after ``visibility_ms`` unless settled (SQS ReceiveMessage; the receiver names them
        later by message id, see :meth:`lease`). In a grouped queue it takes as many messages of
        one group as it can, in order, before it moves on to the next group (as SQS does).
        ``kept``: a restart keeps the leases (else their messages are visible after one)."""
        return self._call(Receive(max_count, visibility_ms, kept))

    def change_deadline(self, delivery: Delivery, timeout_ms: int) -> bool:
        """Move an unsettled delivery's return deadline to ``timeout_ms`` from now (0 returns it
        at once). False if it was already settled."""
        return self._call(ChangeDeadline(delivery, timeout_ms))

    def withdraw(self, msg_id: int) -> bool:
        """Remove message ``msg_id`` for good, whether leased or ready (a delete naming a message
        whose lease was lost, e.g. by a restart). A scan over the ready messages: rare path."""
        return self._call(Withdraw(msg_id))

    def tick(self) -> None:
        """Run what is due: delayed -> ready, TTL expiry, consumer timeouts, queue expiry."""
        self._tick()
        self._run()

    def purge(self) -> int:
        """Drop every ready message (not unacked or delayed ones, as in RabbitMQ)."""
        return self._call(Purge())

    def purge_all(self) -> int:
        """Drop ready, delayed and leased (received, in-flight) messages, as SQS's PurgeQueue
        does; deliveries to consumers stay theirs to settle. Returns how many went."""
        return self._call(Purge(everything=True))

    def delete(self) -> int:
        """Mark deleted; returns the ready count. Consumers are told by the vhost."""
        return self._call(Delete())

    def page_out(self) -> int:
        """Memory is short (the alarm went on): let go of every ready body that can be read
        back, writing transient ones to the spill log first. Returns the bytes let go."""
        return self._call(PageOut())

    def recover(self) -> int:
        """Reload what the log holds unsettled after a restart (see QueuePaging._recover)."""
        count = self._recover()
        self._run()
        return count

    def lease(self, msg_id: int) -> Delivery | None:
        """The unsettled :meth:`receive` delivery of message ``msg_id``, if any."""
        return self._leases.get(msg_id)

    def add_ready_listener(self, listener: Any) -> None:
        """Call ``listener()`` once, when a message next becomes ready (one listener per message,
        in the order they were added). Remove it with :meth:`remove_ready_listener` if unused."""
        self._ready_listeners.append(listener)

    def remove_ready_listener(self, listener: Any) -> None:
        try:
            self._ready_listeners.remove(listener)
        except ValueError:
            pass

    def _call(self, command: Command) -> Any:
        reply = _HANDLERS[command.__class__](self, command)
        self._run()
        return reply

    def _on_written(self, entry: Entry, written: Any) -> None:
        self._written(entry, written)
        self._run()

    # ---------------------------------------------------------------- enqueue
    def _enqueue(self, message: Message) -> bool | Append:
        if self.max_length is not None or self.max_length_bytes is not None:
            if self._full(len(message.body)) and self.overflow != "drop-head":
                if self.overflow == "reject-publish-dlx" and self._dead_letters("maxlen"):
                    self._effects.append(DeadLetter(None, message, "maxlen"))
                return False
        props = message.properties
        priority = 0
        if self.max_priority:
            priority = min(props.priority or 0, self.max_priority)
        entry = Entry(self._next_id, message, priority)
        self._next_id += 1
        self.published_total += 1
        self._arrived(entry)
        if self.grouped is not None:
            entry.group = props.headers.get(GROUP_HEADER) if props.headers else None
        ttl = (self._ttl_of(message) if self.message_ttl is not None or
               props.expiration is not None else None)
        reply: bool | Append = True
        if self.log is not None and props.delivery_mode == 2:
            entry.on_disk = True
            # A per-message expiration is inside the message: recovery must read it even past
            # the resident budget, or the message would outlive its TTL after a restart.
            flags = FLAG_READ_ON_RECOVERY if props.expiration is not None else 0
            reply = Append(self.log, entry.msg_id, encode_message(message), flags)
            self._writes.append(reply)
        delay = self.delay_ms
        headers = props.headers
        if headers and "x-delay" in headers:
            try:
                delay = max(0, int(headers["x-delay"]))
            except (TypeError, ValueError):
                pass
        if ttl is not None or delay:
            now = self.host.now_ms()  # only messages with deadlines pay for the clock
            if ttl is not None:
                entry.expires_at = now + delay + ttl
        if delay:
            entry.state = DELAYED
            entry.ready_at = now + delay
            self.delayed_count += 1
            heapq.heappush(self._delayed, (entry.ready_at, entry.msg_id, entry))
            self._effects.append(Timer(entry.ready_at))
            return reply
        if ttl == 0 and not self._can_deliver_now():
            # RabbitMQ: a zero TTL message is delivered only if a consumer can take it right now.
            self._drop(entry, "expired")
            return reply
        if not self.ready_count and self.consumers and self.grouped is None:
            # Nothing waiting ahead of it: hand it straight to a consumer with credit.
            consumer = self._pick_consumer()
            if consumer is not None:
                self._checkout(entry, consumer)
                return reply
        if self._may_freeze(entry) and (entry.on_disk or self._spill_out(entry.msg_id, message)):
            self._release(entry)  # a cold message is 12 bytes in a run, not an entry
            self._freeze(entry.msg_id, entry.size, 0, not entry.on_disk)
            if self.consumers:
                self._pump()
            self._trim()
            return reply
        self._push_ready(entry, False)
        self._became_ready(entry)
        if self.consumers:
            self._pump()
        self._trim()
        if (entry.on_disk and self.resident_limit is not None and entry.state == READY and
                self.resident_bytes > self.resident_limit):
            # Once its write completed, the body can be read back from disk: let it go.
            reply.then = lambda written, e=entry: self._on_written(e, written)  # type: ignore
        return reply

    def _ttl_of(self, message: Message) -> int | None:
        """The queue's TTL or the message's own ``expiration``, whichever is shorter."""
        ttl = self.message_ttl
        per_message = parse_expiration(message.properties.expiration)
        if per_message is not None:
            ttl = per_message if ttl is None else min(ttl, per_message)
        return ttl

    def _can_deliver_now(self) -> bool:
        return any(c.has_credit() for c in self.consumers)

    # ---------------------------------------------------------------- checkout
    def _pick_consumer(self) -> Consumer | None:
        """The next consumer with credit: the single active one; else among the highest
        ``x-priority`` consumers that have credit, round robin (RabbitMQ consumer priorities)."""
        consumers = self.consumers
        if self.single_active:
            active = consumers[0]
            return active if active.has_credit() else None
        n = len(consumers)
        if n == 1:
            return consumers[0] if consumers[0].has_credit() else None
        if consumer_priority(consumers[0]) == consumer_priority(consumers[-1]):
            for k in range(n):  # one priority level: plain round robin
                candidate = consumers[(self._rr + k) % n]
                if candidate.has_credit():
                    self._rr = (self._rr + k + 1) % n
                    return candidate
            return None
        start = 0
        while start < n:  # consumers are kept sorted by priority, highest first
            level = consumer_priority(consumers[start])
            end = start
            while end < n and consumer_priority(consumers[end]) == level:
                end += 1
            size = end - start
            rr = self._rr_by_priority.get(level, 0)
            for k in range(size):
                candidate = consumers[start + (rr + k) % size]
                if candidate.has_credit():
                    self._rr_by_priority[level] = (rr + k + 1) % size
                    return candidate
            start = end
        return None

    def _pump(self) -> None:
        """One round: at most one message per consumer, then CONTINUE if more could go (a
        consumer's credit may depend on what its deliveries do to it: MQTT's in-flight window,
        the connection's output buffer)."""
        if self.deleted:
            return
        served: list[Consumer] = []
        while self.ready_count and self.consumers:
            chosen = self._pick_consumer()
            if chosen is None:
                return
            if chosen in served:  # its credit is current only once its delivery has run
                self._effects.append(CONTINUE)
                return
            entry = self._next_live()
            if entry is None:
                return
            self._checkout(entry, chosen)
            served.append(chosen)

    def _next_live(self, prefer: Any = NO_GROUP) -> Entry | None:
        """The next ready entry that has not expired (expired ones are dead-lettered on the way)."""
        while True:
            entry = self._take_head(prefer=prefer)
            if entry is None:
                return None
            # Strictly past: a zero-TTL message may still go to a consumer in the same instant.
            if entry.expires_at and entry.expires_at < self.host.now_ms():
                self._drop(entry, "expired")
                continue
            return entry

    def _checkout(self, entry: Entry, consumer: Consumer | None) -> Delivery:
        if entry.message is None:
            self._load(entry)
        entry.delivery_count += 1
        self.delivered_total += 1
        redelivered = entry.delivery_count > 1
        if consumer is None or not consumer.no_ack:
            entry.state = UNACKED
            self.unacked_count += 1
            if self.grouped is not None:
                self.grouped.lock(entry.group)
            delivery = Delivery(self, entry, consumer, redelivered)
            if consumer is not None:
                consumer.in_flight += 1
                if self.consumer_timeout_ms:
                    self._set_deadline(delivery, self.host.now_ms() + self.consumer_timeout_ms)
        else:
            delivery = Delivery(self, entry, consumer, redelivered, settled=True)
            self._forget(entry)
        if consumer is not None:
            self._effects.append(delivery)
        return delivery

    def _set_deadline(self, delivery: Delivery, deadline: int) -> None:
        """Return ``delivery`` to the queue at ``deadline`` unless settled before; a later call
        replaces the deadline (the heap keeps the old item, skipped when it comes up)."""
        delivery.deadline = deadline
        self._timeout_seq += 1
        timeouts = self._timeouts
        if not timeouts or deadline < timeouts[0][0]:
            # Only a new earliest deadline needs a timer: the heap's earliest has one (asked
            # for when it was pushed), and the Tick it brings asks for the next deadline. With
            # one consumer timeout, deadlines only grow: one timer, not one per delivery.
            self._effects.append(Timer(deadline))
        heapq.heappush(timeouts, (deadline, self._timeout_seq, delivery))

    def _get(self, no_ack: bool) -> Delivery | None:
        self.touch()
        entry = self._next_live()
        if entry is None:
            return None
        delivery = self._checkout(entry, None)
        if no_ack:
            delivery.settled = True
            self.unacked_count -= 1
            self._forget(entry)
        return delivery

    # ---------------------------------------------------------------- settle
    def _settle(self, delivery: Delivery, ack: bool, requeue: bool, pump: bool = True) -> bool:
        """Settle (ack), return (requeue) or discard one delivery."""
        if delivery.settled:
            return False
        delivery.settled = True
        entry = delivery.entry
        self.unacked_count -= 1
        consumer = delivery.consumer
        if consumer is not None:
            consumer.in_flight -= 1
        elif self._leases.get(entry.msg_id) is delivery:
            del self._leases[entry.msg_id]
        if self.grouped is not None:
            self.grouped.unlock(entry.group)
        # Settled deliveries stay in the timeout heap until their deadline (30 min by default),
        # keeping their messages alive; drop them once they are the majority (amortised O(1)).
        if len(self._timeouts) > 2 * self.unacked_count + 64:
            self._timeouts = [t for t in self._timeouts if not t[2].settled]
            heapq.heapify(self._timeouts)
        if ack:
            entry.state = GONE
            self.acked_total += 1
            self._forget(entry)
        elif requeue:
            if consumer is None or self.delivery_limit is not None:
                self._mark(entry, 0)  # the count a restart must keep (queue_receives.py)
            self._return(entry)
        else:
            self._drop(entry, "rejected")
        if pump and self.ready_count and self.consumers and not self.deleted:
            self._pump()
        return True

    def _return(self, entry: Entry) -> None:
        entry.returns += 1
        if self.delivery_limit is not None and entry.returns > self.delivery_limit:
            self._drop(entry, "delivery_limit")
            return
        if self.deleted:
            return
        self._push_ready(entry, True)
        self._became_ready(entry)
        self._trim()

    def _forget(self, entry: Entry) -> None:
        """The entry leaves the queue for good: out of the memory count, settled on disk."""
        self._release(entry)
        if entry.on_disk:
            writes = self._writes
            if writes and writes[-1].__class__ is Remove and writes[-1].log is self.log:
                writes[-1].ids.append(entry.msg_id)  # (an ack of many: one effect)
            else:
                writes.append(Remove(self.log, entry.msg_id))

    # ---------------------------------------------------------------- consumers
    def _attach(self, consumer: Consumer) -> None:
        if consumer.exclusive and self.consumers:
            raise ResourceLocked(f"queue '{self.name}' in vhost '{self.vhost}' in exclusive use")
        if any(c.exclusive for c in self.consumers):
            raise ResourceLocked(f"queue '{self.name}' in vhost '{self.vhost}' in exclusive use")
        priority = consumer_priority(consumer)
        consumer.queue = self
        # Sorted by priority, highest first; arrival order within a priority (and for SAC).
        index = len(self.consumers)
        if not self.single_active:
            while index and consumer_priority(self.consumers[index - 1]) < priority:
                index -= 1
        self.consumers.insert(index, consumer)
        self._had_consumers = True
        self.touch()
        self._pump()

    def _detach(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            consumer.queue = None  # deliveries checked out to it and not yet run come back
            self._rr = 0
            if self.consumers:
                # A single-active consumer's successor takes over, on the next turn of the loop:
                # the adapter first returns what the old one held, so order is kept.
                self._effects.append(Timer(self.host.now_ms()))
        self.touch()
        if self.auto_delete and self._had_consumers and not self.consumers:
            self._effects.append(Unused())
        elif self.expires_ms and not self.consumers:
            self._effects.append(Timer(self.last_used_ms + self.expires_ms))

    # ---------------------------------------------------------------- time
    def _tick(self) -> None:
        now = self.host.now_ms()
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, entry = heapq.heappop(delayed)
            if entry.state == DELAYED:
                self.delayed_count -= 1
                self._push_ready(entry, True)
                self._became_ready(entry)
                self._trim()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, _, entry = heapq.heappop(expiries)
            if entry.state == READY and 0 < entry.expires_at <= now:
                self._unready(entry)
                self._drop(entry, "expired")
                entry.message = None  # it may wait in a deque until the head reaches it
        self._retry_dead_letters(now)
        timeouts = self._timeouts
        while timeouts and timeouts[0][0] <= now:
            deadline, _, delivery = heapq.heappop(timeouts)
            if not delivery.settled and delivery.deadline == deadline:
                self._settle(delivery, False, True)
                if delivery.consumer is not None:
                    self._effects.append(TimedOut(delivery))
        if (self.expires_ms and not self.consumers and
                now - self.last_used_ms >= self.expires_ms):
            self._effects.append(Unused())
            return
        if self.consumers:
            self._pump()
        nxt = self.next_deadline()
        if nxt is not None:
            self._effects.append(Timer(nxt))

    # ---------------------------------------------------------------- bulk
    def _purge(self, everything: bool) -> int:
        count = self._purge_ready()
        if not everything:
            return count
        for delivery in list(self._leases.values()):
            if self._settle(delivery, True, False):
                count += 1
        delayed, self._delayed = self._delayed, []
        for _, _, entry in delayed:
            if entry.state == DELAYED:
                entry.state = GONE
                self.delayed_count -= 1
                self._forget(entry)
                count += 1
        return count

    def _delete(self) -> int:
        count = self.ready_count
        self._purge_ready()
        for _, _, entry in self._delayed:
            if entry.state == DELAYED:
                self._release(entry)  # gone with the queue (unacked ones go when settled)
        self.deleted = True
        while self._ready_listeners:  # long polls end now
            self._wake_one()
        return count


_HANDLERS: dict[type, Any] = {
    Enqueue: lambda q, c: q._enqueue(c.message),
    Checkout: lambda q, c: q._attach(c.consumer),
    Cancel: lambda q, c: q._detach(c.consumer),
    Credit: lambda q, c: q._pump(),
    Settle: lambda q, c: q._settle(c.delivery, True, False),
    Return: lambda q, c: q._settle(c.delivery, False, True, c.pump),
    Discard: lambda q, c: q._settle(c.delivery, False, False),
    Get: lambda q, c: q._get(c.no_ack),
    Receive: lambda q, c: q._receive(c.max_count, c.visibility_ms, c.kept),
    ChangeDeadline: lambda q, c: q._change_deadline(c.delivery, c.timeout_ms),
    Withdraw: lambda q, c: q._withdraw(c.msg_id),
    Tick: lambda q, c: q._tick(),
    Purge: lambda q, c: q._purge(c.everything),
    Delete: lambda q, c: q._delete(),
    PageOut: lambda q, c: q._page_out_all(),
}
