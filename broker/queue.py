"""A work queue (SQS / RabbitMQ classic semantics): one consumer per message, acks, redelivery.

The queue is a state machine over entries; it never touches the event loop or the network. Time is
read from ``host.now_ms()``, future work is requested with ``host.schedule(queue, when_ms)`` (the
host then calls :meth:`Queue.tick`), and effects on other objects go through the host:
``dead_letter`` (republish with an ``x-death`` record) and ``queue_unused`` (auto-delete/expiry).
Model: RabbitMQ ``rabbit_fifo.erl`` (enqueue, checkout, settle, return, discard).

Order: ready messages leave in arrival order within a priority; a returned message (nack/requeue,
consumer gone, timeout) goes back to its original place, because ``_returned`` is a heap ordered
by (priority, arrival id) consulted before the fresh tail.
"""
from __future__ import annotations

import heapq
import logging
from collections import deque
from typing import Any, Awaitable, Iterable, Protocol

from manifold.persistence.records import FLAG_READ_ON_RECOVERY

from .coldrun import ColdRun
from .consumer import Consumer, Delivery
from .errors import PreconditionFailed, ResourceLocked
from .groups import NO_GROUP, MessageGroups
from .message import Message
from .message_codec import decode_message, encode_message

log = logging.getLogger("manifold.queue")

READY, DELAYED, UNACKED, GONE = range(4)
#: what an ordinary entry costs in memory besides its body (Entry, Message, Properties, its
#: index, heap and deque slots, allocator slack), measured with 64-byte bodies; counted against
#: the resident budget and by the memory alarm for every message the queue holds in memory
ENTRY_OVERHEAD_BYTES = 400
#: past this share of the memory high-water mark, queues page new messages out to disk
PAGING_RATIO = 0.5
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum", "stream")
DEAD_LETTER_STRATEGIES = ("at-most-once", "at-least-once")
# RabbitMQ 4.x quorum queues dead-letter a message after 20 returns unless x-delivery-limit says
# otherwise (-1: no limit).
QUORUM_DELIVERY_LIMIT = 20
# At-least-once dead-lettering: how long a message that no dead-letter queue took waits in its
# source queue before it is offered again.
DEAD_LETTER_RETRY_MS = 5_000
# Arguments that RabbitMQ checks for equivalence on redeclare, plus Manifold's.
#: header naming a message's group in queues with ``x-message-groups`` (SQS FIFO MessageGroupId)
GROUP_HEADER = "x-message-group-id"
DEAD_LETTER_REASONS = ("rejected", "expired", "maxlen", "delivery_limit")
INTEGER_ARGUMENTS = ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                     "x-max-priority", "x-delivery-limit", "x-consumer-timeout", "x-delay")


class QueueHost(Protocol):
    def now_ms(self) -> int: ...
    def schedule(self, queue: Any, when_ms: int) -> None: ...
    def dead_letter(self, queue: Any, message: Message, reason: str) -> bool | Any: ...
    def queue_unused(self, queue: Any) -> None: ...


class QueueLog(Protocol):
    """The slice of ``persistence`` a durable queue writes through (see persistence/store.py)."""
    def append(self, msg_id: int, data: bytes, flags: int = 0) -> Awaitable[None] | None: ...
    def settle(self, msg_id: int) -> None: ...
    def recover(self, resident_bytes: int | None = None) -> Iterable[tuple[int, bytes | int]]: ...
    def read(self, msg_id: int) -> bytes: ...


def _ignore_result(future: Any) -> None:
    """Retrieve a spill write's outcome (a failure only loses a transient message's copy: the
    queue finds it missing when it reaches the head)."""
    if not future.cancelled():
        future.exception()


class Entry:
    """One message in one queue. ``message`` is None while the body lives only on disk (paged
    out); ``on_disk`` says the queue's log holds it (a persistent message in a durable queue)."""
    __slots__ = ("msg_id", "message", "priority", "size", "state", "delivery_count", "counted",
                 "expires_at", "ready_at", "returns", "on_disk", "group", "first_delivered_ms",
                 "spilled")

    def __init__(self, msg_id: int, message: Message | None, priority: int, size: int = -1):
        self.msg_id = msg_id
        self.message = message
        self.priority = priority
        self.size = len(message.body) if message is not None else size
        self.on_disk = False
        #: counted in the memory alarm (from arrival until it leaves the queue for good)
        self.counted = False
        self.state = READY
        self.delivery_count = 0
        self.expires_at = 0
        self.ready_at = 0
        self.returns = 0
        #: the message group (``x-message-group-id`` header) in a grouped queue, else None
        self.group: Any = None
        self.first_delivered_ms = 0
        #: a transient message paged out to the queue's spill log under memory pressure
        self.spilled = False

    def __lt__(self, other: "Entry") -> bool:  # heap tie-break
        return self.msg_id < other.msg_id


