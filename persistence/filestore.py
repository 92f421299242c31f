"""Durable queues on disk: append-only segment files per log, group-committed fsyncs.

Layout under the data directory (see FORMAT.md)::

    definitions.bin                      durable exchanges, queues, bindings (atomic replace)
    clean-shutdown                       written last by a clean close, removed at open
    queues/<vhost>/<queue>/<base>.seg    a queue's log: ENQUEUE records and SETTLE tombstones
    queues/<vhost>/<queue>/<base>.idx    its index: the segment's arrays (msgindex.py), written
                                         when it is sealed and, for the newest, at a clean close
    state/<name>/<base>.seg              a state log (MQTT retained messages, sessions), same format
    dedup/<vhost>/<queue>/<base>.seg     a queue's deduplication window (same record format)
    spill/<vhost>/<queue>/<base>.seg     transient messages paged out under memory pressure
    streams/<vhost>/<stream>/...         a stream's segments and indexes (streamlog.py)

Writes never block the event loop: appends go into the log's open chunk, and one writer thread
(:mod:`persistence.writer`) writes and fsyncs every dirty log in a batch. Under
``fsync = "always"`` an append's future resolves after the fsync that covers it (group commit);
under ``"interval"`` after the next periodic fsync; under ``"never"`` at once.

A confirm is a promise, so a failure is never swallowed: a chunk whose write, fsync or directory
fsync failed fails the futures of its appends (the adapters turn that into a negative answer).
The loop then repairs the log before anything else is written: if the writer truncated the file
back to where the chunk began, the log's offsets are moved back by the chunk's length; otherwise
(a failed fsync, a failed truncate, a new file that could not be made durable) the segment is
poisoned and the next bytes go to a new segment, as PostgreSQL learned to do after fsync errors.
SETTLE tombstones of a failed chunk are appended again. Files are opened on demand and kept in
small LRU caches, so thousands of durable queues need no file descriptor each.
"""
from __future__ import annotations

import asyncio
import bisect
import errno
import logging
import os
import resource
import urllib.parse
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .fs import FileSystem
from .logrecovery import LogRecovery, Segment
from .msgindex import SETTLED
from .records import (ENQUEUE, FILE_HEADER_SIZE, MARK, MARK_PAYLOAD, RECORD_HEADER_SIZE,
                      append_record, append_settle, file_header, segment_name)
from .streamlog import FileStreamLog, SegmentReader
from .writer import Batch, Chunk, StoreError, Writer

log = logging.getLogger("manifold.persistence")

FSYNC_POLICIES = ("always", "interval", "never")
#: written last by a clean close, removed at open: the newest segments' index files are current
CLEAN_MARKER_NAME = "clean-shutdown"
CLEAN_MARKER = b"MFCLEAN\x00\x00\x01"
#: after a failed batch, wait this long before the next one (a full disk is not retried in a spin)
RETRY_DELAY_S = 0.05


def _base_id(segment: "Segment") -> int:
    return segment.base_id


def _fs_name(name: str) -> str:
    """A vhost or queue name as one safe path component (reversible)."""
    return urllib.parse.quote(name, safe="") or "%2F"


