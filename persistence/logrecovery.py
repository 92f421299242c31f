"""Recovery of a queue log, and its index files (FORMAT.md, "Queue segment index files").

:class:`LogRecovery` is the part of :class:`persistence.filestore.FileQueueLog` that rebuilds
the log's segments at start-up, from each segment's index file when it can be trusted (same
size as the file now, CRC intact, and for the newest segment a clean-shutdown marker) and by
scanning the segment otherwise, and that writes those index files: when a segment is sealed,
once its last chunk is durable, and for the newest segment at a clean close.
"""
from __future__ import annotations

import bisect
import logging
import os
from array import array
from itertools import compress
from typing import Any, Iterator

from .msgindex import MARK_WIDTH, SETTLED, SegmentIndex
from .records import (ENQUEUE, FLAG_READ_ON_RECOVERY, MARK, MARK_PAYLOAD, RECORD_HEADER_SIZE,
                      SETTLE, Walk, parse_file_header, truncate_at_problem)
from .writer import Chunk

log = logging.getLogger("manifold.persistence")


class Segment:
    __slots__ = ("base_id", "path", "live", "size", "poisoned", "index", "written", "indexable")

    def __init__(self, base_id: int, path: str, size: int):
        self.base_id = base_id
        self.path = path
        #: ENQUEUE records in this segment that are not settled
        self.live = 0
        #: bytes of this file: written, handed to the writer, or waiting in an open chunk
        self.size = size
        #: a write here could not be undone, or an fsync failed: nothing more is appended
        self.poisoned = False
        #: where this segment's messages are (compact arrays, see msgindex.py)
        self.index = SegmentIndex()
        #: bytes of this file the writer has written (pread beyond this reads pending chunks)
        self.written = size
        #: the index arrays describe the file's records exactly (false after a failed chunk:
        #: the segment then never gets an index file, and recovery scans it)
        self.indexable = True


class Recovery:
    """What :meth:`FileQueueLog.recover` returns: an iterator of ``(msg_id, payload)``. With
    :attr:`spans` (the caller files messages left on disk in bulk) each run of them
    (up to a segment's end or a flagged message) comes as one item ``(first_id, (ids,
    lengths))``, two arrays, instead of one ``(msg_id, length)`` per message."""
    __slots__ = ("spans", "replay")

    def __init__(self) -> None:
        self.spans = False
        self.replay: Iterator[tuple[int, Any]] = iter(())

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return self.replay


