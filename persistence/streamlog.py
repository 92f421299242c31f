"""A stream's records on disk: segment files, a sparse offset and timestamp index per segment.

Layout (see FORMAT.md)::

    streams/<vhost>/<stream>/<base-offset>.seg   STREAM records, offset order
    streams/<vhost>/<stream>/<base-offset>.idx   the index of a sealed segment
    streams/<vhost>/<stream>/offsets/            stored reader offsets (a state log)

Memory per stream is the index: one ``(offset, timestamp, position)`` triple per
``INDEX_EVERY_BYTES`` of records, in a flat ``array('q')`` per segment (osiris and Kafka keep the
same sparse index). Records are read back with ``pread`` from the position the index gives, only
up to the bytes the writer thread has written: in bounded chunks on the spot (:meth:`read`), or
sequentially ahead in the store's reader thread through a cursor (streamcursor.py), as readers
behind the tail do. Retention deletes whole
segments, oldest first, never the one being written. Writes ride on the file store's batches
(group commit, fsync policy, failure handling) as chunks of this log.

A sealed segment's index is written next to it when the next segment starts; a restart trusts an
index only if its CRC holds and it covers exactly the segment file's current length, and scans
the segment otherwise (the segment being written is always scanned).
"""
from __future__ import annotations

import bisect
import errno
import logging
import os
import struct
from array import array
from collections import OrderedDict, deque
from typing import Any, Awaitable

import crc32c

from .records import (FILE_HEADER_SIZE, RECORD_HEADER, RECORD_HEADER_SIZE, STREAM,
                      array_from_disk, array_to_disk, encode_record, file_header,
                      parse_file_header, scan, segment_name, truncate_at_problem)
from .streamcursor import StreamCursor, parse_records
from .streammigration import migrate_legacy
from .writer import Chunk, StoreError

log = logging.getLogger("manifold.persistence")

#: one sparse index entry per this many bytes of records (and one for each segment's first)
INDEX_EVERY_BYTES = 64 * 1024
#: the smallest read (a record header and a small record fit; fewer syscalls than exact reads)
MIN_READ_BYTES = 4096
_TIMESTAMP = struct.Struct(">Q")
INDEX_MAGIC = b"MFIDX\x00"
INDEX_VERSION = 1
# magic(6) version(u16) base(u64) segment_bytes(u64) last_offset(q) first_ts(q) last_ts(q) count(u32)
INDEX_HEADER = struct.Struct(">6sHQQqqqI")
_ENTRY = struct.Struct(">qqq")


def _stream_payload(timestamp_ms: int, data: bytes) -> bytes:
    return _TIMESTAMP.pack(timestamp_ms) + data


