"""A reader's sequential read-ahead through a stream's segment files, off the event loop.

A reader far behind the tail reads the segments front to back. Its cursor plans reads by byte
position (each read starts where the one before it ends, so the next read does not wait for the
last one to be parsed), keeps several of them in flight in the store's reader thread, and parses
them on the event loop in order as they come back; a record cut by the end of one read is
completed by the next. What a cursor holds (records parsed and not yet taken, the start of a cut
record) plus what it has in flight stays within its budget, so memory per reader is fixed
(a record bigger than the budget is read whole, one read at a time). Kafka's fetch sessions and
osiris's chunk reader read the same way: sequentially, ahead, in large pieces.

A read never goes past the bytes the writer thread has written (``segment.written``), so every
byte read belongs to a whole record that is on disk.
"""
from __future__ import annotations

import bisect
import logging
import struct
from collections import deque
from typing import Any, Callable

import crc32c

from .records import FILE_HEADER_SIZE, RECORD_HEADER, RECORD_HEADER_SIZE, RECORD_MAGIC, STREAM

log = logging.getLogger("manifold.persistence")

_TIMESTAMP = struct.Struct(">Q")


def parse_records(data: bytes | bytearray, position: int, start: int = 0) -> tuple[list, int]:
    """Whole STREAM records in ``data`` (read from byte ``position`` of a segment), from index
    ``start``: ``[(offset, timestamp_ms, payload)]`` and how many bytes they took. Stops at a
    record cut short by the end of ``data``; a corrupt record raises (the file was truncated at
    recovery, so this is a fault of the disk)."""
    out = []
    pos = start
    end = len(data)
    view = memoryview(data)
    try:
        while end - pos >= RECORD_HEADER_SIZE:
            magic, _v, kind, _f, length, offset, crc = RECORD_HEADER.unpack_from(data, pos)
            if magic != RECORD_MAGIC or kind != STREAM:
                raise OSError(f"bad stream record at byte {position + pos}")
            body_at = pos + RECORD_HEADER_SIZE
            if end - body_at < length:
                break
            if crc32c.crc32c(view[body_at:body_at + length],
                             crc32c.crc32c(view[pos:pos + 16])) != crc:
                raise OSError(f"CRC mismatch in stream record at byte {position + pos}")
            timestamp_ms = _TIMESTAMP.unpack_from(data, body_at)[0]
            out.append((offset, timestamp_ms, bytes(view[body_at + 8:body_at + length])))
            pos = body_at + length
    finally:
        view.release()  # (a bytearray cannot be resized while a view of it lives)
    return out, pos - start


class _Read:
    __slots__ = ("segment", "position", "length", "future")

    def __init__(self, segment: Any, position: int, length: int):
        self.segment = segment
        self.position = position
        self.length = length
        self.future: Any = None