def _descriptor_budget(wanted: int) -> int:
    """Descriptors per cache (one for writing, one for reading): at most an eighth of the open
    file limit, so client connections keep the rest."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, max(4, soft // 8)))


#: read-only descriptors the stream reader thread keeps (readers behind the tail use few files)
READER_OPEN_FILES = 16


class FileQueueLog(LogRecovery):
    def __init__(self, store: "FileStore", directory: str):
        self.store = store
        self.directory = directory
        self.segments: list[Segment] = []
        #: chunks ready for the writer, in order; the last one may still grow (the open chunk)
        self.chunks: list[Chunk] = []
        #: chunks handed to the writer and not yet done (their bytes may not be in the file)
        self._writing: list[Chunk] = []
        #: the segment and slot of the last id found (see _locate)
        self._last_hit: Segment | None = None
        self._last_slot = 0
        self.dropped = False
        self.recovery_problems: list[str] = []
        #: the highest record id ever written (settled or not), so ids are never reused
        self.max_id_seen = -1
        #: whether segments get index files (not for spill logs, nor under fsync "never": an
        #: index must never describe bytes that may not be on the disk)
        self.indexed = store.fsync != "never"
        #: how the last recovery found its segments (tests and logs)
        self.indexed_segments = 0
        self.scanned_segments = 0
        #: what recover() found of MARK records, until marks() hands it over
        self._marks: dict[int, tuple[int, int, int]] = {}

    def _locate(self, msg_id: int) -> tuple[Segment, int] | None:
        """The segment and slot of a live message. A segment holds ids from its base id up to
        the next segment's (ids only grow; a rehomed chunk leaves its old segment)."""
        last = self._last_hit  # recovery and draining look ids up in order: mostly one segment
        if last is not None:
            # A drain asks about one message a few times (holds, read, settle), then about the
            # next: try the last slot and the one after it before a binary search.
            index = last.index
            ids = index.ids
            slot = self._last_slot
            if slot < len(ids) and ids[slot] != msg_id:
                slot += 1
            if slot < len(ids) and ids[slot] == msg_id and index.lengths[slot] != SETTLED:
                self._last_slot = slot
                return last, slot
            slot = index.find(msg_id)
            if slot >= 0:
                self._last_slot = slot
                return last, slot
        segments = self.segments
        i = bisect.bisect_right(segments, msg_id, key=_base_id) - 1
        slot = segments[i].index.find(msg_id) if i >= 0 else -1
        if slot >= 0:
            self._last_hit, self._last_slot = segments[i], slot
            return segments[i], slot
        # A spill log takes ids out of order (a page-out after newer spills): each of its
        # segments is sorted, but their ranges overlap. A miss is rare: look in every one.
        for segment in segments:
            slot = segment.index.find(msg_id)
            if slot >= 0:
                return segment, slot
        return None

    def size_of(self, msg_id: int) -> int:
        segment, slot = self._locate(msg_id)  # type: ignore[misc]
        return segment.index.lengths[slot]

    def holds(self, msg_id: int) -> bool:
        """Whether the log has the message (its append did not fail, it is not settled)."""
        return self._locate(msg_id) is not None

    def read(self, msg_id: int) -> bytes:
        """The payload of a live message: from its segment file, or from the chunk that is
        still on its way there."""
        found = self._locate(msg_id)
        if found is None:
            raise KeyError(msg_id)
        segment, slot = found
        position = segment.index.positions[slot] + RECORD_HEADER_SIZE
        length = segment.index.lengths[slot]
        if position + length > segment.written:
            for chunk in self._writing + self.chunks:
                if chunk.segment is segment and chunk.start <= position < \
                        chunk.start + len(chunk.data):
                    at = position - chunk.start
                    return bytes(chunk.data[at:at + length])
        return self.store._pread(segment.path, length, position)

    # ------------------------------------------------------------------ writing (event loop side)
    def append(self, msg_id: int, data: bytes, flags: int = 0) -> asyncio.Future | None:
        """``flags``: FLAG_READ_ON_RECOVERY for a message recovery must read past the budget."""
        store = self.store
        segments = self.segments
        segment = segments[-1] if segments else None
        chunks = self.chunks
        # The path of every persistent message: the open chunk of the current segment takes it,
        # unless the segment is full or poisoned or the id is out of order (then _rotate).
        index = segment.index if segment is not None else None
        if (segment is not None and not segment.poisoned and segment.size < store.segment_bytes
                and (not index.ids or index.ids[-1] < msg_id)):
            chunk = chunks[-1] if chunks and chunks[-1].segment is segment else self._open_chunk()
            # (SegmentIndex.add, inlined: the id is above every other, so it goes at the end)
            index.ids.append(msg_id)
            index.positions.append(segment.size)
            index.lengths.append(len(data))
        else:
            chunk = self._chunk_for_append(msg_id)
            segment = chunk.segment
            index = segment.index
            index.add(msg_id, segment.size, len(data))
        if flags:
            index.flag(msg_id, flags)
        segment.size += append_record(chunk.data, ENQUEUE, msg_id, data, flags)
        segment.live += 1
        chunk.ids.append(msg_id)
        if msg_id > self.max_id_seen:
            self.max_id_seen = msg_id
        future = None
        if store.fsync != "never":
            # Every record of a chunk becomes durable at the same moment (or fails together),
            # so the appends into it share one future rather than one each.
            future = chunk.confirm
            if future is None:
                future = chunk.confirm = store._loop.create_future()  # type: ignore[union-attr]
                chunk.waiters.append(future)
        store._dirty_logs[self] = None  # (FileStore._dirty, inlined: once per message)
        if store._in_flight is None and not store._scheduled:
            store._schedule_kick()
        return future

    def settle(self, msg_id: int) -> None:
        found = self._locate(msg_id)
        if found is None or self.dropped:
            return
        segment, slot = found
        segment.index.lengths[slot] = SETTLED  # (SegmentIndex.kill, inlined: once per ack)
        segment.live -= 1
        self._tombstone(msg_id)

    def mark(self, msg_id: int, receive_count: int, invisible_until_ms: int,
             first_receive_ms: int) -> None:
        """Record a live message's receive state (a MARK record, see FORMAT.md). Nothing waits
        for it: it goes out with the next batch, like a SETTLE."""
        if self.dropped or not self.segments:
            return
        # (not looked up: recovery ignores the MARK of a message that is settled or was lost)
        chunk = self._open_chunk()
        segment = chunk.segment
        segment.index.note_mark(msg_id, receive_count, invisible_until_ms, first_receive_ms)
        segment.size += append_record(chunk.data, MARK, msg_id, MARK_PAYLOAD.pack(
            receive_count, invisible_until_ms, first_receive_ms))
        self.store._dirty(self)

    def _tombstone(self, msg_id: int) -> None:
        chunks = self.chunks
        segment = self.segments[-1] if self.segments else None
        if chunks and segment is not None and chunks[-1].segment is segment:
            chunk = chunks[-1]  # (the common case of _open_chunk)
        else:
            chunk = self._open_chunk()
            segment = chunk.segment
        if msg_id < segment.base_id:  # (one of its own is settled in its arrays)
            segment.index.note_settled(msg_id)
        segment.size += append_settle(chunk.data, msg_id)
        chunk.settles.append(msg_id)
        store = self.store
        store._dirty_logs[self] = None
        if store._in_flight is None and not store._scheduled:
            store._schedule_kick()

    def _open_chunk(self) -> Chunk:
        """The chunk new records join: the current segment's, started if need be."""
        chunks = self.chunks
        if chunks and chunks[-1].segment is self.segments[-1]:
            return chunks[-1]
        if not self.segments or self.segments[-1].poisoned:
            # Named above every id so far (recovery keeps new ids at or above it; see recover).
            return self._rotate(self.max_id_seen + 1)
        segment = self.segments[-1]
        chunk = Chunk(self, segment, segment.path, segment.size, False)
        chunks.append(chunk)
        self._track(chunk)
        return chunk

    def _track(self, chunk: Chunk) -> None:
        """Learn when the chunk's bytes are in the file (whatever the fsync policy)."""
        if self.store._loop is None:
            return
        done = self.store._loop.create_future()
        chunk.waiters.insert(0, done)
        done.add_done_callback(lambda f, c=chunk: self._written(c, f))

    def _written(self, chunk: Chunk, done: Any) -> None:
        try:
            self._writing.remove(chunk)
        except ValueError:
            pass
        if not done.cancelled() and done.exception() is None:
            segment = chunk.segment
            segment.written = max(segment.written, chunk.start + len(chunk.data))

    def _chunk_for_append(self, msg_id: int) -> Chunk:
        current = self.segments[-1] if self.segments else None
        if (current is None or current.poisoned or current.size >= self.store.segment_bytes or
                (current.index.ids and current.index.ids[-1] >= msg_id)):
            # (an id out of order, in a spill log, starts a segment: each stays sorted)
            # Rotate: the new segment is named by the first message id it holds.
            return self._rotate(msg_id)
        return self._open_chunk()

    def _rotate(self, base_id: int) -> Chunk:
        """Start a new segment file; its header goes out with its first chunk."""
        if self.segments:
            self._seal(self.segments[-1])
            base_id = max(base_id, self.segments[-1].base_id + 1)  # names stay unique
        path = os.path.join(self.directory, segment_name(base_id))
        segment = Segment(base_id, path, FILE_HEADER_SIZE)
        self.segments.append(segment)
        segment.written = 0
        chunk = Chunk(self, segment, path, 0, True)
        chunk.data += file_header(base_id)
        self.chunks.append(chunk)
        self._track(chunk)
        return chunk

    def take_chunks(self) -> list[Chunk]:
        chunks, self.chunks = self.chunks, []
        self._writing.extend(c for c in chunks if c.segment is not None)
        return chunks

    def chunk_failed(self, chunk: Chunk) -> None:
        """The writer could not store ``chunk``: forget what it held, make the log true again."""
        segment = chunk.segment
        if segment is None:  # an index file: the next start scans its segment instead
            self.store.index_failures += 1
            return
        segment.indexable = False  # its arrays no longer say what the file holds
        for msg_id in chunk.ids:
            slot = segment.index.find(msg_id)
            if slot >= 0:
                segment.index.kill(slot)
                segment.live -= 1
        length = len(chunk.data)
        if chunk.rolled_back and not segment.poisoned:
            # The file ends where the chunk began again: later records move back by its length.
            segment.size -= length
            for later in self.chunks:
                if later.segment is segment:
                    later.start -= length
                    self._move(later, segment, -length)
        else:
            segment.poisoned = True
            for later in self.chunks:
                if later.segment is segment:
                    self._rehome(later)
        for msg_id in chunk.settles:  # an ack must not come back after a restart
            self._tombstone(msg_id)

    def _move(self, chunk: Chunk, segment: Segment, delta: int) -> None:
        """Shift the chunk's live messages by ``delta`` bytes, into ``segment`` if it is new."""
        old = chunk.segment.index
        first = None
        for msg_id in chunk.ids:
            slot = old.find(msg_id)
            if slot < 0:
                continue
            if segment is chunk.segment:
                old.positions[slot] += delta
            else:
                segment.index.add(msg_id, old.positions[slot] + delta, old.lengths[slot])
                first = slot if first is None else first
        if first is not None:
            old.cut_from(first)  # the chunk was the old segment's tail

    def _rehome(self, chunk: Chunk) -> None:
        """Move a chunk meant for a poisoned segment into a new segment."""
        old = chunk.segment
        body = bytes(chunk.data[FILE_HEADER_SIZE:] if chunk.create else chunk.data)
        base = chunk.ids[0] if chunk.ids else self.max_id_seen + 1
        self.chunks.remove(chunk)
        fresh = self._rotate(base)
        segment = fresh.segment
        segment.indexable = False  # (its tombstones were not noted: scanned at recovery)
        offset = (FILE_HEADER_SIZE if chunk.create else 0) + chunk.start
        for msg_id in chunk.ids:
            if old.index.find(msg_id) >= 0:
                old.live -= 1
                segment.live += 1
        self._move(chunk, segment, FILE_HEADER_SIZE - offset)
        fresh.data += body
        segment.size += len(body)
        fresh.ids, fresh.settles = chunk.ids, chunk.settles
        # The old chunk's own "written" tracker (first, if any) stays behind with it.
        fresh.waiters += chunk.waiters[1:] if self.store._loop is not None else chunk.waiters

    def _compact(self) -> list[str]:
        """Forget the oldest segments whose messages are all settled (never the current one);
        returns their paths, for the writer to unlink."""
        gone = []
        while len(self.segments) > 1 and self.segments[0].live == 0:
            segment = self.segments.pop(0)
            if segment is self._last_hit:
                self._last_hit = None
            self.store._forget_read(segment.path)
            gone += [segment.path, segment.path[:-4] + ".idx"]
        return gone

    def drop(self) -> None:
        self.dropped = True
        for chunk in self.chunks:
            for waiter in chunk.waiters:
                if not waiter.done():
                    waiter.set_result(None)  # the queue is gone: nothing left to store
        self.chunks.clear()
        for segment in self.segments:
            self.store._forget_read(segment.path)
        self.store._forget(self)


