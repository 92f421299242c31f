"""Where a queue log's live messages are, in compact arrays: no Python object per message.

Each segment keeps three parallel arrays in id order (a queue's ids only grow, and a segment holds
a contiguous range of them): the message id (8 bytes), the byte position of its ENQUEUE record
(4 bytes; a segment stays far below 4 GiB) and its payload length (4 bytes, -1 once settled or
lost). 16 bytes per message, found by binary search. A settled entry keeps its slot until the
whole segment is deleted by compaction (RabbitMQ's classic queue v2 index keeps per-segment
entries the same way).
"""
from __future__ import annotations

import bisect
from array import array

SETTLED = -1


class SegmentIndex:
    __slots__ = ("ids", "positions", "lengths")

    def __init__(self) -> None:
        self.ids = array("q")
        self.positions = array("I")
        self.lengths = array("i")

    def add(self, msg_id: int, position: int, length: int) -> None:
        ids = self.ids
        if ids and msg_id <= ids[-1]:
            # Out of order (never for a queue's own log): keep the arrays sorted anyway.
            i = bisect.bisect_left(ids, msg_id)
            if i < len(ids) and ids[i] == msg_id:
                self.positions[i], self.lengths[i] = position, length
                return
            ids.insert(i, msg_id)
            self.positions.insert(i, position)
            self.lengths.insert(i, length)
            return
        ids.append(msg_id)
        self.positions.append(position)
        self.lengths.append(length)

    def find(self, msg_id: int) -> int:
        """The slot of a live message, or -1."""
        ids = self.ids
        i = bisect.bisect_left(ids, msg_id)
        if i < len(ids) and ids[i] == msg_id and self.lengths[i] != SETTLED:
            return i
        return -1

    def kill(self, i: int) -> None:
        self.lengths[i] = SETTLED

    def cut_from(self, i: int) -> None:
        """Forget slots ``i`` and after (their records moved to another segment)."""
        del self.ids[i:]
        del self.positions[i:]
        del self.lengths[i:]
