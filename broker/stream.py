"""An append-only log (Kinesis / RabbitMQ stream semantics): many readers, each at its own offset.

Records are never removed by reading; retention trims the head by age (``x-max-age``) and by size
(``x-max-length-bytes``). A reader starts at ``first``, ``last``, ``next``, an offset, a timestamp
or an interval ago (``x-stream-offset``), and may name itself with ``x-stream-reference`` so that
its acked offset is stored and a later reader of that name resumes after it.
Model: rabbitmq/osiris ``offset_spec()`` and ``retention_spec()``.
"""
from __future__ import annotations

import bisect
import datetime
import re
import time
from collections import deque
from typing import Any

from .consumer import Consumer, Delivery
from .errors import PreconditionFailed
from .message import Message
from .message_codec import decode_message, encode_message

_INTERVAL = re.compile(r"^(\d+)(Y|M|D|h|m|s)$")
_UNIT_S = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


def parse_interval_s(value: str) -> int | None:
    match = _INTERVAL.match(value)
    return int(match.group(1)) * _UNIT_S[match.group(2)] if match else None


class _Record:
    __slots__ = ("offset", "timestamp_ms", "message", "delivery_count")

    def __init__(self, offset: int, timestamp_ms: int, message: Message):
        self.offset = offset
        self.timestamp_ms = timestamp_ms
        self.message = message
        self.delivery_count = 0


class _Reader:
    __slots__ = ("position", "reference")

    def __init__(self, position: int, reference: str | None):
        self.position = position
        self.reference = reference


class Stream:
    kind = "stream"
    is_exchange = False
    exclusive_owner = None
    auto_delete = False

    def __init__(self, host: Any, vhost: str, name: str, *, arguments: dict | None = None,
                 durable: bool = True, log: Any = None, memory: Any = None):
        self.host = host
        self.memory = memory
        #: the store's log (record id = offset); every record is written, whatever its
        #: delivery mode, as RabbitMQ streams do; retention settles the records it trims
        self.log = log
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
        self._records: deque[_Record] = deque()
        self._first_offset = 0
        self._next_offset = 0
        self._bytes = 0
        self.consumers: list[Consumer] = []
        self._readers: dict[Consumer, _Reader] = {}
        self.stored_offsets: dict[str, int] = {}
        self.deleted = False
        #: cumulative counters for the management API and /metrics (as on Queue)
        self.published_total = 0
        self.delivered_total = 0
        self.acked_total = 0

    # ---------------------------------------------------------------- introspection
    @property
    def message_count(self) -> int:
        return len(self._records)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    @property
    def first_offset(self) -> int:
        return self._first_offset

    @property
    def next_offset(self) -> int:
        return self._next_offset

    def check_owner(self, owner: Any) -> None:
        pass

    def touch(self) -> None:
        pass

    # ---------------------------------------------------------------- append
    def enqueue(self, message: Message) -> Any:
        """Append; returns True, or an awaitable that resolves once the record is on disk."""
        now = self.host.now_ms()
        record = _Record(self._next_offset, now, message)
        result: Any = True
        if self.log is not None:
            stamped = Message(message.exchange, message.routing_key, message.body,
                              message.properties, timestamp_ms=now)
            result = self.log.append(record.offset, encode_message(stamped)) or True
        self._next_offset += 1
        self.published_total += 1
        self._records.append(record)
        self._account(len(message.body))
        self._apply_retention(now)
        if self.consumers:
            self.pump()
        return result

    def recover(self) -> int:
        """Reload the records kept on disk (offsets and timestamps as they were)."""
        if self.log is None:
            return 0
        records = self.log.recover()
        for offset, data in records:
            message = decode_message(data)
            self._records.append(_Record(offset, message.timestamp_ms, message))
            self._account(len(message.body))
        if records:
            self._first_offset = records[0][0]
        # Offsets never go back, even when retention emptied the stream.
        self._next_offset = max(getattr(self.log, "max_id_seen", -1) + 1,
                                records[-1][0] + 1 if records else 0)
        self._first_offset = self._first_offset if records else self._next_offset
        self._apply_retention(self.host.now_ms())
        return len(records)

    def _account(self, delta: int) -> None:
        self._bytes += delta
        if self.memory is not None:
            self.memory.add(delta)

    def _apply_retention(self, now: int) -> None:
        records = self._records
        while len(records) > 1 and (
                (self.max_bytes is not None and self._bytes > self.max_bytes) or
                (self.max_age_ms is not None and records[0].timestamp_ms < now - self.max_age_ms)):
            gone = records.popleft()
            self._account(-len(gone.message.body))
            self._first_offset = gone.offset + 1
            if self.log is not None:
                self.log.settle(gone.offset)
        if self.max_age_ms is not None and records:
            self.host.schedule(self, records[0].timestamp_ms + self.max_age_ms + 1)

    def tick(self) -> None:
        self._apply_retention(self.host.now_ms())

    # ---------------------------------------------------------------- read
    def resolve_offset(self, spec: Any) -> int:
        """Where a reader with this ``x-stream-offset`` starts (osiris ``offset_spec()``)."""
        if spec is None or spec == "next":
            return self._next_offset
        if spec == "first":
            return self._first_offset
        if spec == "last":
            return max(self._first_offset, self._next_offset - 1)
        if isinstance(spec, datetime.datetime):
            return self._offset_at_ms(int(spec.timestamp() * 1000))
        if isinstance(spec, bool):
            raise PreconditionFailed(f"invalid x-stream-offset {spec!r}")
        if isinstance(spec, int):
            return min(max(spec, self._first_offset), self._next_offset)
        if isinstance(spec, str):
            seconds = parse_interval_s(spec)
            if seconds is not None:
                return self._offset_at_ms(int(time.time() * 1000) - seconds * 1000)
            if spec.isdigit():
                return min(max(int(spec), self._first_offset), self._next_offset)
        raise PreconditionFailed(
            f"invalid x-stream-offset {spec!r}; accepted: first, last, next, an offset, a "
            "timestamp or an interval such as 1h")

    def _offset_at_ms(self, timestamp_ms: int) -> int:
        """The first record published at or after ``timestamp_ms``."""
        keys = [r.timestamp_ms for r in self._records]
        index = bisect.bisect_left(keys, timestamp_ms)
        return self._first_offset + index if index < len(keys) else self._next_offset

    def read(self, offset: int, limit: int) -> list[tuple[int, int, Message]]:
        """(offset, timestamp_ms, message) from ``offset``, at most ``limit`` of them."""
        start = max(offset, self._first_offset) - self._first_offset
        out = []
        for i in range(start, min(start + limit, len(self._records))):
            r = self._records[i]
            out.append((r.offset, r.timestamp_ms, r.message))
        return out

    def add_consumer(self, consumer: Consumer) -> None:
        args = consumer.arguments
        reference = args.get("x-stream-reference")
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
        self._readers.pop(consumer, None)

    def pump(self) -> None:
        for consumer in list(self.consumers):
            reader = self._readers.get(consumer)
            if reader is None:
                continue
            while consumer.has_credit() and reader.position < self._next_offset:
                reader.position = max(reader.position, self._first_offset)
                record = self._records[reader.position - self._first_offset]
                reader.position += 1
                record.delivery_count += 1
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
        if offset > self.stored_offsets.get(reference, -1):
            self.stored_offsets[reference] = offset

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
        count = len(self._records)
        self._records.clear()
        self._account(-self._bytes)
        return count

    def ready_messages(self) -> list[Message]:
        return [r.message for r in self._records]
