"""An append-only log (Kinesis / RabbitMQ stream semantics): many readers, each at its own offset.

Records are never removed by reading; retention trims the head by age (``x-max-age``) and by size
(``x-max-length-bytes``). A reader starts at ``first``, ``last``, ``next``, an offset, a timestamp
or an interval ago (``x-stream-offset``), and may name itself with ``x-stream-reference`` so that
its acked offset is stored and a later reader of that name resumes after it.
Model: rabbitmq/osiris ``offset_spec()`` and ``retention_spec()``.
"""
from __future__ import annotations

import asyncio
import datetime
import operator
import re
import time
from collections import deque
from typing import Any

from manifold.persistence.streamlog import MemoryStreamLog

from .consumer import Consumer, Delivery
from .durable_map import DurableMap
from .errors import PreconditionFailed
from .message import PROPERTY_NAMES, Message
from .message_codec import decode_message, encode_message


_envelope = operator.attrgetter(*PROPERTY_NAMES)
_INTERVAL = re.compile(r"^(\d+)(Y|M|D|h|m|s)$")
_UNIT_S = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


def parse_interval_s(value: str) -> int | None:
    match = _INTERVAL.match(value)
    return int(match.group(1)) * _UNIT_S[match.group(2)] if match else None


#: the tail of the stream kept in memory for readers that keep up (records not yet written to
#: disk stay in it besides, whatever their size); written records a reader in the cache has not
#: read yet stay up to TAIL_CACHE_MAX_BYTES, so a burst does not push it onto the disk
TAIL_CACHE_BYTES = 4 * 1024 * 1024
TAIL_CACHE_MAX_BYTES = 16 * 1024 * 1024
#: a reader behind the tail reads the segment files sequentially ahead of what it delivers
#: (persistence/streamcursor.py): reads of READ_BYTES, several in flight in the store's reader
#: thread (off the event loop), so that reads coming back in one turn of a busy loop bring a
#: whole budget's worth; what it holds plus what it has in flight stays within
#: READER_BUDGET_BYTES (a record bigger than that is read whole)
READER_BUDGET_BYTES = 8 * 1024 * 1024
READ_BYTES = 2 * 1024 * 1024
#: what a read asks for per record wanted, when the caller wants few (Kinesis GetRecords with a
#: small Limit, the MillisBehindLatest probe); the sparse index bounds what comes before them
SINGLE_READ_BYTES = 4096
#: stored offsets of named readers are written at most this often (and when a reader leaves)
OFFSET_FLUSH_MS = 200
#: default segment size of a stream (RabbitMQ's x-stream-max-segment-size-bytes is 500 MB)
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


class _Record:
    """One record handed to a reader (a Delivery's ``entry``)."""
    __slots__ = ("offset", "timestamp_ms", "message", "delivery_count", "lost")

    def __init__(self, offset: int, timestamp_ms: int, message: Message):
        self.offset = offset
        self.timestamp_ms = timestamp_ms
        self.message = message
        self.delivery_count = 1
        #: a failed write lost it (its publisher was refused): readers skip it
        self.lost = False


class _Reader:
    __slots__ = ("position", "reference", "ahead", "cursor", "on_ready", "last")

    def __init__(self, position: int, reference: str | None):
        self.position = position
        self.reference = reference
        #: records read on the spot ahead of ``position`` (a log in memory, Stream.read)
        self.ahead: deque[tuple[int, int, bytes]] = deque()
        #: its read-ahead through the segment files while it is behind the tail cache
        self.cursor: Any = None
        #: called on the event loop when disk reads of its cursor are back
        self.on_ready: Any = None
        #: the last message it read from disk
        self.last: Message | None = None

    def decode(self, payload: bytes) -> Message:
        """A record read from disk: its message shares the Properties and the adapters' cached
        wire form (``Message.encoded``) of the last one when their envelopes are equal
        (properties without headers, exchange, routing key, body size), as consecutive
        publishes do, so a reader of a long run of alike records does not re-encode each."""
        message = decode_message(payload)
        last = self.last
        if (last is not None and message.properties.headers is None and
                len(message.body) == len(last.body) and
                message.routing_key == last.routing_key and message.exchange == last.exchange
                and _envelope(message.properties) == _envelope(last.properties)):
            message.properties = last.properties
            message.encoded = last.encoded
        self.last = message
        return message

    def drop_ahead(self) -> None:
        self.ahead.clear()
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None


