"""One message in one queue, and the states it moves through (see broker/queue.py)."""
from __future__ import annotations

from typing import Any

from .message import Message

READY, DELAYED, UNACKED, GONE = range(4)
#: what an ordinary entry costs in memory besides its body (Entry, Message, Properties, its
#: index, heap and deque slots, allocator slack), measured with 64-byte bodies; counted against
#: the resident budget and by the memory alarm for every message the queue holds in memory
ENTRY_OVERHEAD_BYTES = 400


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

