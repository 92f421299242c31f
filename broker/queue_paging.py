"""Where a queue's message bodies live: in memory, on disk only (paged out), or as 12 bytes in a
cold run (see coldrun.py); the memory accounting that decides it; and recovery after a restart.

Part of :class:`broker.queue.Queue` (it inherits :class:`QueuePaging`). Store writes go out as
effects (:class:`~broker.queue_commands.Append`, :class:`~broker.queue_commands.Remove`); a store
read first runs the writes queued before it (``_flush_writes``), so it sees them.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from .coldrun import ColdRun, file_span
from .entry import ENTRY_OVERHEAD_BYTES, READY, Entry
from .message import Message
from .message_codec import decode_message, encode_message
from .queue_args import GROUP_HEADER
from .queue_commands import Append, Remove

#: past this share of the memory high-water mark, queues page new messages out to disk
PAGING_RATIO = 0.5


def _ignore_result(future: Any) -> None:
    """Retrieve a spill write's outcome (a failure only loses a transient message's copy: the
    queue finds it missing when it reaches the head)."""
    if not future.cancelled():
        future.exception()


class QueuePaging:
    # State of Queue this part uses (set in Queue.__init__; methods it calls live in Queue and
    # its other parts: _flush_writes, _wake_one, _push_ready, _became_ready, _ttl_of).
    log: Any
    spill: Any
    _open_spill: Any
    memory: Any
    resident_limit: int | None
    resident_bytes: int
    ready_count: int
    ready_bytes: int
    cold_count: int
    max_priority: int
    grouped: Any
    message_ttl: int | None
    _fresh: list
    _returned: list
    _ready_listeners: deque
    _writes: list
    _effects: list
    _next_id: int
    host: Any

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

    def _page_out_all(self) -> int:
        """Memory is short (the alarm went on): let go of every ready body that can be read
        back, writing transient ones to the spill log first. Returns the bytes let go."""
        freed = 0
        entries = [e for q in self._fresh for e in q if e.__class__ is not ColdRun]
        entries += [e for _, _, e in self._returned]
        self._flush_writes()
        for entry in entries:
            if entry.state != READY or entry.message is None:
                continue
            if not entry.on_disk:
                if self._open_spill is None or not self._spill_out(entry.msg_id, entry.message):
                    continue
                entry.spilled = True
            elif not self.log.holds(entry.msg_id):
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
        write = Append(self.spill, msg_id, encode_message(message))
        write.then = _ignore_result
        self._writes.append(write)
        return True

    def _freeze(self, msg_id: int, size: int, delivery_count: int, spilled: bool = False) -> None:
        fresh = self._fresh[0]
        run = fresh[-1] if fresh else None
        if (run.__class__ is not ColdRun or run.full() or  # type: ignore[union-attr]
                run.delivery_count != delivery_count or  # type: ignore[union-attr]
                run.spilled != spilled):  # type: ignore[union-attr]
            run = ColdRun(delivery_count, spilled)
            fresh.append(run)
        run.append(msg_id, size)  # type: ignore[union-attr]
        self.cold_count += 1
        self._wake_one()
        self.ready_count += 1
        self.ready_bytes += size

    def _thaw_head(self, fresh: deque) -> None:
        """Turn the cold run at the head of ``fresh`` into ordinary entries, one at a time."""
        self._flush_writes()
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
            if not source.holds(msg_id):
                # Its write failed (the publisher was refused): it never joined the queue.
                self.ready_count -= 1
                self.ready_bytes -= size
                continue
            if run.spilled:
                # A transient message comes back into memory and leaves the spill log.
                entry = Entry(msg_id, decode_message(source.read(msg_id)), 0)
                self._writes.append(Remove(source, msg_id))
                self._resident(size)
            else:
                entry = Entry(msg_id, None, 0, size)
                entry.on_disk = True
            entry.state = READY
            entry.delivery_count = run.delivery_count
            self._arrived(entry)
            fresh.appendleft(entry)
            return

    def _written(self, entry: Entry, written: Any) -> None:
        """A ready entry's write completed: its body can be read back from disk, let it go."""
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
        if self.memory is not None:  # (_count, inlined: once per message)
            self.memory.add(ENTRY_OVERHEAD_BYTES + (entry.size if entry.message is not None
                                                    else 0))

    def _release(self, entry: Entry) -> None:
        if entry.counted:
            if self.memory is not None:
                self.memory.add(-ENTRY_OVERHEAD_BYTES - (entry.size if entry.message is not None
                                                         else 0))
            entry.counted = False

    def _load(self, entry: Entry) -> Message:
        """The entry's message, read back from disk if it was paged out."""
        message = entry.message
        if message is None:
            self._flush_writes()
            if entry.spilled:
                message = entry.message = decode_message(self.spill.read(entry.msg_id))
                self._writes.append(Remove(self.spill, entry.msg_id))
                entry.spilled = False
            else:
                message = entry.message = decode_message(self.log.read(entry.msg_id))
            self._count(entry, entry.size)
            if entry.state == READY:
                self._resident(entry.size)
        return message

    def _recover(self) -> int:
        """Reload the messages the log holds unsettled (after a restart), in their old order.
        Bodies stay on disk and are read when delivered (a priority queue reads them all: the
        priority is inside the message)."""
        if self.log is None:
            return 0
        self._flush_writes()
        now = self.host.now_ms()
        # Priorities and groups are inside the message: those queues read every body back.
        # A plain queue reads none: every message goes into cold runs, 12 bytes each, its body
        # left on disk until it reaches the head (RabbitMQ's classic queues v2 recover their
        # index, not the bodies), and the log hands them over in bulk as (ids, sizes) arrays.
        # One with a queue TTL reads bodies while within the resident budget (decided here,
        # where the entries' own cost counts too).
        everything = self.max_priority or self.grouped is not None or self.resident_limit is None
        spans = not everything and self.message_ttl is None
        records = self.log.recover(None if everything else 0, spans)
        # Received messages (queue_receives.py): the log hands them over one by one.
        marks = self.log.marks()
        count = 0
        last_id = 0
        run: ColdRun | None = None
        for msg_id, data in records:
            if data.__class__ is tuple:  # a span of messages left on disk: (ids, sizes)
                ids, sizes = data
                run = file_span(self._fresh[0], run, ids, sizes, 1)
                count += len(ids)
                self.cold_count += len(ids)
                self.ready_count += len(ids)
                self.ready_bytes += sum(sizes)
                last_id = ids[-1]
                continue
            count += 1
            last_id = msg_id
            if isinstance(data, int):  # past the log's budget: the length stands in for it
                size = data
                data = None
                if msg_id in marks:
                    pass  # an entry of its own, its body left on disk
                elif self.message_ttl is None or self.cold_count or self._over_budget(size):
                    if self.message_ttl is None:
                        fresh = self._fresh[0]
                        if run is None or run.full() or fresh[-1] is not run:
                            run = ColdRun(1)
                            fresh.append(run)
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
            if ttl is not None:
                entry.expires_at = now + ttl
            mark = marks.get(msg_id)
            if mark is not None:
                self._restore_receive(entry, mark, now)  # type: ignore[attr-defined]
                continue
            # It may have been delivered before the restart: redelivered=true / DUP, as
            # RabbitMQ marks recovered messages.
            entry.delivery_count = 1
            self._push_ready(entry, False)
            self._became_ready(entry)
        self._next_id = max(self._next_id, self.log.max_id_seen + 1, last_id + 1)
        return count