def _int_argument(queue: str, vhost: str, args: dict, key: str, low: int = 0,
                  high: int | None = None) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise PreconditionFailed(f"invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': "
                                 f"{value!r} must be an integer {bound}")
    return value


def validate_arguments(name: str, vhost: str, args: dict) -> None:
    for key in INTEGER_ARGUMENTS:
        low = 1 if key == "x-expires" else -1 if key == "x-delivery-limit" else 0
        _int_argument(name, vhost, args, key, low=low,
                      high=255 if key == "x-max-priority" else None)
    strategy = args.get("x-dead-letter-strategy")
    if strategy is not None and strategy not in DEAD_LETTER_STRATEGIES:
        raise PreconditionFailed(f"invalid arg 'x-dead-letter-strategy' for queue '{name}' in "
                                 f"vhost '{vhost}': {strategy!r}; accepted: "
                                 f"{', '.join(DEAD_LETTER_STRATEGIES)}")
    overflow = args.get("x-overflow")
    if overflow is not None and overflow not in OVERFLOW_MODES:
        raise PreconditionFailed(f"invalid arg 'x-overflow' for queue '{name}' in vhost "
                                 f"'{vhost}': {overflow!r}; accepted: {', '.join(OVERFLOW_MODES)}")
    sac = args.get("x-single-active-consumer")
    if sac is not None and not isinstance(sac, bool):
        raise PreconditionFailed(f"invalid arg 'x-single-active-consumer' for queue '{name}' in "
                                 f"vhost '{vhost}': {sac!r}; accepted: true or false")
    reasons = args.get("x-dead-letter-reasons")
    if reasons is not None and (not isinstance(reasons, (list, tuple)) or
                                any(r not in DEAD_LETTER_REASONS for r in reasons)):
        raise PreconditionFailed(f"invalid arg 'x-dead-letter-reasons' for queue '{name}' in "
                                 f"vhost '{vhost}': {reasons!r}; accepted: a list of "
                                 f"{', '.join(DEAD_LETTER_REASONS)}")
    kind = args.get("x-queue-type")
    if kind is not None and kind not in QUEUE_TYPES:
        raise PreconditionFailed(f"invalid arg 'x-queue-type' for queue '{name}' in vhost "
                                 f"'{vhost}': {kind!r}; accepted: {', '.join(QUEUE_TYPES)}")


def consumer_priority(consumer: Consumer) -> int:
    """The ``x-priority`` consumer argument (0 when absent)."""
    priority = consumer.arguments.get("x-priority", 0) if consumer.arguments else 0
    return priority if isinstance(priority, int) and not isinstance(priority, bool) else 0


def parse_expiration(value: Any) -> int | None:
    """AMQP ``expiration`` is a decimal string of milliseconds; anything else is ignored."""
    if value is None:
        return None
    try:
        ttl = int(value)
    except (TypeError, ValueError):
        return None
    return ttl if ttl >= 0 else None


