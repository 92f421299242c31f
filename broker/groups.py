"""Message groups for a queue with ``x-message-groups`` (SQS FIFO queues, ActiveMQ's JMSXGroupID).

Messages of one group leave in arrival order, and a group is *locked* while one of its messages is
unacked: nobody else gets the group's next message until that one is settled (acked, or returned
to its place at the head of the group). Groups are independent of each other; among the groups
that may deliver, the one whose head arrived first goes first.

Structures: per group a heap of its ready entries by queue id, and one heap of (head id, group)
candidates. Candidates are checked when popped (the group may have been locked, or its head taken
since) instead of being kept exact, so every operation is O(log n).
"""
from __future__ import annotations

import heapq
from typing import Any

READY = 0  # broker.queue.READY (kept here so queue.py can import this module)
NO_GROUP = object()  # "no preference" (None is a group: messages without a group id)


class MessageGroups:
    def __init__(self) -> None:
        #: group -> heap of (msg_id, entry): its ready entries (and some stale ones, skipped)
        self.ready: dict[Any, list] = {}
        #: group -> number of its unacked messages (> 0: locked)
        self.in_flight: dict[Any, int] = {}
        self._order: list[tuple[int, Any]] = []

    def push(self, entry: Any) -> None:
        heap = self.ready.get(entry.group)
        if heap is None:
            heap = self.ready[entry.group] = []
        heapq.heappush(heap, (entry.msg_id, entry))
        if heap[0][1] is entry and not self.in_flight.get(entry.group):
            heapq.heappush(self._order, (entry.msg_id, entry.group))

    def _head(self, group: Any) -> Any:
        heap = self.ready.get(group)
        while heap and heap[0][1].state != READY:
            heapq.heappop(heap)
        if not heap:
            self.ready.pop(group, None)
            return None
        return heap[0][1]

    def take(self, prefer: Any = NO_GROUP) -> Any:
        """Remove and return the next message of group ``prefer`` (which the caller holds), else
        the oldest head of an unlocked group. SQS: a receive returns as many messages of one
        group as it can."""
        if prefer is not NO_GROUP:
            entry = self._head(prefer)
            if entry is not None:
                heapq.heappop(self.ready[prefer])
                return entry
        order = self._order
        while order:
            head_id, group = order[0]
            if self.in_flight.get(group):
                heapq.heappop(order)  # pushed again when the group unlocks
                continue
            entry = self._head(group)
            if entry is None:
                heapq.heappop(order)
                continue
            if entry.msg_id != head_id:
                heapq.heapreplace(order, (entry.msg_id, group))
                continue
            heapq.heappop(order)
            heapq.heappop(self.ready[group])
            following = self._head(group)
            if following is not None:
                heapq.heappush(order, (following.msg_id, group))
            return entry
        return None

    def take_oldest_any(self) -> Any:
        """The oldest ready entry of any group, locked or not (drop-head overflow, purge)."""
        best = None
        for group in list(self.ready):
            head = self._head(group)
            if head is not None and (best is None or head.msg_id < best.msg_id):
                best = head
        if best is not None:
            heapq.heappop(self.ready[best.group])
        return best

    def lock(self, group: Any) -> None:
        self.in_flight[group] = self.in_flight.get(group, 0) + 1

    def unlock(self, group: Any) -> None:
        count = self.in_flight.get(group, 0) - 1
        if count > 0:
            self.in_flight[group] = count
            return
        self.in_flight.pop(group, None)
        head = self._head(group)
        if head is not None:
            heapq.heappush(self._order, (head.msg_id, group))

    def entries(self) -> list:
        return [e for heap in self.ready.values() for _, e in heap if e.state == READY]
