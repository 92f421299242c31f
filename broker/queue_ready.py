"""A queue's ready messages: where they wait and in which order they leave.

Part of :class:`broker.queue.Queue` (it inherits :class:`QueueReady`). Ready messages leave in
arrival order within a priority: ``_fresh`` holds one deque per priority (new arrivals at the tail,
cold runs of paged-out messages among them); a returned message (nack/requeue, consumer gone,
timeout) goes back to its original place, because ``_returned`` is a heap ordered by (priority,
arrival id) consulted before the fresh tail. A grouped queue keeps its ready messages in
:class:`~broker.groups.MessageGroups` instead.
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from .coldrun import ColdRun
from .entry import GONE, READY, Entry
from .groups import NO_GROUP
from .message import Message
from .message_codec import decode_message
from .queue_args import parse_expiration
from .queue_commands import Remove, Timer, Wake


class QueueReady:
    # State of Queue this part uses (set in Queue.__init__; methods it calls live in Queue and
    # its other parts: _drop, _forget, _thaw_head, _resident, _load).
    grouped: Any
    max_length: int | None
    max_length_bytes: int | None
    overflow: str
    ready_count: int
    ready_bytes: int
    resident_bytes: int
    cold_count: int
    log: Any
    spill: Any
    message_ttl: int | None
    host: Any
    _fresh: list
    _returned: list
    _expiries: list
    _delayed: list
    _leases: dict
    _timeouts: list
    _dead_letter_held: deque
    _ready_listeners: deque
    _writes: list
    _effects: list

    def _wake_one(self) -> None:
        """A message became ready: the oldest long poll waiting for one wakes up."""
        if self._ready_listeners:
            self._effects.append(Wake(self._ready_listeners.popleft()))

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
        self._wake_one()
        entry.state = READY
        self.ready_count += 1
        self.ready_bytes += entry.size
        if entry.message is not None:
            self.resident_bytes += entry.size  # (_resident, inlined: once per message)
        if entry.expires_at:
            heapq.heappush(self._expiries, (entry.expires_at, entry.msg_id, entry))
            self._effects.append(Timer(entry.expires_at))

    def _retime(self, old_ttl: int | None) -> None:
        """The queue's TTL changed from ``old_ttl``: every message already in the queue gets
        the new one, counted from when it was sent (SQS applies a new MessageRetentionPeriod
        to the messages already queued). A message whose body is in memory counts from its
        timestamp and keeps its own shorter ``expiration``; one paged out counts from its
        arrival (its expiry minus the old TTL) or, with no TTL before, from now. Messages in
        cold runs (queues that had no TTL) get none."""
        new_ttl, now = self.message_ttl, self.host.now_ms()
        entries = self._ready_entries()
        entries += [e for _, _, e in self._delayed]
        entries += [d.entry for d in self._leases.values()]
        entries += [d.entry for _, _, d in self._timeouts if not d.settled]
        earliest = 0
        for entry in dict.fromkeys(entries):  # (an entry may be listed twice)
            message = entry.message
            own = parse_expiration(message.properties.expiration) if message else None
            if message is not None and message.timestamp_ms:
                sent = message.timestamp_ms
            elif old_ttl is not None and entry.expires_at:
                sent = entry.expires_at - old_ttl
            else:
                sent = now
            ttl = new_ttl if own is None else own if new_ttl is None else min(new_ttl, own)
            entry.expires_at = 0 if ttl is None else sent + ttl
            if entry.expires_at and entry.state == READY:
                heapq.heappush(self._expiries, (entry.expires_at, entry.msg_id, entry))
                earliest = min(earliest or entry.expires_at, entry.expires_at)
        if earliest:
            self._effects.append(Timer(earliest))  # (the host keeps the earliest timer)

    def _trim(self) -> None:
        """drop-head: the oldest ready messages make room [RabbitMQ x-overflow]. Under
        reject-publish(-dlx) only publishes are refused: a message that becomes ready otherwise
        (delay over, requeued) may take the queue past its limit, and nothing is dropped."""
        if (self.max_length is None and self.max_length_bytes is None) or (
                self.overflow != "drop-head"):
            return
        while self._over_limit():
            head = self._take_head(ignore_groups=True)
            if head is None:
                break
            self._drop(head, "maxlen")

    def _over_limit(self) -> bool:
        return ((self.max_length is not None and self.ready_count > self.max_length) or
                (self.max_length_bytes is not None and self.ready_bytes > self.max_length_bytes))

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
        fresh = self._fresh
        if not returned and len(fresh) == 1:
            # The common case (no priorities, nothing returned): the head of the one deque.
            head = fresh[0][0] if fresh[0] else None
            if head is not None and head.__class__ is not ColdRun and head.state == READY:
                fresh[0].popleft()
                return self._unready(head)
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
                return self._unready(entry)
        if best_fresh is None:
            return None
        fresh_queue.popleft()  # type: ignore[union-attr]
        return self._unready(best_fresh)

    def _unready(self, entry: Entry) -> Entry:
        entry.state = GONE
        self.ready_count -= 1
        self.ready_bytes -= entry.size
        if entry.message is not None:
            self.resident_bytes -= entry.size  # (_resident, inlined: once per message)
        # Entries that left the queue stay in the expiry heap until their deadline, keeping their
        # messages alive; drop them once they are the majority (amortised O(1)).
        if len(self._expiries) > 2 * self.ready_count + 64:
            self._expiries = [t for t in self._expiries if t[2].state == READY]
            heapq.heapify(self._expiries)
        return entry

    def _purge_ready(self) -> int:
        """Drop every ready message (not unacked or delayed ones, as in RabbitMQ)."""
        count = 0
        for run in self._cold_runs():  # without reading their bodies back
            source = self.spill if run.spilled else self.log
            for msg_id, size in run.items():
                self._writes.append(Remove(source, msg_id))
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

    def _withdraw_ready(self, msg_id: int) -> bool:
        """Take ready message ``msg_id`` out for good. A scan over the ready messages: rare."""
        for run in self._cold_runs():
            size = run.remove(msg_id)
            if size >= 0:
                self.cold_count -= 1
                self.ready_count -= 1
                self.ready_bytes -= size
                self._writes.append(Remove(self.spill if run.spilled else self.log, msg_id))
                return True
        for entry in self._ready_entries():
            if entry.msg_id == msg_id:
                self._unready(entry)
                self._forget(entry)
                return True
        return False

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
        self._flush_writes()
        listed: list[tuple[int, Any]] = [(e.msg_id, e) for e in self._ready_entries()]
        listed += [(msg_id, run) for run in self._cold_runs() for msg_id, _ in run.items()]
        listed.sort(key=lambda item: (-(item[1].priority if isinstance(item[1], Entry) else 0),
                                      item[0]))
        messages = [self._load(e) if isinstance(e, Entry) else
                    decode_message((self.spill if e.spilled else self.log).read(msg_id))
                    for msg_id, e in listed]
        self._flush_writes()  # a spilled body read back leaves the spill log
        return messages

    def _cold_runs(self) -> list[ColdRun]:
        return [run for run in self._fresh[0] if run.__class__ is ColdRun]