class Queue:
    is_exchange = False

    def __init__(self, host: QueueHost, vhost: str, name: str, *, durable: bool = False,
                 exclusive_owner: Any = None, auto_delete: bool = False,
                 arguments: dict | None = None, consumer_timeout_ms: int = 0,
                 log: QueueLog | None = None, resident_bytes: int | None = None,
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
        self.spill: QueueLog | None = None

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
        self._pumping = False
        self.deleted = False
        #: consumer-less deliveries with a deadline (``receive``), by message id
        self._leases: dict[int, Delivery] = {}
        #: callables waiting for a message to become ready (long polls), woken one per message
        self._ready_listeners: deque = deque()
        self.grouped: MessageGroups | None = None
        self._set_grouped(bool(self.arguments.get("x-message-groups")))
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
        self._configure()
        self._set_grouped(bool({**self.arguments, **self.policy}.get("x-message-groups")))
        if self.expires_ms and not self.consumers:
            self.host.schedule(self, self.last_used_ms + self.expires_ms)
        self._trim()

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

    # ---------------------------------------------------------------- enqueue
    def enqueue(self, message: Message) -> bool | Awaitable[None]:
        """Take a message. Returns False if refused (overflow reject-publish), True if taken, or
        an awaitable that resolves once the message is on disk (durable queue, persistent message)."""
        if self.max_length is not None or self.max_length_bytes is not None:
            if self._full(len(message.body)) and self.overflow != "drop-head":
                if self.overflow == "reject-publish-dlx":
                    self.host.dead_letter(self, message, "maxlen")
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
        ttl = self._ttl_of(message)
        result: bool | Awaitable[None] = True
        if self.log is not None and message.properties.delivery_mode == 2:
            entry.on_disk = True
            # A per-message expiration is inside the message: recovery must read it even past
            # the resident budget, or the message would outlive its TTL after a restart.
            flags = FLAG_READ_ON_RECOVERY if props.expiration is not None else 0
            result = self.log.append(entry.msg_id, encode_message(message), flags) or True
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
            self.host.schedule(self, entry.ready_at)
            return result
        if ttl == 0 and not self._can_deliver_now():
            # RabbitMQ: a zero TTL message is delivered only if a consumer can take it right now.
            self._drop(entry, "expired")
            return result
        if (not self.ready_count and self.consumers and not self._pumping
                and self.grouped is None):
            # Nothing waiting ahead of it: hand it straight to a consumer with credit.
            consumer = self._pick_consumer()
            if consumer is not None:
                self._pumping = True
                try:
                    self._checkout(entry, consumer)
                finally:
                    self._pumping = False
                if self.ready_count:  # the consumer returned something while we held the pump
                    self.pump()
                return result
        if self._may_freeze(entry) and (entry.on_disk or self._spill_out(entry.msg_id, message)):
            self._release(entry)  # a cold message is 12 bytes in a run, not an entry
            self._freeze(entry.msg_id, entry.size, 0, not entry.on_disk)
            if self.consumers:
                self.pump()
            self._trim()
            return result
        self._push_ready(entry, False)
        self._became_ready(entry)
        if self.consumers:
            self.pump()
        self._trim()
        if (entry.on_disk and self.resident_limit is not None and entry.state == READY and
                self.resident_bytes > self.resident_limit and result is not True):
            # Once its write completed, the body can be read back from disk: let it go.
            result.add_done_callback(lambda future, e=entry: self._page_out(e, future))
        return result

    def _may_freeze(self, entry: Entry) -> bool:
        """Whether a new ready message waits as 12 bytes in a cold run (see coldrun.py): its body
        is in the log, the queue is past its resident budget, and nothing about it needs a
        look before delivery."""
        if (self.resident_limit is None or self.max_priority or self.grouped is not None or
                entry.expires_at or (not entry.on_disk and self._open_spill is None)):
            return False
        memory = self.memory
        if memory is not None and memory.high_water_bytes and (
                memory.used_bytes + entry.size > memory.high_water_bytes * PAGING_RATIO):
            # Memory is getting short: new messages wait on disk, well before the alarm would
            # block publishers (RabbitMQ's vm_memory_high_watermark_paging_ratio).
            return True
        return self._over_budget(entry.size)

    def _over_budget(self, size: int) -> bool:
        # An ordinary entry costs its body and some 400 bytes of objects: both count, or a
        # million small messages would all stay "resident" within a 64 MiB budget.
        hot = self.ready_count - self.cold_count
        return (self.resident_bytes + size + hot * ENTRY_OVERHEAD_BYTES >
                self.resident_limit)  # type: ignore[operator]

    def page_out(self) -> int:
        """Memory is short (the alarm went on): let go of every ready body that can be read
        back, writing transient ones to the spill log first. Returns the bytes let go."""
        freed = 0
        entries = [e for q in self._fresh for e in q if e.__class__ is not ColdRun]
        entries += [e for _, _, e in self._returned]
        for entry in entries:
            if entry.state != READY or entry.message is None:
                continue
            if not entry.on_disk:
                if self._open_spill is None or not self._spill_out(entry.msg_id, entry.message):
                    continue
                entry.spilled = True
            elif not self.log.holds(entry.msg_id):  # type: ignore[union-attr]
                continue  # its write failed: the body in memory is the only copy
            entry.message = None
            self._resident(-entry.size)
            self._count(entry, -entry.size)
            freed += entry.size
        return freed

    def _spill_out(self, msg_id: int, message: Message) -> bool:
        """Page a transient message out to the spill log, as RabbitMQ does under memory
        pressure, so a transient backlog does not hold its publishers blocked forever. Nothing
        waits for the write: a transient message promises nothing across a crash."""
        if self.spill is None:
            self.spill = self._open_spill()
            if self.spill is None:
                self._open_spill = None
                return False
        written = self.spill.append(msg_id, encode_message(message))
        if written is not None:
            written.add_done_callback(_ignore_result)
        return True

    def _freeze(self, msg_id: int, size: int, delivery_count: int, spilled: bool = False) -> None:
        fresh = self._fresh[0]
        run = fresh[-1] if fresh else None
        if (run.__class__ is not ColdRun or run.full() or  # type: ignore[union-attr]
                run.delivery_count != delivery_count or  # type: ignore[union-attr]
                run.spilled != spilled):  # type: ignore[union-attr]
            run = ColdRun(delivery_count, spilled)
            fresh.append(run)  # type: ignore[arg-type]
        run.append(msg_id, size)  # type: ignore[union-attr]
        self.cold_count += 1
        if self._ready_listeners:
            self._ready_listeners.popleft()()
        self.ready_count += 1
        self.ready_bytes += size

    def _thaw_head(self, fresh: deque) -> None:
        """Turn the cold run at the head of ``fresh`` into ordinary entries, one at a time."""
        while fresh and fresh[0].__class__ is ColdRun:
            run = fresh[0]
            if not run:
                fresh.popleft()
                continue
            msg_id, size = run.pop()
            self.cold_count -= 1
            if not run:
                fresh.popleft()
            source = self.spill if run.spilled else self.log
            if not source.holds(msg_id):  # type: ignore[union-attr]
                # Its write failed (the publisher was refused): it never joined the queue.
                self.ready_count -= 1
                self.ready_bytes -= size
                continue
            if run.spilled:
                # A transient message comes back into memory and leaves the spill log.
                entry = Entry(msg_id, decode_message(source.read(msg_id)), 0)  # type: ignore
                source.settle(msg_id)  # type: ignore[union-attr]
                self._resident(size)
            else:
                entry = Entry(msg_id, None, 0, size)
                entry.on_disk = True
            entry.state = READY
            entry.delivery_count = run.delivery_count
            self._arrived(entry)
            fresh.appendleft(entry)
            return

    def _page_out(self, entry: Entry, written: Any) -> None:
        if (entry.state == READY and entry.message is not None and not written.cancelled()
                and written.exception() is None):
            entry.message = None
            self._resident(-entry.size)
            self._count(entry, -entry.size)

    def _resident(self, delta: int) -> None:
        """Bytes of ready bodies in memory (what the resident limit pages out)."""
        self.resident_bytes += delta

    def _count(self, entry: Entry, delta: int) -> None:
        """The memory alarm counts every body the queue holds in memory, ready or unacked, plus
        a per-entry overhead, from arrival until the entry leaves for good."""
        if self.memory is not None and entry.counted:
            self.memory.add(delta)

    def _arrived(self, entry: Entry) -> None:
        entry.counted = True
        self._count(entry, ENTRY_OVERHEAD_BYTES + (entry.size if entry.message is not None
                                                   else 0))

    def _release(self, entry: Entry) -> None:
        if entry.counted:
            self._count(entry, -ENTRY_OVERHEAD_BYTES - (entry.size if entry.message is not None
                                                        else 0))
            entry.counted = False

    def _load(self, entry: Entry) -> Message:
        """The entry's message, read back from disk if it was paged out."""
        message = entry.message
        if message is None and entry.spilled:
            message = entry.message = decode_message(self.spill.read(entry.msg_id))  # type: ignore
            self.spill.settle(entry.msg_id)  # type: ignore[union-attr]
            entry.spilled = False
            self._count(entry, entry.size)
            if entry.state == READY:
                self._resident(entry.size)
        elif message is None:
            message = entry.message = decode_message(self.log.read(entry.msg_id))
            self._count(entry, entry.size)
            if entry.state == READY:
                self._resident(entry.size)
        return message

    def _ttl_of(self, message: Message) -> int | None:
        """The queue's TTL or the message's own ``expiration``, whichever is shorter."""
        ttl = self.message_ttl
        per_message = parse_expiration(message.properties.expiration)
        if per_message is not None:
            ttl = per_message if ttl is None else min(ttl, per_message)
        return ttl

    def _can_deliver_now(self) -> bool:
        return any(c.has_credit() for c in self.consumers)

    def _full(self, extra_bytes: int) -> bool:
        # messages held for at-least-once dead-lettering still take room [RabbitMQ]
        count = self.ready_count + len(self._dead_letter_held)
        return ((self.max_length is not None and count >= self.max_length) or
                (self.max_length_bytes is not None and
                 self.ready_bytes + extra_bytes > self.max_length_bytes))

    def _push_ready(self, entry: Entry, returned: bool) -> None:
        """File a ready entry: in its group, or at its arrival place (``returned``: it was out
        before, so it goes before the fresh tail), or at the fresh tail."""
        if self.grouped is not None:
            self.grouped.push(entry)
        elif returned:
            heapq.heappush(self._returned, (-entry.priority, entry.msg_id, entry))
        else:
            self._fresh[entry.priority].append(entry)

    def _became_ready(self, entry: Entry) -> None:
        if self._ready_listeners:
            self._ready_listeners.popleft()()
        entry.state = READY
        self.ready_count += 1
        self.ready_bytes += entry.size
        if entry.message is not None:
            self._resident(entry.size)
        if entry.expires_at:
            heapq.heappush(self._expiries, (entry.expires_at, entry.msg_id, entry))
            self.host.schedule(self, entry.expires_at)

    def _trim(self) -> None:
        """drop-head: the oldest ready messages make room [RabbitMQ x-overflow]."""
        if self.max_length is None and self.max_length_bytes is None:
            return
        while self._over_limit():
            head = self._take_head(ignore_groups=True)
            if head is None:
                break
            self._drop(head, "maxlen")

    def _over_limit(self) -> bool:
        return ((self.max_length is not None and self.ready_count > self.max_length) or
                (self.max_length_bytes is not None and self.ready_bytes > self.max_length_bytes))

    def recover(self) -> int:
        """Reload the messages the log holds unsettled (after a restart), in their old order.
        Past the resident limit, bodies stay on disk and are read when delivered (a priority
        queue reads them all: the priority is inside the message)."""
        if self.log is None:
            return 0
        now = self.host.now_ms()
        # Priorities and groups are inside the message: those queues read every body back.
        # Others read bodies only while within the resident budget (decided here, where the
        # entries' own cost counts too), in queue order; the rest wait on disk.
        everything = self.max_priority or self.grouped is not None or self.resident_limit is None
        records = self.log.recover(None if everything else 0)
        count = 0
        last_id = 0
        run: ColdRun | None = None
        for msg_id, data in records:
            count += 1
            last_id = msg_id
            if isinstance(data, int):  # past the log's budget: the length stands in for it
                size = data
                data = None
                if self.cold_count or self._over_budget(size):
                    if self.message_ttl is None:
                        # Past the resident budget: 12 bytes in a cold run (body on disk);
                        # filed inline, a million of them is most of a long recovery.
                        if run is None or run.full():
                            run = ColdRun(1)
                            self._fresh[0].append(run)  # type: ignore[arg-type]
                        run.append(msg_id, size)
                        self.cold_count += 1
                        self.ready_count += 1
                        self.ready_bytes += size
                        continue
                else:
                    data = self.log.read(msg_id)
            if data is None:
                entry = Entry(msg_id, None, 0, size)
                ttl = self.message_ttl
            else:
                message = decode_message(data)
                priority = min(message.properties.priority or 0, self.max_priority)
                entry = Entry(msg_id, message, priority)
                ttl = self._ttl_of(message)
                if self.grouped is not None and message.properties.headers:
                    entry.group = message.properties.headers.get(GROUP_HEADER)
            entry.on_disk = True
            self._arrived(entry)
            # It may have been delivered before the restart: redelivered=true / DUP, as
            # RabbitMQ marks recovered messages.
            entry.delivery_count = 1
            if ttl is not None:
                entry.expires_at = now + ttl
            self._push_ready(entry, False)
            self._became_ready(entry)
        self._next_id = max(self._next_id, self.log.max_id_seen + 1, last_id + 1)
        return count

    # ---------------------------------------------------------------- dequeue
    def _take_head(self, ignore_groups: bool = False, prefer: Any = NO_GROUP) -> Entry | None:
        """Remove and return the next ready entry (highest priority, then oldest; in a grouped
        queue the next of group ``prefer``, else the oldest head of an unlocked group, or of any
        group with ``ignore_groups``)."""
        if self.grouped is not None:
            entry = (self.grouped.take_oldest_any() if ignore_groups
                     else self.grouped.take(prefer))
            return None if entry is None else self._unready(entry)
        returned = self._returned
        while returned and returned[0][2].state != READY:
            heapq.heappop(returned)
        best_fresh: Entry | None = None
        fresh_queue: deque | None = None
        for q in reversed(self._fresh):
            while q and (q[0].__class__ is ColdRun or q[0].state != READY):
                if q[0].__class__ is ColdRun:
                    self._thaw_head(q)
                else:
                    q.popleft()
            if q:
                best_fresh, fresh_queue = q[0], q
                break
        if returned:
            neg_prio, msg_id, entry = returned[0]
            if best_fresh is None or (-neg_prio, -msg_id) > (best_fresh.priority, -best_fresh.msg_id):
                heapq.heappop(returned)
                best_fresh = None
                return self._unready(entry)
        if best_fresh is None:
            return None
        fresh_queue.popleft()
        return self._unready(best_fresh)

    def _unready(self, entry: Entry) -> Entry:
        entry.state = GONE
        self.ready_count -= 1
        self.ready_bytes -= entry.size
        if entry.message is not None:
            self._resident(-entry.size)
        # Entries that left the queue stay in the expiry heap until their deadline, keeping their
        # messages alive; drop them once they are the majority (amortised O(1)).
        if len(self._expiries) > 2 * self.ready_count + 64:
            self._expiries = [t for t in self._expiries if t[2].state == READY]
            heapq.heapify(self._expiries)
        return entry

    def _pick_consumer(self) -> Consumer | None:
        """The next consumer with credit: the single active one; else among the highest
        ``x-priority`` consumers that have credit, round robin (RabbitMQ consumer priorities)."""
        consumers = self.consumers
        if self.single_active:
            active = consumers[0]
            return active if active.has_credit() else None
        n = len(consumers)
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

    def pump(self) -> None:
        """Hand ready messages to consumers with credit, round robin."""
        if self._pumping or self.deleted:
            return
        self._pumping = True
        try:
            while self.ready_count and self.consumers:
                chosen = self._pick_consumer()
                if chosen is None:
                    return
                entry = self._next_live()
                if entry is None:
                    return
                self._checkout(entry, chosen)
        finally:
            self._pumping = False

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
            consumer.deliver(delivery)
        return delivery

    def _set_deadline(self, delivery: Delivery, deadline: int) -> None:
        """Return ``delivery`` to the queue at ``deadline`` unless settled before; a later call
        replaces the deadline (the heap keeps the old item, skipped when it comes up)."""
        delivery.deadline = deadline
        self._timeout_seq += 1
        heapq.heappush(self._timeouts, (deadline, self._timeout_seq, delivery))
        self.host.schedule(self, deadline)

    def receive(self, max_count: int, visibility_ms: int) -> list[Delivery]:
        """Check out up to ``max_count`` ready messages without a consumer, each returning to the
        queue after ``visibility_ms`` unless settled (SQS ReceiveMessage; the receiver names them
        later by message id, see :meth:`lease`). In a grouped queue it takes as many messages of
        one group as it can, in order, before it moves on to the next group (as SQS does)."""
        self.touch()
        now = self.host.now_ms()
        taken: list[Delivery] = []
        group = NO_GROUP
        while len(taken) < max_count:
            entry = self._next_live(group)
            if entry is None:
                break
            delivery = self._checkout(entry, None)
            group = entry.group
            if not entry.first_delivered_ms:
                entry.first_delivered_ms = now
            self._leases[entry.msg_id] = delivery
            self._set_deadline(delivery, now + visibility_ms)
            taken.append(delivery)
        return taken

    def lease(self, msg_id: int) -> Delivery | None:
        """The unsettled :meth:`receive` delivery of message ``msg_id``, if any."""
        return self._leases.get(msg_id)

    def change_deadline(self, delivery: Delivery, timeout_ms: int) -> bool:
        """Move an unsettled delivery's return deadline to ``timeout_ms`` from now (0 returns it
        at once). False if it was already settled."""
        if delivery.settled:
            return False
        if timeout_ms <= 0:
            return self.settle(delivery, False, True)
        self._set_deadline(delivery, self.host.now_ms() + timeout_ms)
        return True

    def withdraw(self, msg_id: int) -> bool:
        """Remove message ``msg_id`` for good, whether leased or ready (a delete naming a message
        whose lease was lost, e.g. by a restart). A scan over the ready messages: rare path."""
        delivery = self._leases.get(msg_id)
        if delivery is not None:
            return self.settle(delivery, True, False)
        for run in self._cold_runs():
            size = run.remove(msg_id)
            if size >= 0:
                self.cold_count -= 1
                self.ready_count -= 1
                self.ready_bytes -= size
                (self.spill if run.spilled else self.log).settle(msg_id)  # type: ignore
                return True
        for entry in self._ready_entries():
            if entry.msg_id == msg_id:
                self._unready(entry)
                self._forget(entry)
                return True
        return False

    def add_ready_listener(self, listener: Any) -> None:
        """Call ``listener()`` once, when a message next becomes ready (one listener per message,
        in the order they were added). Remove it with :meth:`remove_ready_listener` if unused."""
        self._ready_listeners.append(listener)

    def remove_ready_listener(self, listener: Any) -> None:
        try:
            self._ready_listeners.remove(listener)
        except ValueError:
            pass

    def get(self, no_ack: bool) -> Delivery | None:
        """AMQP Basic.Get / SQS ReceiveMessage without a consumer."""
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
    def settle(self, delivery: Delivery, ack: bool, requeue: bool, pump: bool = True) -> bool:
        """Ack, requeue or drop one delivery. ``pump=False`` when returning several at once:
        the caller pumps after the last, so they are redelivered in their old order."""
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
            self._return(entry)
        else:
            self._drop(entry, "rejected")
        if pump and self.consumers and not self.deleted:
            self.pump()
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

    def _drop(self, entry: Entry, reason: str) -> None:
        """Discard or dead-letter an entry, whether its body is in memory or only on disk."""
        entry.state = GONE
        if self.dlx is None or (self.dead_letter_reasons is not None
                                and reason not in self.dead_letter_reasons):
            self._forget(entry)
            return
        try:
            message = self._load(entry)  # before the settle: a paged-out body is read back
        except (OSError, KeyError, ValueError) as exc:
            # Unreadable: keep the original on disk (it returns after a restart) rather than
            # settle a message that reached no dead-letter queue.
            log.error("queue '%s': cannot read message %d to dead-letter it: %s", self.name,
                      entry.msg_id, exc)
            self._release(entry)
            return
        copied = self.host.dead_letter(self, message, reason)
        self._release(entry)
        if self.dead_letter_at_least_once:
            self._dead_lettered(entry, message, reason, copied)
        elif not entry.on_disk or copied is True or copied is False:
            self._forget(entry)
        else:
            # The dead-letter copy is durable before the original is settled: a crash between
            # the two leaves the message in both queues, never in neither.
            copied.add_done_callback(lambda done, e=entry: self._copy_stored(e, done))

    def _copy_stored(self, entry: Entry, done: Any) -> None:
        if done.cancelled() or done.exception() is not None:
            log.error("queue '%s': dead-letter copy of message %d not stored; the original "
                      "stays on disk", self.name, entry.msg_id)
            return
        self._forget(entry)

    def _dead_lettered(self, entry: Entry, message: Message, reason: str, copied: Any) -> None:
        """At-least-once [RabbitMQ x-dead-letter-strategy]: the original is settled once a
        dead-letter queue holds the copy (on disk, for durable ones); if none took it (no
        route, a refusal, a failed write) it is held and offered again after
        DEAD_LETTER_RETRY_MS. ``copied`` is what ``host.dead_letter`` returned."""
        if copied is True:
            self._forget(entry)
        elif copied is False:
            self._hold_dead_letter(entry, message, reason)
        else:
            copied.add_done_callback(
                lambda done: self._forget(entry)
                if not done.cancelled() and done.exception() is None
                else self._hold_dead_letter(entry, message, reason))

    def _hold_dead_letter(self, entry: Entry, message: Message, reason: str) -> None:
        if self.deleted:
            return
        retry_at = self.host.now_ms() + DEAD_LETTER_RETRY_MS
        self._dead_letter_held.append((retry_at, entry, message, reason))
        self.host.schedule(self, retry_at)

    def _forget(self, entry: Entry) -> None:
        """The entry leaves the queue for good: out of the memory count, settled on disk."""
        self._release(entry)
        if entry.on_disk:
            self.log.settle(entry.msg_id)

    # ---------------------------------------------------------------- consumers
    def add_consumer(self, consumer: Consumer) -> None:
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
        self.pump()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Stop delivering to ``consumer``. Its unsettled deliveries stay out until settled or
        rejected by the adapter (AMQP keeps them on the channel after Basic.Cancel)."""
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            self._rr = 0
            if self.consumers:
                # A single-active consumer's successor takes over, on the next turn of the loop:
                # the adapter first returns what the old one held, so order is kept.
                self.host.schedule(self, self.host.now_ms())
        self.touch()
        if self.auto_delete and self._had_consumers and not self.consumers:
            self.host.queue_unused(self)
        elif self.expires_ms and not self.consumers:
            self.host.schedule(self, self.last_used_ms + self.expires_ms)

    # ---------------------------------------------------------------- time
    def tick(self) -> None:
        """Run what is due: delayed -> ready, TTL expiry, consumer timeouts, queue expiry."""
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
            if entry.state == READY and entry.expires_at <= now:
                self._unready(entry)
                self._drop(entry, "expired")
                entry.message = None  # it may wait in a deque until the head reaches it
        held = self._dead_letter_held
        while held and held[0][0] <= now:
            _, entry, message, reason = held.popleft()
            self._dead_lettered(entry, message, reason,
                                self.host.dead_letter(self, message, reason))
        timeouts = self._timeouts
        while timeouts and timeouts[0][0] <= now:
            deadline, _, delivery = heapq.heappop(timeouts)
            if not delivery.settled and delivery.deadline == deadline:
                self.settle(delivery, False, True)
                if delivery.consumer is not None:
                    delivery.consumer.delivery_timed_out(delivery)
        if (self.expires_ms and not self.consumers and
                now - self.last_used_ms >= self.expires_ms):
            self.host.queue_unused(self)
            return
        if self.consumers:
            self.pump()
        nxt = self.next_deadline()
        if nxt is not None:
            self.host.schedule(self, nxt)

    def next_deadline(self) -> int | None:
        deadlines = [heap[0][0] for heap in (self._delayed, self._expiries, self._timeouts,
                                             self._dead_letter_held) if heap]
        if self.expires_ms and not self.consumers:
            deadlines.append(self.last_used_ms + self.expires_ms)
        return min(deadlines) if deadlines else None

    # ---------------------------------------------------------------- bulk
    def purge(self) -> int:
        """Drop every ready message (not unacked or delayed ones, as in RabbitMQ)."""
        count = 0
        for run in self._cold_runs():  # without reading their bodies back
            source = self.spill if run.spilled else self.log
            for msg_id, size in run.items():
                source.settle(msg_id)  # type: ignore[union-attr]
                self.ready_count -= 1
                self.ready_bytes -= size
                count += 1
            self.cold_count -= len(run)
            run.head = len(run.ids)
        while True:
            entry = self._take_head(ignore_groups=True)
            if entry is None:
                break
            self._forget(entry)
            count += 1
        return count

    def purge_all(self) -> int:
        """Drop ready, delayed and leased (received, in-flight) messages, as SQS's PurgeQueue
        does; deliveries to consumers stay theirs to settle. Returns how many went."""
        count = self.purge()
        for delivery in list(self._leases.values()):
            if self.settle(delivery, True, False):
                count += 1
        delayed, self._delayed = self._delayed, []
        for _, _, entry in delayed:
            if entry.state == DELAYED:
                entry.state = GONE
                self.delayed_count -= 1
                self._forget(entry)
                count += 1
        return count

    def delete(self) -> int:
        """Mark deleted; returns the ready count. Consumers are told by the vhost."""
        count = self.ready_count
        self.purge()
        for _, _, entry in self._delayed:
            if entry.state == DELAYED:
                self._release(entry)  # gone with the queue (unacked ones go when settled)
        self.deleted = True
        while self._ready_listeners:  # long polls end now
            self._ready_listeners.popleft()()
        return count

    def _ready_entries(self) -> list[Entry]:
        if self.grouped is not None:
            entries = self.grouped.entries()
        else:
            entries = [e for q in self._fresh for e in q
                       if e.__class__ is not ColdRun and e.state == READY]
            entries += [e for _, _, e in self._returned if e.state == READY]
        entries.sort(key=lambda e: (-e.priority, e.msg_id))
        return entries

    def ready_messages(self) -> list[Message]:
        """Ready messages in delivery order (for tests and introspection)."""
        listed: list[tuple[int, Any]] = [(e.msg_id, e) for e in self._ready_entries()]
        listed += [(msg_id, run) for run in self._cold_runs() for msg_id, _ in run.items()]
        listed.sort(key=lambda item: (-(item[1].priority if isinstance(item[1], Entry) else 0),
                                      item[0]))
        return [self._load(e) if isinstance(e, Entry) else
                decode_message((self.spill if e.spilled else self.log).read(msg_id))
                for msg_id, e in listed]

    def _cold_runs(self) -> list[ColdRun]:
        return [run for run in self._fresh[0] if run.__class__ is ColdRun]  # type: ignore