class LogRecovery:
    """Mixed into FileQueueLog (which provides store, directory, segments, chunks, _writing,
    dropped, indexed, max_id_seen, recovery_problems, _locate, read and _compact)."""
    store: Any
    directory: str
    segments: list[Segment]
    chunks: list[Chunk]
    _writing: list[Chunk]
    dropped: bool
    indexed: bool
    max_id_seen: int
    recovery_problems: list[str]
    indexed_segments: int
    scanned_segments: int
    _marks: dict[int, tuple[int, int, int]]

    # ------------------------------------------------------------------ recovery
    def recover(self, resident_bytes: int | None = None, spans: bool = False) -> Recovery:
        """Rebuild the unsettled set from the segments; truncate each at its first bad record.

        Yields ``(msg_id, payload)`` in id order. Payloads past the first ``resident_bytes``
        (None: no limit) are left on disk and come as their length (an int): fetch them with
        :meth:`read`, so a backlog larger than memory can be recovered. The scan is done before
        the first item; the iterator holds nothing per message (a million messages are not a
        million tuples). A segment with a trustworthy index file (see :meth:`_from_index`) is
        not read at all: its arrays are loaded from the index."""
        fs = self.store.fs
        read_anyway: set[int] = set()  # flagged messages: their payload comes back past the budget
        try:
            names = sorted(fs.listdir(self.directory))
        except FileNotFoundError:
            names = []
        segment_names = [n for n in names if n.endswith(".seg")]
        index_names = {n for n in names if n.endswith(".idx")}
        for orphan in index_names - {n[:-4] + ".idx" for n in segment_names}:
            fs.unlink(os.path.join(self.directory, orphan))  # its segment was compacted
        # Sealed segments scanned for want of a usable index (one written by an older build, or
        # cut back after a failed write): their index is written now, so that the next start
        # need not scan them again. Frozen right after the scan: later segments' SETTLEs are
        # in those segments' own index files.
        rescanned: list[tuple[Segment, SegmentIndex]] = []
        for i, name in enumerate(segment_names):
            path = os.path.join(self.directory, name)
            segment = None
            # The newest segment may have grown since its index was written, unless the last
            # run ended cleanly (FileStore.close wrote every log's index and the marker last).
            if (self.indexed and name[:-4] + ".idx" in index_names and
                    (i < len(segment_names) - 1 or self.store.clean_start)):
                segment = self._from_index(path)
            if segment is None:
                segment = self._scan(path)
                if segment is not None and i < len(segment_names) - 1:
                    rescanned.append((segment, segment.index.snapshot()))
            if segment is None:
                continue
            index = segment.index
            if index.flagged:
                read_anyway.update(index.ids_flagged(FLAG_READ_ON_RECOVERY))
            if index.ids and index.ids[-1] > self.max_id_seen:
                self.max_id_seen = index.ids[-1]
        marks = self._marks = self._live_marks()
        for segment in self.segments[:-1]:  # kept only for the next index file of the newest
            segment.index.settled = array("q")
            segment.index.marks = array("q")
        for problem in self.recovery_problems:
            log.warning("recovery: %s", problem)
        if self.segments:
            # New ids start at or above the newest segment's name (it may hold only tombstones,
            # named above ids that never reached the disk): names stay the bounds _locate uses.
            self.max_id_seen = max(self.max_id_seen, self.segments[-1].base_id - 1)
        self.store._unlink_later(self._compact())
        for segment, snapshot in rescanned:
            self._index_rescanned(segment, snapshot)
        recovery = Recovery()
        recovery.spans = spans
        recovery.replay = self._replay(resident_bytes, read_anyway, marks, recovery)
        return recovery

    def _live_marks(self) -> dict[int, tuple[int, int, int]]:
        """The latest MARK of every live message that has one (segments and their marks are in
        record order, so a later one overwrites)."""
        latest: dict[int, tuple[int, int, int]] = {}
        for segment in self.segments:
            marks = segment.index.marks
            for i in range(0, len(marks), MARK_WIDTH):
                latest[marks[i]] = (marks[i + 1], marks[i + 2], marks[i + 3])
        return {msg_id: mark for msg_id, mark in latest.items()
                if self._locate(msg_id) is not None}

    def marks(self) -> dict[int, tuple[int, int, int]]:
        """After :meth:`recover`: ``{msg_id: (receive count, invisible until ms, first receive
        ms)}`` for the live messages with a MARK. Handed over once (the log lets go of it)."""
        marks, self._marks = self._marks, {}
        return marks

    def _from_index(self, path: str) -> Segment | None:
        """The segment as its index file describes it, if the index is intact and was made for
        the file as it is now (same size: segments only grow, so the same bytes); else None."""
        fs = self.store.fs
        index_path = path[:-4] + ".idx"
        try:
            base_id = int(os.path.basename(path)[:-4])
            size = fs.size(path)
            index = SegmentIndex.decode(fs.read_file(index_path), base_id, size)
        except (OSError, ValueError) as exc:
            log.info("recovery: %s: unreadable (%s); scanning the segment", index_path, exc)
            return None
        if index is None:
            log.info("recovery: %s does not match its segment; scanning the segment", index_path)
            return None
        segment = Segment(base_id, path, size)
        segment.index = index
        segment.live = index.live_count()
        settled = index.settled
        for i in range(0, len(settled), 2):  # SETTLEs here of messages in older segments
            self._kill_range(settled[i], settled[i + 1])
            if settled[i + 1] > self.max_id_seen:
                self.max_id_seen = settled[i + 1]
        self.segments.append(segment)
        self.indexed_segments += 1
        return segment

    def _kill_range(self, first: int, last: int) -> None:
        for segment in self.segments:
            if segment.index.ids and segment.index.ids[0] <= last and \
                    segment.index.ids[-1] >= first:
                segment.live -= segment.index.kill_range(first, last)

    def _scan(self, path: str) -> Segment | None:
        """Read the segment record by record; truncate it at its first bad record."""
        fs = self.store.fs
        data = fs.read_file(path)  # one segment at a time (segment_bytes bounds it)
        base_id = parse_file_header(data)
        if base_id is None:
            self.recovery_problems.append(
                f"{path}: missing or unknown segment header; file removed")
            fs.unlink(path)
            return None
        self.scanned_segments += 1
        segment = Segment(base_id, path, 0)
        self.segments.append(segment)  # (first: _locate finds it for its own tombstones)
        index = segment.index
        walked = Walk(data)
        for kind, msg_id, position, length, flags in walked:
            if msg_id > self.max_id_seen:
                self.max_id_seen = msg_id
            if kind == ENQUEUE:
                index.add(msg_id, position, length)
                segment.live += 1
                if flags:
                    index.flag(msg_id, flags)
            elif kind == MARK:
                at = position + RECORD_HEADER_SIZE
                if length == MARK_PAYLOAD.size:  # (a longer one from a later version: skipped)
                    index.note_mark(msg_id, *MARK_PAYLOAD.unpack_from(data, at))
            elif kind == SETTLE:
                found = self._locate(msg_id)
                if found is not None:
                    found[0].index.kill(found[1])
                    found[0].live -= 1
                if msg_id < base_id:
                    index.note_settled(msg_id)
        del data
        if walked.problem is not None:
            truncate_at_problem(fs, path, walked.problem, walked.good_bytes, walked.dropped,
                                self.recovery_problems)
        segment.size = segment.written = walked.good_bytes
        return segment

    def _replay(self, resident_bytes: int | None, read_anyway: set[int], marked: dict,
                recovery: "Recovery") -> Iterator[tuple[int, Any]]:
        budget = resident_bytes
        singles = sorted(read_anyway.union(marked))
        for segment in list(self.segments):
            index = segment.index
            ids, lengths = index.ids, index.lengths
            # Flagged messages are read past the budget, and marked ones come one by one (the
            # queue gives them an entry of their own): a span of the rest stops at each.
            stops = [bisect.bisect_left(ids, m) for m in singles[
                bisect.bisect_left(singles, ids[0]):bisect.bisect_right(singles, ids[-1])]
            ] if ids else []
            i, end = 0, len(ids)
            while i < end:
                length = lengths[i]
                if length == SETTLED:
                    i += 1
                    continue
                msg_id = ids[i]
                if budget is None or length <= budget:
                    yield msg_id, self.read(msg_id)
                    if budget is not None:
                        budget -= length
                elif msg_id in read_anyway:
                    yield msg_id, self.read(msg_id)
                elif recovery.spans and msg_id not in marked:
                    k = bisect.bisect_right(stops, i)
                    stop = stops[k] if k < len(stops) else end
                    span_ids, span_lengths = ids[i:stop], lengths[i:stop]
                    if span_lengths.count(SETTLED):
                        live = list(map(SETTLED.__ne__, span_lengths))
                        span_ids = array("q", compress(span_ids, live))
                        span_lengths = array("i", compress(span_lengths, live))
                    yield msg_id, (span_ids, span_lengths)
                    i = stop
                    continue
                else:
                    budget = 0  # keep the resident part a prefix of the queue
                    yield msg_id, length  # the payload's length stands in for it
                i += 1

    # ------------------------------------------------------------------ index files
    def _seal(self, segment: Segment) -> None:
        """No more records go to ``segment``: write its index once its last chunk is durable."""
        if not (self.indexed and segment.indexable) or self.store._loop is None:
            return
        # Frozen now: the SETTLEs of its messages so far are in it or waiting in its chunks;
        # later ones go to newer segments (and their index files).
        snapshot, size = segment.index.snapshot(), segment.size
        segment.index.settled = array("q")
        segment.index.marks = array("q")
        pending = [c for c in self._writing + self.chunks if c.segment is segment]
        if not pending:
            self._queue_index(segment, snapshot, size)
            return
        done = self.store._loop.create_future()
        pending[-1].waiters.append(done)  # resolved after the batch's fsync, or failed
        done.add_done_callback(
            lambda f: f.cancelled() or f.exception() is not None or
            self._queue_index(segment, snapshot, size))

    def _index_rescanned(self, segment: Segment, snapshot: SegmentIndex) -> None:
        """Write the index of a sealed segment recovery had to scan. The segment is fsynced
        first: what the scan read may still be only in the page cache after a crash, and an
        index must never describe records the disk does not hold."""
        if not self.indexed or self.store._loop is None or segment not in self.segments:
            return
        try:
            self.store.fs.fsync_file(segment.path)
        except OSError as exc:  # it is scanned again at the next start
            log.warning("recovery: cannot fsync %s to index it: %s", segment.path, exc)
            return
        self._queue_index(segment, snapshot, segment.size)

    def _queue_index(self, segment: Segment, index: SegmentIndex, size: int) -> None:
        """Append the index file's bytes as a chunk of their own (``segment`` None: the log's
        offsets and reads never look at it; a failure only means the next start scans)."""
        if self.dropped or not segment.indexable or segment not in self.segments:
            return
        chunk = Chunk(self, None, segment.path[:-4] + ".idx", 0, True)
        chunk.data += index.encode(segment.base_id, size)
        self.chunks.append(chunk)
        self.store._dirty(self)

    def index_at_shutdown(self) -> None:
        """Queue the newest segment's index (every write done: FileStore.close)."""
        if not self.indexed or self.dropped or not self.segments:
            return
        segment = self.segments[-1]
        if segment.indexable and not segment.poisoned and segment.written == segment.size:
            self._queue_index(segment, segment.index.snapshot(), segment.size)