class FileStore:
    def __init__(self, data_dir: str, *, fsync: str = "always", fsync_interval_ms: int = 200,
                 segment_bytes: int = 64 * 1024 * 1024, fs: FileSystem | None = None,
                 max_open_files: int = 64):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.data_dir = data_dir
        self.fsync = fsync
        self.fsync_interval_ms = fsync_interval_ms
        self.segment_bytes = segment_bytes
        self.fs = fs or FileSystem()
        self._wanted_open_files = max_open_files
        self.max_open_files = _descriptor_budget(max_open_files)
        self.writer = Writer(self.fs, self.max_open_files, sync=fsync != "never")
        self._logs: dict[str, FileQueueLog] = {}
        self._dirty_logs: dict[FileQueueLog, None] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: asyncio.Future | None = None
        self._scheduled = False
        self._definitions: bytes | None = None      # waiting to be written
        self._removals: list[str] = []              # directories of dropped logs
        self._unlinks: list[str] = []               # compacted segment files
        self._read_fds: OrderedDict[str, int] = OrderedDict()
        #: the thread that reads stream segments for readers behind the tail (its descriptors:
        #: streamlog.SegmentReader)
        self._read_executor: ThreadPoolExecutor | None = None
        self._segment_reader = SegmentReader(min(READER_OPEN_FILES, self.max_open_files))
        #: the last batch's error, if it failed (for the disk alarm and the logs)
        self.last_error: OSError | None = None
        #: the last run closed cleanly: recovery may trust the newest segments' index files
        self.clean_start = False
        #: index files that could not be written (their segments are scanned at the next start)
        self.index_failures = 0

    async def open(self) -> None:
        # The limit may have been raised since __init__ (the service does it at start).
        self.max_open_files = self.writer.max_open = _descriptor_budget(self._wanted_open_files)
        self._segment_reader.max_open = min(READER_OPEN_FILES, self.max_open_files)
        # Transient messages spilled by the last run are not kept across a restart.
        self.fs.rmtree(os.path.join(self.data_dir, "spill"))
        for directory in self.fs.makedirs(os.path.join(self.data_dir, "queues")):
            self.fs.fsync_dir(os.path.dirname(directory))
        self.clean_start = self._take_clean_marker()
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="manifold-fsync")

    def _take_clean_marker(self) -> bool:
        """Whether the last run ended with a clean close; the marker is removed (durably)
        before anything is written, so a crash of this run is never taken for a clean end."""
        path = os.path.join(self.data_dir, CLEAN_MARKER_NAME)
        try:
            clean = self.fs.read_file(path) == CLEAN_MARKER
        except FileNotFoundError:
            return False
        self.fs.unlink(path)
        self.fs.fsync_dir(self.data_dir)
        return clean

    async def close(self) -> None:
        written = await self._flush()
        if written and self._executor is not None and self.fsync != "never":
            # Clean shutdown: every log's newest segment gets its index file, then the marker
            # that lets the next start trust them (RabbitMQ's recovery terms play this part).
            failures = self.index_failures
            for queue_log in list(self._logs.values()):
                if isinstance(queue_log, FileQueueLog):
                    queue_log.index_at_shutdown()
            if await self._flush() and self.index_failures == failures:
                batch = Batch(None, None)
                marker = Chunk(None, None, os.path.join(self.data_dir, CLEAN_MARKER_NAME), 0,
                               True)
                marker.data += CLEAN_MARKER
                batch.chunks.append(marker)
                await self._loop.run_in_executor(  # type: ignore[union-attr]
                    self._executor, self.writer.run, batch)
                if marker.error is not None:
                    log.error("cannot write the clean-shutdown marker: %s", marker.error)
        for fd in self._read_fds.values():
            self.fs.close(fd)
        self._read_fds.clear()
        if self._read_executor is not None:
            self._read_executor.submit(self._segment_reader.close_all, self.fs)
            self._read_executor.shutdown(wait=True)
            self._read_executor = None
        if self._executor is not None:
            self._executor.submit(self.writer.close_all).result()
            self._executor.shutdown(wait=True)
        else:
            self.writer.close_all()

    async def _flush(self) -> bool:
        """Write everything waiting; whether it all went well."""
        retries = 3  # after failed batches: a few more tries, then give up (disk full)
        while True:
            while self._has_work() or self._in_flight is not None:
                if self._in_flight is not None:
                    await asyncio.wait([self._in_flight])
                    # A batch that had already finished is awaited without a yield, while its
                    # done callback (which clears _in_flight) is still queued: give it its turn.
                    await asyncio.sleep(0)
                    continue
                if self.last_error is not None:
                    if not retries:
                        log.error("closing with unwritten data: %s", self.last_error)
                        return False
                    retries -= 1
                self._kick()
            # Callbacks of the last batch's futures (a sealed segment's index) run next turn.
            await asyncio.sleep(0)
            if not self._has_work():
                return self.last_error is None

    # ------------------------------------------------------------------ definitions

    @property
    def fsync_latency(self) -> Any:
        """The writer's fsync latency histogram (persistence/latency.py), read-only."""
        return self.writer.fsync_latency

    def _definitions_path(self) -> str:
        return os.path.join(self.data_dir, "definitions.bin")

    def save_definitions(self, data: bytes) -> None:
        """Replace the definitions file with the next batch, before that batch's records, so a
        queue's definition is on disk before the confirm of any message published to it. A
        failed write fails the whole batch's confirms and is tried again with the next one."""
        self._definitions = data
        if self._executor is None:
            Writer(self.fs, 1, sync=self.fsync != "never").write_definitions(
                self._definitions_path(), data)
            self._definitions = None
            return
        if self._in_flight is None:
            self._schedule_kick()

    def load_definitions(self) -> bytes | None:
        try:
            return self.fs.read_file(self._definitions_path())
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ logs
    def queue_log(self, vhost: str, queue: str) -> FileQueueLog:
        return self._log(os.path.join(self.data_dir, "queues", _fs_name(vhost), _fs_name(queue)))

    def state_log(self, name: str) -> FileQueueLog:
        """A log for durable state outside queues (MQTT retained messages and sessions)."""
        return self._log(os.path.join(self.data_dir, "state", _fs_name(name)))

    def _log(self, directory: str) -> FileQueueLog:
        existing = self._logs.get(directory)
        if existing is not None and not existing.dropped:
            return existing
        queue_log = FileQueueLog(self, directory)
        self._logs[directory] = queue_log
        return queue_log

    def stream_log(self, vhost: str, stream: str, segment_bytes: int | None = None
                   ) -> FileStreamLog:
        """A stream's segments (persistence/streamlog.py); ``segment_bytes`` defaults to the
        store's segment size."""
        return FileStreamLog(self, os.path.join(self.data_dir, "streams", _fs_name(vhost),
                                                _fs_name(stream)),
                             segment_bytes or self.segment_bytes,
                             legacy_directory=os.path.join(self.data_dir, "queues",
                                                           _fs_name(vhost), _fs_name(stream)))

    def spill_log(self, vhost: str, queue: str) -> FileQueueLog:
        """Where a queue puts transient messages past its resident budget (same record format;
        removed at every start: transient messages do not survive a restart)."""
        spill = self._log(os.path.join(self.data_dir, "spill", _fs_name(vhost), _fs_name(queue)))
        spill.indexed = False  # never recovered
        return spill

    def dedup_log(self, vhost: str, queue: str) -> FileQueueLog:
        """The log of a queue's deduplication window (same records as a queue log: each key is
        an ENQUEUE, settled once its window has passed)."""
        return self._log(os.path.join(self.data_dir, "dedup", _fs_name(vhost), _fs_name(queue)))

    def _forget(self, queue_log: FileQueueLog) -> None:
        self._logs.pop(queue_log.directory, None)
        self._dirty_logs.pop(queue_log, None)
        self._removals.append(queue_log.directory)
        self._dirty_later()

    def _unlink_later(self, paths: list[str]) -> None:
        if paths:
            self._unlinks.extend(paths)
            self._dirty_later()

    def _dirty_later(self) -> None:
        if self._loop is not None and self._in_flight is None:
            self._schedule_kick()

    # ------------------------------------------------------------------ reading (event loop)
    def _pread(self, path: str, length: int, position: int) -> bytes:
        fds = self._read_fds
        fd = fds.get(path)
        if fd is None:
            try:
                fd = self.fs.open(path, os.O_RDONLY)
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE) or not fds:
                    raise
                self._close_reads()  # out of descriptors: give ours back and try once more
                fd = self.fs.open(path, os.O_RDONLY)
            fds[path] = fd
            while len(fds) > self.max_open_files:
                self.fs.close(fds.popitem(last=False)[1])
        else:
            fds.move_to_end(path)
        data = self.fs.pread(fd, length, position)
        if len(data) != length:
            raise OSError(errno.EIO, f"{path}: short read at byte {position}")
        return data

    def _read_later(self, path: str, length: int, position: int) -> asyncio.Future:
        """``pread`` in the reader thread (off the event loop, beside the writer thread)."""
        if self._read_executor is None:
            self._read_executor = ThreadPoolExecutor(1, thread_name_prefix="manifold-read")
        return self._loop.run_in_executor(  # type: ignore[union-attr]
            self._read_executor, self._segment_reader.read, self.fs, path, length, position)

    def _forget_read(self, path: str) -> None:
        fd = self._read_fds.pop(path, None)
        if fd is not None:
            self.fs.close(fd)
        if self._read_executor is not None:
            self._read_executor.submit(self._segment_reader.forget, self.fs, path)

    def _close_reads(self) -> None:
        for fd in self._read_fds.values():
            self.fs.close(fd)
        self._read_fds.clear()

    # ------------------------------------------------------------------ batches
    def _dirty(self, queue_log: FileQueueLog) -> None:
        self._dirty_logs[queue_log] = None
        if self._in_flight is None:
            self._schedule_kick()

    def _has_work(self) -> bool:
        return bool(self._dirty_logs or self._definitions is not None or self._removals or
                    self._unlinks)

    def _schedule_kick(self, delay_s: float = 0.0) -> None:
        """One pending batch at a time: now (always, never) or after the interval."""
        if self._scheduled:
            return
        self._scheduled = True
        if self.fsync == "interval":
            delay_s = max(delay_s, self.fsync_interval_ms / 1000)
        if delay_s:
            self._loop.call_later(delay_s, self._kick)  # type: ignore[union-attr]
        else:
            self._loop.call_soon(self._kick)  # type: ignore[union-attr]

    def _kick(self) -> None:
        """Hand everything waiting to the writer thread as one batch."""
        self._scheduled = False
        if self._in_flight is not None or not self._has_work():
            return
        batch = Batch(self._definitions_path() if self._definitions is not None else None,
                      self._definitions)
        self._definitions = None
        for queue_log in self._dirty_logs:
            batch.chunks.extend(queue_log.take_chunks())
        self._dirty_logs.clear()
        batch.removals, self._removals = self._removals, []
        batch.unlinks, self._unlinks = self._unlinks, []
        # Segments emptied by settles in this batch can go once the batch is on disk.
        compact = [ql for ql in self._logs.values() if len(ql.segments) > 1 and
                   ql.segments[0].live == 0]
        self._in_flight = self._loop.run_in_executor(  # type: ignore[union-attr]
            self._executor, self.writer.run, batch)
        self._in_flight.add_done_callback(lambda f: self._batch_done(f, batch, compact))

    def _batch_done(self, future: asyncio.Future, batch: Batch, compact: list) -> None:
        self._in_flight = None
        crash = future.exception()  # a bug in the writer: nothing in the batch is trusted
        if crash is not None:
            log.error("the writer thread failed: %r", crash)
        failure: OSError | None = None
        if batch.definitions_error is not None:
            failure = batch.definitions_error
            log.error("writing the definitions failed: %s; confirms wait until they are "
                      "written", failure)
            if self._definitions is None:
                self._definitions = batch.definitions
        for chunk in batch.chunks:
            error = chunk.error or batch.definitions_error or (
                StoreError(errno.EIO, f"writer failed: {crash!r}") if crash else None)
            if error is None:
                for waiter in chunk.waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                continue
            failure = failure or error
            if chunk.error is not None:
                log.error("writing %s failed: %s (%s)", chunk.path, chunk.error,
                          "the next start scans its segment" if chunk.segment is None else
                          "rolled back" if chunk.rolled_back else "segment retired")
            queue_log = chunk.log
            if not queue_log.dropped:
                if chunk.error is None:
                    chunk.rolled_back = False  # written, but not confirmable: start afresh
                queue_log.chunk_failed(chunk)
                self._dirty_logs[queue_log] = None
            for waiter in chunk.waiters:
                if not waiter.done():
                    waiter.set_exception(StoreError(error.errno or errno.EIO,
                                                    f"not stored: {error}"))
        self.last_error = failure
        for queue_log in compact:
            if not queue_log.dropped:
                self._unlink_later(queue_log._compact())
        if self._has_work():
            self._schedule_kick(RETRY_DELAY_S if failure is not None else 0.0)
