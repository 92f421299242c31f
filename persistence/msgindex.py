"""Where a queue log's live messages are, in compact arrays: no Python object per message.

Each segment keeps three parallel arrays in id order (a queue's ids only grow, and a segment holds
a contiguous range of them): the message id (8 bytes), the byte position of its ENQUEUE record
(4 bytes; a segment stays far below 4 GiB) and its payload length (4 bytes, -1 once settled or
lost). 16 bytes per message, found by binary search. A settled entry keeps its slot until the
whole segment is deleted by compaction (RabbitMQ's classic queue v2 index keeps per-segment
entries the same way).

Two small extras make the segment's index file (``<base>.idx``, see FORMAT.md) possible without
reading the segment again: the flags of the few ENQUEUE records that have any, and the ids of
messages in *older* segments whose SETTLE records are in this one, as runs ``first..last`` (a
consumer acks mostly in order, so a drain of a million messages is a handful of runs); and the
MARK records in it (receive state of a message in this segment or an older one: SQS receives,
returns in queues with a delivery limit), four integers each, in record order.
:meth:`SegmentIndex.encode` writes the arrays as they are; :meth:`SegmentIndex.decode` loads them
back with ``array.frombytes``, after checking the CRC32C and that the segment file still has the
size the index was made for.
"""
from __future__ import annotations

import bisect
import struct
from array import array

import crc32c

from .records import array_from_disk, array_to_disk

SETTLED = -1

INDEX_MAGIC = b"MFQIX\x00"
#: version 2 adds the marks; a version 1 file (no marks) is still read
INDEX_VERSION = 2
# magic(6) version(u16) base id(u64) segment size(u64) entries(u32) settled runs(u32) flagged(u32)
INDEX_HEADER = struct.Struct(">6sHQQIII")
# version 2 only, after the header: marks(u32)
MARKS_COUNT = struct.Struct(">I")
#: integers per mark: message id, receive count, invisible until (ms), first receive (ms)
MARK_WIDTH = 4
_CRC = struct.Struct(">I")


class SegmentIndex:
    __slots__ = ("ids", "positions", "lengths", "flagged", "settled", "marks")

    def __init__(self) -> None:
        self.ids = array("q")
        self.positions = array("I")
        self.lengths = array("i")
        #: (id, flags) of the ENQUEUE records with flags, flat
        self.flagged = array("q")
        #: runs (first, last) of ids below this segment's base settled by SETTLEs in it, flat
        self.settled = array("q")
        #: MARK records in this segment, flat (id, receive count, invisible until, first receive)
        self.marks = array("q")

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

    def kill_range(self, first: int, last: int) -> int:
        """Settle every message with an id in ``first..last``; how many were live."""
        lo = bisect.bisect_left(self.ids, first)
        hi = bisect.bisect_right(self.ids, last)
        if lo >= hi:
            return 0
        lengths = self.lengths
        live = (hi - lo) - lengths[lo:hi].count(SETTLED)
        lengths[lo:hi] = array("i", [SETTLED]) * (hi - lo)
        return live

    def live_count(self) -> int:
        return len(self.lengths) - self.lengths.count(SETTLED)

    def cut_from(self, i: int) -> None:
        """Forget slots ``i`` and after (their records moved to another segment)."""
        del self.ids[i:]
        del self.positions[i:]
        del self.lengths[i:]

    # ------------------------------------------------------------------ what the index file adds
    def flag(self, msg_id: int, flags: int) -> None:
        self.flagged.extend((msg_id, flags))

    def ids_flagged(self, flag: int) -> list[int]:
        flagged = self.flagged
        return [flagged[i] for i in range(0, len(flagged), 2) if flagged[i + 1] & flag]

    def note_settled(self, msg_id: int) -> None:
        """A SETTLE in this segment for a message of an older segment."""
        runs = self.settled
        if runs and runs[-1] + 1 == msg_id:
            runs[-1] = msg_id
        else:
            runs.extend((msg_id, msg_id))

    def note_mark(self, msg_id: int, count: int, invisible_until_ms: int,
                  first_receive_ms: int) -> None:
        """A MARK record in this segment (the latest of a message wins at recovery)."""
        self.marks.extend((msg_id, count, invisible_until_ms, first_receive_ms))

    def snapshot(self) -> "SegmentIndex":
        """A copy, frozen as the segment's file is now (later SETTLEs go to newer segments)."""
        copy = SegmentIndex()
        copy.ids = array("q", self.ids)
        copy.positions = array("I", self.positions)
        copy.lengths = array("i", self.lengths)
        copy.flagged = array("q", self.flagged)
        copy.settled = array("q", self.settled)
        copy.marks = array("q", self.marks)
        return copy

    def encode(self, base_id: int, segment_size: int) -> bytes:
        """The index file for a segment of ``segment_size`` bytes whose records this describes."""
        head = INDEX_HEADER.pack(INDEX_MAGIC, INDEX_VERSION, base_id, segment_size, len(self.ids),
                                 len(self.settled) // 2, len(self.flagged) // 2)
        data = b"".join((head, MARKS_COUNT.pack(len(self.marks) // MARK_WIDTH),
                         array_to_disk(self.ids), array_to_disk(self.positions),
                         array_to_disk(self.lengths), array_to_disk(self.settled),
                         array_to_disk(self.flagged), array_to_disk(self.marks)))
        return data + _CRC.pack(crc32c.crc32c(data))

    @classmethod
    def decode(cls, data: bytes, base_id: int, segment_size: int) -> "SegmentIndex | None":
        """The index stored in ``data``, or None unless it is intact, for this segment, and made
        for a file of exactly ``segment_size`` bytes (anything else: scan the segment)."""
        if len(data) < INDEX_HEADER.size + _CRC.size:
            return None
        if crc32c.crc32c(memoryview(data)[:-_CRC.size]) != _CRC.unpack_from(data, len(data) - 4)[0]:
            return None
        magic, version, base, size, count, runs, flagged = INDEX_HEADER.unpack_from(data)
        at = INDEX_HEADER.size
        marks = 0
        if version == 2 and len(data) >= at + MARKS_COUNT.size:
            marks = MARKS_COUNT.unpack_from(data, at)[0]
            at += MARKS_COUNT.size
        if (magic != INDEX_MAGIC or version not in (1, 2) or base != base_id or
                size != segment_size or len(data) != at + count * 16 + runs * 16 +
                flagged * 16 + marks * 8 * MARK_WIDTH + 4):
            return None
        view = memoryview(data)
        index = cls()
        for name, typecode, width in (("ids", "q", 8 * count), ("positions", "I", 4 * count),
                                      ("lengths", "i", 4 * count), ("settled", "q", 16 * runs),
                                      ("flagged", "q", 16 * flagged),
                                      ("marks", "q", 8 * MARK_WIDTH * marks)):
            setattr(index, name, array_from_disk(typecode, view[at:at + width]))
            at += width
        return index