class Stream:
    kind = "stream"
    is_exchange = False
    exclusive_owner = None
    auto_delete = False

    def __init__(self, host: Any, vhost: str, name: str, *, arguments: dict | None = None,
                 durable: bool = True, store: Any = None, memory: Any = None):
        self.host = host
        self.memory = memory
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.arguments = dict(arguments or {})
        max_age = self.arguments.get("x-max-age")
        self.max_age_ms: int | None = None
        if max_age is not None:
            seconds = parse_interval_s(str(max_age))
            if seconds is None:
                raise PreconditionFailed(
                    f"invalid arg 'x-max-age' for queue '{name}' in vhost '{vhost}': "
                    f"{max_age!r}; accepted: a number followed by Y, M, D, h, m or s")
            self.max_age_ms = seconds * 1000
        self.max_bytes: int | None = self.arguments.get("x-max-length-bytes")
        segment_bytes = self.arguments.get("x-stream-max-segment-size-bytes")
        if segment_bytes is not None and (isinstance(segment_bytes, bool) or
                                          not isinstance(segment_bytes, int) or segment_bytes < 1):
            raise PreconditionFailed(
                f"invalid arg 'x-stream-max-segment-size-bytes' for queue '{name}' in vhost "
                f"'{vhost}': {segment_bytes!r} must be a positive integer")
        #: the records: on disk (persistence/streamlog.py) or, without a data directory, in
        #: memory; every record is written whatever its delivery mode, as RabbitMQ streams do
        self.log: Any = store.stream_log(vhost, name, segment_bytes) if store is not None else None
        if self.log is None:
            self.log = MemoryStreamLog(segment_bytes or DEFAULT_SEGMENT_BYTES, memory)
        self.log.on_written = self._written
        self.log.on_lost = self._lost
        self._offsets = DurableMap(self.log.offsets_log)
        self._cache: deque[_Record] = deque()
        self._cache_bytes = 0
        #: bytes of the cached records not yet written (up to offset ``_counted_upto``)
        self._unwritten_bytes = 0
        self._counted_upto = -1
        self._last_ts = 0
        self.consumers: list[Consumer] = []
        self._readers: dict[Consumer, _Reader] = {}
        self.stored_offsets: dict[str, int] = {}
        self._unflushed: set[str] = set()
        self._flush_at: int | None = None
        self.deleted = False
        #: retention set after declaration (``vhost.set_queue_policy``), e.g. Kinesis's
        #: Increase/DecreaseStreamRetentionPeriod; persisted with the definitions
        self.policy: dict = {}
        #: cumulative counters for the management API and /metrics (as on Queue)
        self.published_total = 0
        self.delivered_total = 0
        self.acked_total = 0

    # ---------------------------------------------------------------- introspection
    @property
    def message_count(self) -> int:
        return self.log.next_offset - self.log.first_offset

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def first_offset(self) -> int:
        return self.log.first_offset

    @property
    def size_bytes(self) -> int:
        """Bytes the stream's log holds (segments on disk, or in memory)."""
        return self.log.total_bytes

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    @property
    def next_offset(self) -> int:
        return self.log.next_offset

    def check_owner(self, owner: Any) -> None:
        pass

    def touch(self) -> None:
        pass

    # ---------------------------------------------------------------- append
    def enqueue(self, message: Message) -> Any:
        """Append; returns True, or an awaitable that resolves once the record is on disk."""
        # Stamps never go back, so the timestamp index stays sorted if the wall clock does.
        now = self._last_ts = max(self.host.now_ms(), self._last_ts)
        offset = self.log.next_offset
        stamped = Message(message.exchange, message.routing_key, message.body,
                          message.properties, timestamp_ms=now)
        result = self.log.append(offset, now, encode_message(stamped)) or True
        self.published_total += 1
        self._cache.append(_Record(offset, now, stamped))
        self._cache_account(len(message.body))
        if offset > self.log.written_offset:
            self._unwritten_bytes += len(message.body)
        self._evict()
        self._apply_retention(now)
        if self.consumers:
            self.pump()
        return result

    def _cache_account(self, delta: int) -> None:
        self._cache_bytes += delta
        if self.memory is not None:
            self.memory.add(delta)

    def _evict(self) -> None:
        """Keep the written records of the tail cache within its budget (the records not yet
        written stay in it besides, whatever their size: readers at the tail get them from
        here once they are written)."""
        cache = self._cache
        written = self.log.written_offset
        needed = None
        while cache and self._cache_bytes - self._unwritten_bytes > TAIL_CACHE_BYTES and (
                cache[0].offset <= written or cache[0].lost):
            if self._cache_bytes - self._unwritten_bytes <= TAIL_CACHE_MAX_BYTES:
                if needed is None:  # a reader in the cache keeps it (up to the hard limit)
                    needed = min((r.position for r in self._readers.values()
                                  if r.position >= cache[0].offset), default=written + 1)
                if cache[0].offset >= needed:
                    break
            gone = cache.popleft()
            if gone.offset > self._counted_upto:  # a lost record, counted as unwritten
                self._unwritten_bytes -= len(gone.message.body)
            self._cache_account(-len(gone.message.body))

    def _written(self) -> None:
        """More records are on disk: readers see records only once they are (so never one a
        failed write loses), and the cache may shrink."""
        cache = self._cache
        written = self.log.written_offset
        if cache:
            first = cache[0].offset
            i = max(0, self._counted_upto + 1 - first)
            while i < len(cache) and cache[i].offset <= written:
                self._unwritten_bytes -= len(cache[i].message.body)
                i += 1
        self._counted_upto = max(self._counted_upto, written)
        if self.consumers:
            self.pump()
        self._evict()

    def _lost(self, offsets: list[int]) -> None:
        cache = self._cache
        if not cache:
            return
        first = cache[0].offset
        for offset in offsets:
            if first <= offset < first + len(cache):
                cache[offset - first].lost = True

    def recover(self) -> int:
        """Reopen the segments (offsets and timestamps as they were) and the stored offsets."""
        self.log.recover()
        self.stored_offsets = {str(k): int(v) for k, v in self._offsets.load().items()}
        self._apply_retention(self.host.now_ms())
        return self.message_count

    def _apply_retention(self, now: int) -> None:
        oldest = now - self.max_age_ms if self.max_age_ms is not None else None
        if self.max_bytes is not None or oldest is not None:
            self.log.trim(self.max_bytes, oldest)
        if self.max_age_ms is not None and self.message_count:
            self.host.schedule(self, now + max(1000, self.max_age_ms // 10))

    def set_policy(self, policy: dict) -> None:
        """``x-max-age`` / ``x-max-length-bytes`` overriding the declare arguments, without
        taking part in the redeclare equivalence check. Retention applies at the next tick
        (restore sets the policy before the log is recovered)."""
        merged = {**self.arguments, **policy}
        unknown = set(policy) - {"x-max-age", "x-max-length-bytes"}
        if unknown:
            raise PreconditionFailed(f"invalid policy key '{sorted(unknown)[0]}' for stream "
                                     f"'{self.name}' in vhost '{self.vhost}'")
        max_age = merged.get("x-max-age")
        seconds = parse_interval_s(str(max_age)) if max_age is not None else None
        if max_age is not None and seconds is None:
            raise PreconditionFailed(
                f"invalid arg 'x-max-age' for queue '{self.name}' in vhost '{self.vhost}': "
                f"{max_age!r}; accepted: a number followed by Y, M, D, h, m or s")
        max_bytes = merged.get("x-max-length-bytes")
        if max_bytes is not None and (isinstance(max_bytes, bool) or
                                      not isinstance(max_bytes, int) or max_bytes < 0):
            raise PreconditionFailed(f"invalid arg 'x-max-length-bytes' for queue "
                                     f"'{self.name}' in vhost '{self.vhost}': {max_bytes!r}")
        self.policy = dict(policy)
        self.max_age_ms = seconds * 1000 if seconds is not None else None
        self.max_bytes = max_bytes
        self.host.schedule(self, self.host.now_ms())

    def tick(self) -> None:
        now = self.host.now_ms()
        self._apply_retention(now)
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_offsets()
        elif self._flush_at is not None:
            self.host.schedule(self, self._flush_at)
        self._evict()
        if self.consumers:
            self.pump()

    # ---------------------------------------------------------------- read
    def resolve_offset(self, spec: Any) -> int:
        """Where a reader with this ``x-stream-offset`` starts (osiris ``offset_spec()``)."""
        first, nxt = self.log.first_offset, self.log.next_offset
        if spec is None or spec == "next":
            return nxt
        if spec == "first":
            return first
        if spec == "last":
            return max(first, nxt - 1)
        if isinstance(spec, datetime.datetime):
            return self._offset_at_ms(int(spec.timestamp() * 1000))
        if isinstance(spec, bool):
            raise PreconditionFailed(f"invalid x-stream-offset {spec!r}")
        if isinstance(spec, int):
            return min(max(spec, first), nxt)
        if isinstance(spec, str):
            seconds = parse_interval_s(spec)
            if seconds is not None:
                return self._offset_at_ms(int(time.time() * 1000) - seconds * 1000)
            if spec.isdigit():
                return min(max(int(spec), first), nxt)
        raise PreconditionFailed(
            f"invalid x-stream-offset {spec!r}; accepted: first, last, next, an offset, a "
            "timestamp or an interval such as 1h")

    def _offset_at_ms(self, timestamp_ms: int) -> int:
        """The first record published at or after ``timestamp_ms``."""
        offset = self.log.offset_at(timestamp_ms)
        if offset < self.log.next_offset:
            return offset
        for record in self._cache:  # the tail not yet on disk
            if record.timestamp_ms >= timestamp_ms:
                return record.offset
        return self.log.next_offset

    def read(self, offset: int, limit: int) -> list[tuple[int, int, Message]]:
        """(offset, timestamp_ms, message) from ``offset``, at most ``limit`` of them, read now,
        on the event loop (a log in memory, ``ready_messages``); :meth:`read_later` reads with
        the disk reads off the loop."""
        out: list[tuple[int, int, Message]] = []
        reader = _Reader(max(offset, self.log.first_offset), None)
        ahead = min(READ_BYTES, limit * SINGLE_READ_BYTES)
        while len(out) < limit:
            record = self._next_record(reader, inline=True, read_bytes=ahead)
            if record is None:
                break
            out.append((record.offset, record.timestamp_ms, record.message))
        return out

    async def read_later(self, offset: int, limit: int, max_bytes: int | None = None
                         ) -> list[tuple[int, int, Message]]:
        """Like :meth:`read` (Kinesis GetRecords, Firehose reading a Kinesis stream), with the
        disk reads in the store's reader thread, so the event loop serves other clients while a
        cold shard is read. At most ``limit`` records and, past the first, ``max_bytes`` of
        bodies; what it reads ahead is bounded by ``limit`` (one record reads only what the
        sparse index says it needs) and by READER_BUDGET_BYTES."""
        out: list[tuple[int, int, Message]] = []
        if limit < 1:
            return out
        size = 0
        reader = _Reader(max(offset, self.log.first_offset), None)
        budget = min(READER_BUDGET_BYTES, limit * SINGLE_READ_BYTES)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future | None = None

        def ready() -> None:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        reader.on_ready = ready
        try:
            while len(out) < limit and not self.deleted:
                record = self._next_record(reader, read_bytes=min(READ_BYTES, budget),
                                           budget_bytes=budget)
                if record is None:
                    if reader.cursor is None or not reader.cursor.waiting:
                        break
                    waiter = loop.create_future()
                    await waiter
                    continue
                body = len(record.message.body)
                if out and max_bytes is not None and size + body > max_bytes:
                    break
                size += body
                out.append((record.offset, record.timestamp_ms, record.message))
        finally:
            reader.drop_ahead()
        return out

    def _next_record(self, reader: _Reader, inline: bool = False, read_bytes: int = 0,
                     budget_bytes: int = 0) -> _Record | None:
        """The record at the reader's position (or the first after a gap), and advance it: from
        the tail cache, else from disk: now if ``inline`` (or the log is in memory), else
        through the reader's cursor, whose reads run in the store's reader thread (None while
        they are in flight: ``reader.on_ready`` is called when some are back). Records not yet
        on disk are not read."""
        log = self.log
        if reader.position < log.first_offset:
            reader.position = log.first_offset  # retention deleted its segment
            reader.drop_ahead()
        while reader.position <= log.written_offset:
            position = reader.position
            cache = self._cache
            if cache and position >= cache[0].offset:
                record = cache[position - cache[0].offset]
                reader.position = position + 1
                if reader.cursor is not None or reader.ahead:
                    reader.drop_ahead()  # caught up with the tail
                if record.lost:
                    continue
                return record
            if inline or log.reads_inline:
                ahead = reader.ahead
                while ahead and ahead[0][0] < position:
                    ahead.popleft()
                if not ahead:
                    ahead.extend(log.read(position, read_bytes or READ_BYTES))
                found = ahead.popleft() if ahead else None
            else:
                cursor = reader.cursor
                if cursor is None:
                    cursor = reader.cursor = log.cursor(
                        position, budget_bytes or READER_BUDGET_BYTES, read_bytes or READ_BYTES,
                        reader.on_ready)
                found = cursor.take(position)
                if found is None and not cursor.exhausted:
                    return None
            if found is None:
                # Nothing on disk from here (records a failed write lost): go on at the tail.
                reader.drop_ahead()
                reader.position = cache[0].offset if cache else log.written_offset + 1
                continue
            offset, timestamp_ms, payload = found
            reader.position = offset + 1
            return _Record(offset, timestamp_ms, reader.decode(payload))
        return None

    def add_consumer(self, consumer: Consumer) -> None:
        args = consumer.arguments
        # RabbitMQ's name for a named reader is x-stream-reference; x-stream-reader is accepted
        reference = args.get("x-stream-reference", args.get("x-stream-reader"))
        if reference is not None:
            reference = str(reference)
        if reference is not None and reference in self.stored_offsets:
            position = self.stored_offsets[reference] + 1
        else:
            position = self.resolve_offset(args.get("x-stream-offset"))
        consumer.queue = self
        reader = self._readers[consumer] = _Reader(position, reference)
        reader.on_ready = lambda: self._read_back(consumer, reader)
        self.consumers.append(consumer)
        self.pump()

    def _read_back(self, consumer: Consumer, reader: _Reader) -> None:
        """Disk reads of a reader's cursor are back (on the event loop): deliver on."""
        if not self.deleted and self._readers.get(consumer) is reader:
            self._pump_one(consumer, reader)

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        reader = self._readers.pop(consumer, None)
        if reader is not None:
            reader.drop_ahead()
            if reader.reference in self._unflushed:
                self._flush_offsets()

    def pump(self) -> None:
        for consumer in list(self.consumers):
            reader = self._readers.get(consumer)
            if reader is not None:
                self._pump_one(consumer, reader)

    def _pump_one(self, consumer: Consumer, reader: _Reader) -> None:
        cursor = reader.cursor
        if cursor is not None and cursor.waiting:
            return  # (on every append: cheap) its reads are in flight; on_ready goes on
        while consumer.has_credit():
            record = self._next_record(reader)
            if record is None:
                break
            self.delivered_total += 1
            delivery = Delivery(self, record, consumer, False, settled=consumer.no_ack,
                                offset=record.offset)
            if not consumer.no_ack:
                consumer.in_flight += 1
            consumer.deliver(delivery)
            if self.deleted or self._readers.get(consumer) is not reader:
                break

    def settle(self, delivery: Delivery, ack: bool, requeue: bool, pump: bool = True) -> bool:
        """Stream acks only return credit (and store a named reader's offset); nothing is removed."""
        if delivery.settled:
            return False
        delivery.settled = True
        consumer = delivery.consumer
        if consumer is not None:
            consumer.in_flight -= 1
            if ack:
                self.acked_total += 1
            reader = self._readers.get(consumer)
            if ack and reader is not None and reader.reference is not None:
                self.store_offset(reader.reference, delivery.offset)
            if pump:
                self.pump()
        return True

    def store_offset(self, reference: str, offset: int) -> None:
        """Remember a named reader's offset; it is written through the store (coalesced: at
        most every OFFSET_FLUSH_MS, and when the reader goes)."""
        if offset > self.stored_offsets.get(reference, -1):
            self.stored_offsets[reference] = offset
            self._unflushed.add(reference)
            if self._flush_at is None:
                self._flush_at = self.host.now_ms() + OFFSET_FLUSH_MS
                self.host.schedule(self, self._flush_at)

    def _flush_offsets(self) -> None:
        for reference in self._unflushed:
            self._offsets.put(reference, self.stored_offsets[reference])
        self._unflushed.clear()
        self._flush_at = None

    def close(self) -> None:
        """The broker stops: write what named readers acked since the last flush."""
        if self._unflushed:
            self._flush_offsets()

    def query_offset(self, reference: str) -> int | None:
        return self.stored_offsets.get(reference)

    def get(self, no_ack: bool) -> Delivery | None:
        raise PreconditionFailed(f"queue '{self.name}' in vhost '{self.vhost}' is a stream; "
                                 "basic.get is not supported, consume with x-stream-offset")

    def purge(self) -> int:
        raise PreconditionFailed(f"queue '{self.name}' in vhost '{self.vhost}' is a stream and "
                                 "cannot be purged")

    def delete(self) -> int:
        self.deleted = True
        count = self.message_count
        self._cache.clear()
        self._cache_account(-self._cache_bytes)
        for reader in self._readers.values():
            reader.drop_ahead()
        return count

    def ready_messages(self) -> list[Message]:
        return [m for _, _, m in self.read(self.log.first_offset, self.message_count)]