class StreamCursor:
    """Records of a :class:`~persistence.streamlog.FileStreamLog` from ``offset`` on.

    :meth:`take` hands out the next record at or after an offset (None while the reads are in
    flight: ``on_ready`` is called on the event loop when some are back); :attr:`exhausted` says
    that nothing more is on disk past what was read (records a failed write lost, or the end of
    what is written). The owner calls :meth:`close` when it stops reading."""

    __slots__ = ("log", "budget_bytes", "read_bytes", "on_ready", "records", "held_bytes",
                 "in_flight", "in_flight_bytes", "carry", "parsed_segment", "segment", "fetch_at",
                 "first_extra", "wanted", "closed")

    def __init__(self, stream_log: Any, offset: int, budget_bytes: int, read_bytes: int,
                 on_ready: Callable[[], None]):
        self.log = stream_log
        self.budget_bytes = budget_bytes
        self.read_bytes = max(1, min(read_bytes, budget_bytes))
        self.on_ready = on_ready
        #: parsed records not taken yet: (offset, timestamp_ms, payload)
        self.records: deque[tuple[int, int, bytes]] = deque()
        #: bytes of ``records`` payloads and of ``carry``
        self.held_bytes = 0
        #: reads handed to the reader thread, in file order (parsed in this order)
        self.in_flight: deque[_Read] = deque()
        self.in_flight_bytes = 0
        #: the start of a record cut by the end of the last read parsed
        self.carry = bytearray()
        self.parsed_segment: Any = None
        #: where the next read starts
        self.segment: Any = None
        self.fetch_at = 0
        #: bytes of records before ``wanted`` the first read covers (the sparse index bounds it)
        self.first_extra = 0
        #: records before this offset are not kept
        self.wanted = offset
        self.closed = False
        self._seek(offset)

    # ------------------------------------------------------------------ the owner's side
    def take(self, position: int) -> tuple[int, int, bytes] | None:
        """The first record held at or after ``position`` (records before it are dropped), and
        more reads started if the budget has room; None if none is held yet."""
        if position > self.wanted:
            self.wanted = position
        records = self.records
        while records and records[0][0] < position:
            self.held_bytes -= len(records.popleft()[2])
        if records:
            record = records.popleft()
            self.held_bytes -= len(record[2])
            if self.held_bytes + self.in_flight_bytes + self.read_bytes <= self.budget_bytes:
                self.fill()
            return record
        self.fill()
        return None

    @property
    def waiting(self) -> bool:
        """Nothing to hand out until a read in flight is back."""
        return not self.records and bool(self.in_flight)

    @property
    def exhausted(self) -> bool:
        """Nothing held, nothing in flight, and no more written bytes to read."""
        return not self.records and not self.in_flight

    def close(self) -> None:
        """Stop: reads still in flight are ignored when they are back."""
        self.closed = True
        self.records.clear()
        self.in_flight.clear()
        self.carry = bytearray()
        self.held_bytes = self.in_flight_bytes = 0

    # ------------------------------------------------------------------ planning reads
    def _seek(self, offset: int) -> None:
        """Plan the next read at the indexed record at or before ``offset``; reads in flight
        are forgotten (the records held stay)."""
        self.in_flight.clear()
        self.in_flight_bytes = 0
        self.held_bytes -= len(self.carry)
        self.carry = bytearray()
        self.parsed_segment = None
        self.wanted = max(self.wanted, offset)
        segments = self.log.segments
        i = max(0, bisect.bisect_right(self.log._bases, offset) - 1)
        while i < len(segments) - 1 and segments[i].last_offset < offset:
            i += 1
        if i >= len(segments):
            self.segment = None
            return
        self.segment = segments[i]
        self.fetch_at, self.first_extra = self.segment.span_for(offset)
        self.fetch_at = max(self.fetch_at, FILE_HEADER_SIZE)

    def fill(self) -> None:
        """Start reads while the budget has room (one at least, when nothing is held or in
        flight), up to what the writer has written."""
        while not self.closed and self.segment is not None:
            if (self.records or self.in_flight) and (
                    self.held_bytes + self.in_flight_bytes + self.read_bytes > self.budget_bytes):
                return
            segment = self.segment
            end = segment.written
            if self.fetch_at >= end:
                if not self._next_segment():
                    return
                continue
            length = min(self.read_bytes + self.first_extra, end - self.fetch_at)
            self.first_extra = 0
            read = _Read(segment, self.fetch_at, length)
            self.fetch_at += length
            self.in_flight.append(read)
            self.in_flight_bytes += length
            read.future = self.log.store._read_later(segment.path, length, read.position)
            read.future.add_done_callback(self._arrived)

    def _next_segment(self) -> bool:
        """Move the plan to the segment after the current one, once the current one is written
        to its end (the writer moved on); False if there is none yet."""
        segment = self.segment
        segments = self.log.segments
        i = bisect.bisect_right(self.log._bases, segment.base)
        if i >= len(segments):
            return False  # the segment being written: wait for more
        if i > 0 and segments[i - 1] is segment and segment.written < segment.size:
            return False  # its last bytes are still on their way to the file
        self.segment = segments[i]
        self.fetch_at = FILE_HEADER_SIZE
        self.first_extra = 0
        return True

    # ------------------------------------------------------------------ reads back (event loop)
    def _arrived(self, _future: Any) -> None:
        if self.closed:
            return
        in_flight = self.in_flight
        changed = False
        while in_flight and in_flight[0].future.done():
            read = in_flight.popleft()
            self.in_flight_bytes -= read.length
            changed = True
            future = read.future
            error = future.exception() if not future.cancelled() else OSError("read cancelled")
            if error is None:
                try:
                    self._parse(read, future.result())
                    continue
                except (OSError, struct.error) as exc:
                    error = exc
            self._failed(read, error)
            break
        if changed:
            self.fill()
            self.on_ready()

    def _parse(self, read: _Read, data: bytes) -> None:
        if read.segment is not self.parsed_segment:
            self.held_bytes -= len(self.carry)
            self.carry = bytearray()  # (a new segment starts with a whole record)
            self.parsed_segment = read.segment
        carry = self.carry
        if carry:
            carry += data
            records, used = parse_records(carry, read.position - len(carry) + len(data))
            self.held_bytes += len(data) - used
            del carry[:used]
        else:
            records, used = parse_records(data, read.position)
            if used < len(data):
                carry += memoryview(data)[used:]
                self.held_bytes += len(carry)
        wanted = self.wanted
        for record in records:
            if record[0] >= wanted:
                self.records.append(record)
                self.held_bytes += len(record[2])

    def _failed(self, read: _Read, error: BaseException) -> None:
        """A read failed: its segment was deleted by retention (go on at the new first
        offset), or it could not be read (say so, and go on at the next segment)."""
        held = self.records[-1][0] + 1 if self.records else self.wanted
        if isinstance(error, FileNotFoundError):
            self._seek(max(held, self.log.first_offset))
            return
        segment = read.segment
        last = self.log.segments[-1] if self.log.segments else None
        after = max(held, (segment.last_offset if segment is not last else
                           self.log.written_offset) + 1)
        log.error("stream segment %s: reading %d bytes at byte %d failed (%s); the reader goes "
                  "on at offset %d", segment.path, read.length, read.position, error, after)
        self._seek(after)
        if segment is last:
            # (from the end of what is written, a record boundary: not the failed bytes again)
            self.segment, self.fetch_at, self.first_extra = segment, segment.written, 0
