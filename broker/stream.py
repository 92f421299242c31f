"""An append-only log (Kinesis / RabbitMQ stream semantics): many readers, each at its own offset.

Records are never removed by reading; retention trims the head by age (``x-max-age``) and by size
(``x-max-length-bytes``). A reader starts at ``first``, ``last``, ``next``, an offset, a timestamp
or an interval ago (``x-stream-offset``), and may name itself with ``x-stream-reference`` so that
its acked offset is stored and a later reader of that name resumes after it.
Model: rabbitmq/osiris ``offset_spec()`` and ``retention_spec()``.
"""
from __future__ import annotations

import datetime
import logging
import re
import time
from collections import deque
from typing import Any

from manifold.persistence.streamlog import MemoryStreamLog

from .consumer import Consumer, Delivery
from .durable_map import DurableMap
from .errors import PreconditionFailed
from .message import Message
from .message_codec import decode_message, encode_message

logger = logging.getLogger("manifold.broker")

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
#: a reader behind the tail reads this much from disk at a time (its read-ahead); the next read
#: starts as soon as it holds less than this, so a reader holds at most about twice this, and
#: has at most one read in flight (in the store's reader thread, off the event loop)
READ_AHEAD_BYTES = 2 * 1024 * 1024
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
    __slots__ = ("position", "reference", "ahead", "ahead_bytes", "reading")

    def __init__(self, position: int, reference: str | None):
        self.position = position
        self.reference = reference
        #: records read from disk ahead of ``position``: (offset, timestamp_ms, payload)
        self.ahead: deque[tuple[int, int, bytes]] = deque()
        self.ahead_bytes = 0
        #: a read for it is in flight in the store's reader threads
        self.reading = False

    def drop_ahead(self) -> None:
        self.ahead.clear()
        self.ahead_bytes = 0


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
        """(offset, timestamp_ms, message) from ``offset``, at most ``limit`` of them, read now
        (Kinesis GetRecords: bounded by ``limit``; one record reads only what it needs)."""
        out: list[tuple[int, int, Message]] = []
        reader = _Reader(max(offset, self.log.first_offset), None)
        ahead = min(READ_AHEAD_BYTES, limit * SINGLE_READ_BYTES)
        while len(out) < limit:
            record = self._next_record(reader, inline=True, read_bytes=ahead)
            if record is None:
                break
            out.append((record.offset, record.timestamp_ms, record.message))
        return out

    def _next_record(self, reader: _Reader, consumer: Consumer | None = None,
                     inline: bool = False, read_bytes: int = READ_AHEAD_BYTES
                     ) -> _Record | None:
        """The record at the reader's position (or the first after a gap), and advance it: from
        the tail cache, else from the reader's read-ahead, else from disk: now if ``inline`` (or
        the log is in memory), else a read is started in the store's reader threads and None
        returned (the pump goes on when it is back). Records not yet on disk are not read."""
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
                reader.drop_ahead()
                if record.lost:
                    continue
                return record
            ahead = reader.ahead
            while ahead and ahead[0][0] < position:
                reader.ahead_bytes -= len(ahead.popleft()[2])
            if ahead:
                offset, timestamp_ms, payload = ahead.popleft()
                reader.ahead_bytes -= len(payload)
                reader.position = offset + 1
                if consumer is not None and reader.ahead_bytes < READ_AHEAD_BYTES:
                    self._read_ahead(reader, consumer)  # the next read overlaps this one's use
                return _Record(offset, timestamp_ms, decode_message(payload))
            if not (inline or log.reads_inline):
                if consumer is not None:
                    self._read_ahead(reader, consumer)
                return None
            ahead.extend(log.read(position, read_bytes))
            reader.ahead_bytes = sum(len(r[2]) for r in ahead)
            if not ahead:
                # Nothing on disk from here (records a failed write lost): go on at the tail.
                reader.position = cache[0].offset if cache else log.written_offset + 1
        return None

    def _read_ahead(self, reader: _Reader, consumer: Consumer) -> None:
        """Start the reader's next disk read (one in flight at most) after what it holds,
        unless that is in the tail cache or not on disk yet."""
        if reader.reading:
            return
        start = reader.ahead[-1][0] + 1 if reader.ahead else reader.position
        if start > self.log.written_offset or (self._cache and start >= self._cache[0].offset):
            return
        reader.reading = True
        self.log.read_later(start, READ_AHEAD_BYTES,
                            lambda records, resume, error: self._read_back(
                                reader, consumer, start, records, resume, error))

    def _read_back(self, reader: _Reader, consumer: Consumer, start: int, records: list,
                   resume: int, error: BaseException | None) -> None:
        """A disk read is back (on the event loop): keep what follows on from what the reader
        holds, and deliver."""
        reader.reading = False
        if self.deleted or self._readers.get(consumer) is not reader:
            return
        following = reader.ahead[-1][0] + 1 if reader.ahead else reader.position
        if error is not None:
            logger.error("stream %r in vhost %r: reading at offset %d failed (%s); the reader "
                         "goes on at offset %d", self.name, self.vhost, start, error, resume)
            records = []
        if start <= following:
            for record in records:
                if record[0] >= following:
                    reader.ahead.append(record)
                    reader.ahead_bytes += len(record[2])
            if not records and not reader.ahead and resume > reader.position:
                reader.position = resume  # past a gap, or past what could not be read
        self.pump()

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
        self._readers[consumer] = _Reader(position, reference)
        self.consumers.append(consumer)
        self.pump()

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        reader = self._readers.pop(consumer, None)
        if reader is not None and reader.reference in self._unflushed:
            self._flush_offsets()

    def pump(self) -> None:
        for consumer in list(self.consumers):
            reader = self._readers.get(consumer)
            if reader is None:
                continue
            while consumer.has_credit():
                record = self._next_record(reader, consumer)
                if record is None:
                    break
                self.delivered_total += 1
                delivery = Delivery(self, record, consumer, False, settled=consumer.no_ack,
                                    offset=record.offset)
                if not consumer.no_ack:
                    consumer.in_flight += 1
                consumer.deliver(delivery)
                if self.deleted or consumer not in self._readers:
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
