"""Ready messages whose bodies wait only on disk, kept without a Python object per message.

Past a queue's resident budget, a persistent message in a plain durable queue (no priorities,
no groups, no TTL or delay: nothing the queue must look at before it is delivered) is filed in
a :class:`ColdRun`: its id and size in two arrays, 12 bytes a message. The queue's ready deque
holds runs between ordinary entries, so arrival order is kept; a run's head becomes an ordinary
entry again only when it reaches the head of the queue (RabbitMQ's classic queues v2 keep the
same per-message cost in their index: "lazy" without a flag).
"""
from __future__ import annotations

from array import array
from typing import Any

#: messages per run; a new run starts when the last is full
RUN_CAPACITY = 16384


class ColdRun:
    __slots__ = ("ids", "sizes", "head", "delivery_count", "spilled")

    def __init__(self, delivery_count: int = 0, spilled: bool = False):
        self.ids = array("q")
        self.sizes = array("I")
        #: the next message to leave (the run is consumed from the front)
        self.head = 0
        #: what the thawed entries start with (1 for recovered messages: maybe delivered before)
        self.delivery_count = delivery_count
        #: transient messages paged out to the queue's spill log (not its durable log)
        self.spilled = spilled

    def __len__(self) -> int:
        return len(self.ids) - self.head

    def full(self) -> bool:
        return len(self.ids) >= RUN_CAPACITY

    def append(self, msg_id: int, size: int) -> None:
        self.ids.append(msg_id)
        self.sizes.append(size)

    def pop(self) -> tuple[int, int]:
        i = self.head
        self.head = i + 1
        return self.ids[i], self.sizes[i]

    def items(self) -> list[tuple[int, int]]:
        return [(self.ids[i], self.sizes[i]) for i in range(self.head, len(self.ids))]

    def remove(self, msg_id: int) -> int:
        """Take ``msg_id`` out of the run; its size, or -1 if it is not here."""
        for i in range(self.head, len(self.ids)):
            if self.ids[i] == msg_id:
                size = self.sizes[i]
                del self.ids[i]
                del self.sizes[i]
                return size
        return -1


def file_span(fresh: Any, run: ColdRun | None, ids: array, sizes: array,
              delivery_count: int) -> ColdRun:
    """File ready messages in bulk (a recovered log's span: ``ids`` an ``array('q')``, ``sizes``
    non-negative 4-byte ints) at the end of ``fresh``, filling ``run`` first if it is still the
    last item there; returns the last run."""
    at, end = 0, len(ids)
    while at < end:
        if run is None or run.full() or not fresh or fresh[-1] is not run:
            run = ColdRun(delivery_count)
            fresh.append(run)
        take = min(RUN_CAPACITY - len(run.ids), end - at)
        run.ids.extend(ids[at:at + take])
        run.sizes.frombytes(sizes[at:at + take].tobytes())  # ('i' to 'I': same bytes)
        at += take
    return run  # type: ignore[return-value]