class StreamSegment:
    __slots__ = ("base", "path", "size", "written", "last_offset", "first_ts", "last_ts",
                 "index", "poisoned", "sealed")

    def __init__(self, base: int, path: str, size: int):
        self.base = base
        self.path = path
        #: bytes of the file, handed to the writer or not
        self.size = size
        #: bytes of the file the writer has written (readable with pread)
        self.written = size
        self.last_offset = base - 1
        self.first_ts = 0
        self.last_ts = 0
        #: sparse index, flat: offset, timestamp_ms, byte position, offset, ...
        self.index = array("q")
        self.poisoned = False
        #: its index file was handed to the writer (the next segment started)
        self.sealed = False

    def note(self, offset: int, timestamp_ms: int, position: int) -> None:
        """Account a record at ``position``; index it if it starts a new index interval."""
        index = self.index
        if not index or position - index[-1] >= INDEX_EVERY_BYTES:
            index.extend((offset, timestamp_ms, position))
        if self.last_offset < self.base:
            self.first_ts = timestamp_ms
        self.last_offset = offset
        self.last_ts = timestamp_ms

    def position_for(self, offset: int) -> int:
        """Byte position of the last indexed record at or before ``offset``."""
        return self.span_for(offset)[0]

    def span_for(self, offset: int) -> tuple[int, int]:
        """(byte position of the last indexed record at or before ``offset``, bytes at most to
        skip from there to reach the record of ``offset``): the next index entry bounds it."""
        offsets = self.index[0::3]
        i = bisect.bisect_right(offsets, offset) - 1
        if i < 0:
            return FILE_HEADER_SIZE, max(0, self.written - FILE_HEADER_SIZE)
        position = self.index[3 * i + 2]
        if offsets[i] == offset:
            return position, 0
        following = self.index[3 * i + 5] if 3 * i + 5 < len(self.index) else self.written
        return position, max(0, following - position)

    def forget_bytes(self, start: int, length: int) -> None:
        """Bytes ``[start, start + length)`` are gone from the file (a failed chunk cut back):
        drop their index entries and move the ones after them back."""
        entries = array("q")
        index = self.index
        for i in range(0, len(index), 3):
            position = index[i + 2]
            if position < start:
                entries.extend(index[i:i + 3])
            elif position >= start + length:
                entries.extend((index[i], index[i + 1], position - length))
        self.index = entries

    def entry_before_time(self, timestamp_ms: int) -> int:
        """Offset of the last indexed record stamped before ``timestamp_ms`` (the segment's
        base if none): reading on from there finds the first record at or after it."""
        stamps = self.index[1::3]
        i = bisect.bisect_left(stamps, timestamp_ms) - 1
        return self.index[3 * i] if i >= 0 else self.base

    def encode_index(self) -> bytes:
        body = array_to_disk(self.index)
        head = INDEX_HEADER.pack(INDEX_MAGIC, INDEX_VERSION, self.base, self.size,
                                 self.last_offset, self.first_ts, self.last_ts,
                                 len(self.index) // 3)
        data = head + body
        return data + struct.pack(">I", crc32c.crc32c(data))

    def load_index(self, data: bytes, file_size: int) -> bool:
        """Take a stored index if it is intact and covers exactly the file as it is now."""
        if len(data) < INDEX_HEADER.size + 4:
            return False
        if crc32c.crc32c(data[:-4]) != struct.unpack(">I", data[-4:])[0]:
            return False
        magic, version, base, size, last, first_ts, last_ts, count = INDEX_HEADER.unpack_from(data)
        if (magic != INDEX_MAGIC or version != INDEX_VERSION or base != self.base or
                size != file_size or len(data) != INDEX_HEADER.size + count * _ENTRY.size + 4):
            return False
        self.index = array_from_disk("q", data[INDEX_HEADER.size:-4])
        self.size = self.written = size
        self.last_offset, self.first_ts, self.last_ts = last, first_ts, last_ts
        return True


def read_span(pread: Any, path: str, position: int, skip: int, end: int, offset: int,
              visible: int, max_bytes: int) -> list:
    """Records of one segment file from the first at or after ``offset`` up to ``visible``,
    about ``max_bytes`` of them (at least one, if any): ``pread(path, length, position)`` reads
    (on the event loop or in a reader thread). The first read covers at most ``skip`` bytes of
    records before ``offset`` (the sparse index bounds it) and ``max_bytes`` more."""
    out: list = []
    want = max(max_bytes, MIN_READ_BYTES)
    length = skip + want
    while position < end and not out:
        length = min(length, end - position)
        data = pread(path, length, position)
        records, used = parse_records(data, position)
        if not records:
            # One record bigger than the read: read exactly it.
            size = RECORD_HEADER.unpack_from(data, 0)[4] + RECORD_HEADER_SIZE
            data = pread(path, size, position)
            records, used = parse_records(data, position)
            if not records:
                raise OSError(f"{path}: unreadable record at byte {position}")
        out = [r for r in records if offset <= r[0] <= visible]
        position += used
        length = want
        if records[-1][0] >= visible:
            break
    return out


class SegmentReader:
    """The reader thread's side: ``pread`` of segment files through a small LRU of read-only
    descriptors that only that thread touches (so a read costs one system call, and the thread
    takes the interpreter lock as little as possible while the event loop is busy)."""

    def __init__(self, max_open: int):
        self.max_open = max(1, max_open)
        self._fds: OrderedDict[str, int] = OrderedDict()

    def read(self, fs: Any, path: str, length: int, position: int) -> bytes:
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = fs.open(path, os.O_RDONLY)
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._fds:
                    raise
                self.close_all(fs)  # out of descriptors: give ours back and try once more
                fd = fs.open(path, os.O_RDONLY)
            self._fds[path] = fd
            while len(self._fds) > self.max_open:
                fs.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(path)
        data = fs.pread(fd, length, position)
        if len(data) != length:
            raise OSError(errno.EIO, f"{path}: short read at byte {position}")
        return data

    def forget(self, fs: Any, path: str) -> None:
        """The file is deleted (retention): close it, so its space is freed."""
        fd = self._fds.pop(path, None)
        if fd is not None:
            fs.close(fd)

    def close_all(self, fs: Any) -> None:
        for fd in self._fds.values():
            fs.close(fd)
        self._fds.clear()


class FileStreamLog:
    """One stream's segments. Offsets are assigned by the caller, in order, from
    :attr:`next_offset`; a record is readable from disk once :attr:`written_offset` reached it."""

    def __init__(self, store: Any, directory: str, segment_bytes: int,
                 legacy_directory: str | None = None):
        self.store = store
        self.directory = directory
        #: where the build before streams on disk kept this stream (a queue log of ENQUEUE
        #: records): migrated into segments at the first start (streammigration.py)
        self.legacy_directory = legacy_directory
        self.segment_bytes = segment_bytes
        self.segments: list[StreamSegment] = []
        self._bases: list[int] = []
        self.chunks: list[Chunk] = []
        self.dropped = False
        self.next_offset = 0
        #: the highest offset whose bytes are written to its segment file
        self.written_offset = -1
        self.total_bytes = 0
        self.recovery_problems: list[str] = []
        #: called when more records became readable from disk (the owner's cache may shrink)
        self.on_written: Any = None
        #: called with the offsets of records a failed write lost
        self.on_lost: Any = None
        self.offsets_log = store._log(os.path.join(directory, "offsets"))

    @property
    def first_offset(self) -> int:
        return self.segments[0].base if self.segments else self.next_offset

    # ------------------------------------------------------------------ recovery
    def recover(self) -> None:
        fs = self.store.fs
        if self.legacy_directory is not None:
            migrate_legacy(fs, self.legacy_directory, self.directory, self.segment_bytes)
        try:
            names = sorted(fs.listdir(self.directory))
        except FileNotFoundError:
            names = []
        seg_names = [n for n in names if n.endswith(".seg")]
        for i, name in enumerate(seg_names):
            path = os.path.join(self.directory, name)
            idx_name = name[:-4] + ".idx"
            last = i == len(seg_names) - 1
            segment = None
            if not last and idx_name in names:
                segment = self._from_index(path, os.path.join(self.directory, idx_name))
            if segment is None:
                segment = self._scan(path)
            if segment is None:
                continue
            self.segments.append(segment)
            self._bases.append(segment.base)
            self.total_bytes += segment.size
            self.next_offset = max(self.next_offset, segment.last_offset + 1, segment.base)
        for problem in self.recovery_problems:
            log.warning("recovery: %s", problem)
        self.written_offset = self.next_offset - 1

    def _from_index(self, path: str, idx_path: str) -> StreamSegment | None:
        fs = self.store.fs
        try:
            size = os.stat(path).st_size
            data = fs.read_file(idx_path)
        except OSError:
            return None
        base = int(os.path.basename(path)[:-4])
        segment = StreamSegment(base, path, size)
        return segment if segment.load_index(data, size) else None

    def _scan(self, path: str) -> StreamSegment | None:
        fs = self.store.fs
        data = fs.read_file(path)  # one segment at a time (the segment size bounds it)
        base = parse_file_header(data)
        result = scan(data)
        if base is None:
            self.recovery_problems.append(f"{path}: {result.problem}; file removed")
            fs.unlink(path)
            return None
        if result.problem is not None:
            truncate_at_problem(fs, path, result.problem, result.good_bytes,
                                len(data) - result.good_bytes, self.recovery_problems)
        segment = StreamSegment(base, path, result.good_bytes)
        for record in result.records:
            if record.kind == STREAM:
                segment.note(record.msg_id, _TIMESTAMP.unpack_from(record.payload)[0],
                             record.position)
        return segment

    # ------------------------------------------------------------------ writing (event loop side)
    def append(self, offset: int, timestamp_ms: int, data: bytes) -> Awaitable[None] | None:
        segment = self.segments[-1] if self.segments else None
        if segment is None or segment.poisoned or segment.size >= self.segment_bytes:
            chunk = self._rotate(offset)
            segment = chunk.segment
        else:
            chunk = self._open_chunk(segment)
        record = encode_record(STREAM, offset, _stream_payload(timestamp_ms, data))
        segment.note(offset, timestamp_ms, segment.size)
        chunk.data += record
        chunk.ids.append(offset)
        segment.size += len(record)
        self.total_bytes += len(record)
        self.next_offset = offset + 1
        future = None
        if self.store.fsync != "never":
            future = self.store._loop.create_future()
            chunk.waiters.append(future)
        self.store._dirty(self)
        return future

    def _open_chunk(self, segment: StreamSegment) -> Chunk:
        if self.chunks and self.chunks[-1].segment is segment and self.chunks[-1].ids:
            return self.chunks[-1]
        return self._new_chunk(segment, segment.size, False)

    def _new_chunk(self, segment: Any, start: int, create: bool, path: str = "") -> Chunk:
        chunk = Chunk(self, segment, path or segment.path, start, create)
        self.chunks.append(chunk)
        # Learn when the bytes are in the file, whatever the fsync policy, to read them back.
        done = self.store._loop.create_future()
        chunk.waiters.append(done)
        done.add_done_callback(lambda f, c=chunk: self._chunk_written(c, f))
        return chunk

    def _chunk_written(self, chunk: Chunk, future: Any) -> None:
        if future.cancelled() or future.exception() is not None or not chunk.ids:
            return
        segment = chunk.segment
        segment.written = max(segment.written, chunk.start + len(chunk.data))
        self.written_offset = max(self.written_offset, chunk.ids[-1])
        if self.on_written is not None:
            self.on_written()

    def _rotate(self, base: int) -> Chunk:
        if self.segments:
            sealed = self.segments[-1]
            if not sealed.sealed:
                # The sealed segment's index goes out after its last records (same batch order).
                sealed.sealed = True
                self._new_chunk(sealed, 0, True, sealed.path[:-4] + ".idx").data += \
                    sealed.encode_index()
            base = max(base, sealed.base + 1)
        path = os.path.join(self.directory, segment_name(base))
        segment = StreamSegment(base, path, FILE_HEADER_SIZE)
        segment.written = 0
        self.segments.append(segment)
        self._bases.append(base)
        self.total_bytes += FILE_HEADER_SIZE
        chunk = self._new_chunk(segment, 0, True)
        chunk.data += file_header(base)
        return chunk

    def take_chunks(self) -> list[Chunk]:
        chunks, self.chunks = self.chunks, []
        return chunks

    def chunk_failed(self, chunk: Chunk) -> None:
        """The writer could not store ``chunk``: its records are lost (their publishers are
        refused, :attr:`on_lost` hears of them, readers never see them: nothing past
        :attr:`written_offset` is read). A chunk the writer cut back off the file is forgotten
        and the records after it move back; otherwise the segment is retired (nothing more is
        appended to it), its file is cut back here so that a restart cannot bring back records
        that were refused, and the records still waiting for it are refused too."""
        segment = chunk.segment
        if not chunk.ids or not isinstance(segment, StreamSegment):
            return  # an index file: a restart scans the segment instead
        lost = list(chunk.ids)
        length = len(chunk.data)
        if chunk.rolled_back and not segment.poisoned:
            segment.forget_bytes(chunk.start, length)
            segment.size -= length
            self.total_bytes -= length
            for later in self.chunks:
                if later.segment is segment:
                    later.start -= length
        else:
            segment.poisoned = True
            self._cut_back(chunk)
            for later in [c for c in self.chunks if c.segment is segment]:
                self.chunks.remove(later)
                lost += later.ids
                self._refuse(later, chunk.error)
            self.total_bytes -= segment.size - chunk.start
            segment.size = chunk.start
            segment.forget_bytes(chunk.start, 1 << 62)
            if chunk.create and segment in self.segments:
                # Its file is gone: the segment never was (an older one stays the oldest).
                i = self.segments.index(segment)
                del self.segments[i], self._bases[i]
        if self.on_lost is not None:
            self.on_lost(lost)

    def _cut_back(self, chunk: Chunk) -> None:
        """Take a failed chunk's bytes off the file (a new file goes), durably; if that fails
        too, a restart may find them (as after a failed fsync nobody knows what is on disk)."""
        fs = self.store.fs
        try:
            if chunk.create:
                try:
                    fs.unlink(chunk.path)
                except FileNotFoundError:
                    pass
                fs.fsync_dir(os.path.dirname(chunk.path))
            else:
                fs.truncate_file(chunk.path, chunk.start)
        except OSError as exc:
            log.error("cannot cut %s back to %d bytes after a failed write: %s", chunk.path,
                      chunk.start, exc)

    @staticmethod
    def _refuse(chunk: Chunk, error: OSError | None) -> None:
        code = (error.errno if error is not None else None) or errno.EIO
        for waiter in chunk.waiters:
            if not waiter.done():
                waiter.set_exception(StoreError(code, f"not stored: {error}"))

    # ------------------------------------------------------------------ reading
    #: readers behind the tail read through a :meth:`cursor` (a reader thread), not inline
    reads_inline = False

    def read(self, offset: int, max_bytes: int) -> list[tuple[int, int, bytes]]:
        """Records from the first one at or after ``offset`` (up to :attr:`written_offset`),
        about ``max_bytes`` of them (at least one), read now with ``pread``."""
        for path, position, skip, end in self._spans(offset, len(self.segments))[0]:
            records = read_span(self.store._pread, path, position, skip, end, offset,
                                self.written_offset, max_bytes)
            if records:
                return records
        return []

    def cursor(self, offset: int, budget_bytes: int, read_bytes: int,
               on_ready: Any) -> StreamCursor:
        """Records from ``offset`` on, read ahead in the store's reader thread (several reads in
        flight, within ``budget_bytes``): streamcursor.py."""
        return StreamCursor(self, offset, budget_bytes, read_bytes, on_ready)

    def _spans(self, offset: int, most: int) -> tuple[list[tuple[str, int, int, int]], int]:
        """(path, position, skip, end) of up to ``most`` segments that may hold ``offset`` or
        the records after it, in order; and the offset after the last of them."""
        spans = []
        segments = self.segments
        after = offset
        i = max(0, bisect.bisect_right(self._bases, offset) - 1)
        while i < len(segments) and len(spans) < most:
            segment = segments[i]
            if segment.last_offset >= offset and segment.written > FILE_HEADER_SIZE:
                position, skip = segment.span_for(offset)
                spans.append((segment.path, position, skip, segment.written))
            after = max(after, segment.last_offset + 1)
            i += 1
        return spans, after

    def _read_segment(self, segment: StreamSegment, offset: int, max_bytes: int) -> list:
        position, skip = segment.span_for(offset)
        return read_span(self.store._pread, segment.path, position, skip, segment.written, offset,
                         self.written_offset, max_bytes)

    def offset_at(self, timestamp_ms: int) -> int:
        """The first record stamped at or after ``timestamp_ms`` (next_offset if none)."""
        for segment in self.segments:
            if segment.last_ts < timestamp_ms or segment.last_offset < segment.base:
                continue
            if segment.written <= FILE_HEADER_SIZE:
                break  # not readable yet: the caller's cache holds the tail
            offset = segment.entry_before_time(timestamp_ms)
            while True:
                records = self._read_segment(segment, offset, 64 * 1024)
                if not records:
                    break
                for record_offset, stamp, _ in records:
                    if stamp >= timestamp_ms:
                        return record_offset
                offset = records[-1][0] + 1
        return self.next_offset

    # ------------------------------------------------------------------ retention
    def trim(self, max_bytes: int | None, oldest_ms: int | None) -> int:
        """Delete whole segments from the head (never the one being written) while the stream is
        over ``max_bytes`` or the segment's newest record is older than ``oldest_ms``. Returns
        how many segments went."""
        gone = []
        segments = self.segments
        while len(segments) > 1 and (
                (max_bytes is not None and self.total_bytes > max_bytes) or
                (oldest_ms is not None and segments[0].last_ts < oldest_ms)):
            if segments[0].last_offset > self.written_offset:
                break  # still being written: read from it, delete it later
            segment = segments.pop(0)
            self._bases.pop(0)
            self.total_bytes -= segment.size
            self.store._forget_read(segment.path)
            gone += [segment.path, segment.path[:-4] + ".idx"]
        if gone:
            self.store._unlink_later(gone)
        return len(gone) // 2

    def drop(self) -> None:
        self.dropped = True
        for chunk in self.chunks:
            for waiter in chunk.waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self.chunks.clear()
        for segment in self.segments:
            self.store._forget_read(segment.path)
        self.offsets_log.drop()
        self.store._forget(self)


class MemoryStreamLog:
    """The same interface with the records in memory, for a broker without a data directory;
    segments (lists of records) keep retention whole-segment, as on disk."""

    def __init__(self, segment_bytes: int, memory: Any = None):
        self.segment_bytes = segment_bytes
        self.memory = memory
        self.segments: deque[list[tuple[int, int, bytes]]] = deque()
        self._sizes: deque[int] = deque()
        self.next_offset = 0
        self.total_bytes = 0
        self.offsets_log = None
        self.on_written: Any = None
        self.on_lost: Any = None

    #: records are in memory: :meth:`read` is as cheap as a reader thread's hand-over
    reads_inline = True

    @property
    def first_offset(self) -> int:
        return self.segments[0][0][0] if self.segments else self.next_offset

    @property
    def written_offset(self) -> int:
        return self.next_offset - 1

    def recover(self) -> None:
        pass

    def append(self, offset: int, timestamp_ms: int, data: bytes) -> None:
        if not self.segments or self._sizes[-1] >= self.segment_bytes:
            self.segments.append([])
            self._sizes.append(0)
        self.segments[-1].append((offset, timestamp_ms, data))
        self._sizes[-1] += len(data)
        self._account(len(data))
        self.next_offset = offset + 1
        return None

    def _account(self, delta: int) -> None:
        self.total_bytes += delta
        if self.memory is not None:
            self.memory.add(delta)

    def read(self, offset: int, max_bytes: int) -> list[tuple[int, int, bytes]]:
        out: list = []
        size = 0
        for segment in self.segments:
            if segment[-1][0] < offset:
                continue
            start = max(0, offset - segment[0][0])
            for record in segment[start:]:
                out.append(record)
                size += len(record[2])
                if size >= max_bytes:
                    return out
        return out

    def offset_at(self, timestamp_ms: int) -> int:
        for segment in self.segments:
            if segment[-1][1] < timestamp_ms:
                continue
            stamps = [r[1] for r in segment]
            return segment[bisect.bisect_left(stamps, timestamp_ms)][0]
        return self.next_offset

    def trim(self, max_bytes: int | None, oldest_ms: int | None) -> int:
        count = 0
        while len(self.segments) > 1 and (
                (max_bytes is not None and self.total_bytes > max_bytes) or
                (oldest_ms is not None and self.segments[0][-1][1] < oldest_ms)):
            self.segments.popleft()
            self._account(-self._sizes.popleft())
            count += 1
        return count

    def drop(self) -> None:
        self.segments.clear()
        self._sizes.clear()
        self._account(-self.total_bytes)
