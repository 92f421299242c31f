"""Durable queues on disk: append-only segment files per queue, group-committed fsyncs.

Layout under the data directory (see FORMAT.md)::

    definitions.bin                      durable exchanges, queues, bindings (atomic replace)
    queues/<vhost>/<queue>/<base>.seg    a queue's log: ENQUEUE records and SETTLE tombstones
    dedup/<vhost>/<queue>/<base>.seg     a queue's deduplication window (same record format)

Writes never block the event loop: appends go into the log's pending buffer, and one writer
thread writes and fsyncs every dirty log in a batch. Under ``fsync = "always"`` an append's future
resolves after the fsync that covers it (group commit: one fsync covers everything written since
the previous one); under ``"interval"`` after the next periodic fsync; under ``"never"`` at once.
Compaction deletes the oldest segments once every message they hold is settled.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from .records import (ENQUEUE, RECORD_HEADER_SIZE, SETTLE, encode_record, file_header,
                      parse_file_header, scan, segment_name)

log = logging.getLogger("manifold.persistence")

FSYNC_POLICIES = ("always", "interval", "never")


def _fs_name(name: str) -> str:
    """A vhost or queue name as one safe path component (reversible)."""
    return urllib.parse.quote(name, safe="") or "%2F"


class _Segment:
    __slots__ = ("base_id", "path", "live", "size", "read_fd")

    def __init__(self, base_id: int, path: str, size: int):
        self.base_id = base_id
        self.path = path
        self.live = 0
        #: bytes of this file handed to the writer (or found on disk at recovery)
        self.size = size
        self.read_fd: int | None = None

    def pread(self, length: int, position: int) -> bytes:
        if self.read_fd is None:
            self.read_fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self.read_fd, length, position)
        if len(data) != length:
            raise OSError(f"{self.path}: short read at byte {position}")
        return data

    def close(self) -> None:
        if self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None


class FileQueueLog:
    def __init__(self, store: "FileStore", directory: str):
        self.store = store
        self.directory = directory
        self.segments: list[_Segment] = []
        # msg_id -> (segment, byte position of its ENQUEUE record, payload length)
        self._where: dict[int, tuple[_Segment, int, int]] = {}
        self._fd: int | None = None
        self.pending = bytearray()
        self.waiters: list[asyncio.Future] = []
        self.dropped = False
        self.recovery_problems: list[str] = []
        #: the highest record id ever written (settled or not), so ids are never reused
        self.max_id_seen = -1
        os.makedirs(directory, exist_ok=True)

    # ------------------------------------------------------------------ recovery
    def recover(self, resident_bytes: int | None = None) -> list[tuple[int, bytes | None]]:
        """Rebuild the unsettled set from the segments; truncate each at its first bad record.

        Returns ``(msg_id, payload)`` in id order. Payloads past the first ``resident_bytes``
        (None: no limit) are left on disk and returned as None: fetch them with :meth:`read`, so a
        backlog larger than memory can be recovered."""
        live: dict[int, tuple[_Segment, int, int]] = {}
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(".seg"))
        for name in names:
            path = os.path.join(self.directory, name)
            with open(path, "rb") as fh:
                data = fh.read()  # one segment at a time (segment_bytes bounds it)
            base_id = parse_file_header(data)
            result = scan(data)
            if base_id is None:
                self.recovery_problems.append(f"{path}: {result.problem}; file removed")
                os.unlink(path)
                continue
            if result.problem is not None:
                dropped = len(data) - result.good_bytes
                self.recovery_problems.append(
                    f"{path}: {result.problem}; truncated, {dropped} bytes dropped")
                with open(path, "r+b") as fh:
                    fh.truncate(result.good_bytes)
                    fh.flush()
                    os.fsync(fh.fileno())
            segment = _Segment(base_id, path, result.good_bytes)
            self.segments.append(segment)
            for record in result.records:
                self.max_id_seen = max(self.max_id_seen, record.msg_id)
                if record.kind == ENQUEUE:
                    live[record.msg_id] = (segment, record.position, len(record.payload))
                    segment.live += 1
                elif record.kind == SETTLE and record.msg_id in live:
                    owner = live.pop(record.msg_id)[0]
                    owner.live -= 1
        for problem in self.recovery_problems:
            log.warning("recovery: %s", problem)
        self._where = live
        self._compact()
        if self.segments:
            # Go on appending (settle tombstones, new messages) to the newest segment.
            self.store._reopen(self, self.segments[-1].path)
        out: list[tuple[int, bytes | None]] = []
        budget = resident_bytes
        for msg_id in sorted(live):
            length = live[msg_id][2]
            if budget is None or length <= budget:
                out.append((msg_id, self.read(msg_id)))
                if budget is not None:
                    budget -= length
            else:
                budget = 0  # keep the resident part a prefix of the queue
                out.append((msg_id, None))
        return out

    def size_of(self, msg_id: int) -> int:
        return self._where[msg_id][2]

    def read(self, msg_id: int) -> bytes:
        """The payload of a live message, from its segment. Only for messages whose append has
        completed (its future resolved), or that were recovered."""
        segment, position, length = self._where[msg_id]
        return segment.pread(length, position + RECORD_HEADER_SIZE)

    # ------------------------------------------------------------------ writing (event loop side)
    def append(self, msg_id: int, data: bytes) -> asyncio.Future | None:
        self._ensure_segment(msg_id)
        segment = self.segments[-1]
        # Bytes go out in order, so the record lands after what was handed out and pending.
        self._where[msg_id] = (segment, segment.size + len(self.pending), len(data))
        segment.live += 1
        self.pending += encode_record(ENQUEUE, msg_id, data)
        return self.store._dirty(self, wait=True)

    def settle(self, msg_id: int) -> None:
        where = self._where.pop(msg_id, None)
        if where is None or self.dropped:
            return
        where[0].live -= 1
        self.pending += encode_record(SETTLE, msg_id)
        self.store._dirty(self, wait=False)

    def _ensure_segment(self, msg_id: int) -> None:
        current = self.segments[-1] if self.segments else None
        if current is not None and current.size + len(self.pending) < self.store.segment_bytes:
            return
        # Rotate: the new segment is named by the first message id it holds.
        path = os.path.join(self.directory, segment_name(msg_id))
        self.store._rotate(self, path, msg_id)

    def _compact(self) -> list[str]:
        """Delete the oldest segments whose messages are all settled (never the current one)."""
        gone = []
        while len(self.segments) > 1 and self.segments[0].live == 0:
            segment = self.segments.pop(0)
            segment.close()
            gone.append(segment.path)
        for path in gone:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return gone

    def drop(self) -> None:
        self.dropped = True
        self.pending.clear()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()
        for segment in self.segments:
            segment.close()
        self.store._forget(self)
        shutil.rmtree(self.directory, ignore_errors=True)


class FileStore:
    def __init__(self, data_dir: str, *, fsync: str = "always", fsync_interval_ms: int = 200,
                 segment_bytes: int = 64 * 1024 * 1024):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.data_dir = data_dir
        self.fsync = fsync
        self.fsync_interval_ms = fsync_interval_ms
        self.segment_bytes = segment_bytes
        self._logs: dict[str, FileQueueLog] = {}
        self._fds: dict[FileQueueLog, int] = {}
        self._dirty_logs: dict[FileQueueLog, None] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: asyncio.Future | None = None
        self._scheduled = False
        self._closing: list[int] = []
        # (fd, bytes) still owed to a segment that a rotation just retired
        self._pre_rotation: list[tuple[int, bytes]] = []
        self._definitions: bytes = b""
        self._definitions_queued = False
        self._definitions_jobs: set[asyncio.Future] = set()

    async def open(self) -> None:
        os.makedirs(os.path.join(self.data_dir, "queues"), exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="manifold-fsync")

    async def close(self) -> None:
        if self._definitions_jobs:
            await asyncio.wait(list(self._definitions_jobs))
        while self._dirty_logs or self._in_flight is not None:
            if self._in_flight is not None:
                await asyncio.wait([self._in_flight])
                # A batch that had already finished is awaited without a yield, while its done
                # callback (which clears _in_flight) is still queued: give it its turn.
                await asyncio.sleep(0)
            else:
                self._kick()
        for fd in list(self._fds.values()) + self._closing:
            os.close(fd)
        for queue_log in self._logs.values():
            for segment in queue_log.segments:
                segment.close()
        self._fds.clear()
        self._closing.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ definitions
    def _definitions_path(self) -> str:
        return os.path.join(self.data_dir, "definitions.bin")

    def save_definitions(self, data: bytes) -> None:
        """Replace the definitions file, on the writer thread. Jobs on that thread run in order,
        so definitions saved before a message's append are on disk before its confirm."""
        self._definitions = data
        if self._executor is None:
            _write_definitions(self._definitions_path(), data, self.fsync != "never")
            return
        if self._definitions_queued:
            return  # the job waiting in line will write the latest state when it runs
        self._definitions_queued = True
        job = self._loop.run_in_executor(  # type: ignore[union-attr]
            self._executor, self._write_latest_definitions)
        self._definitions_jobs.add(job)
        job.add_done_callback(self._definitions_written)

    def _write_latest_definitions(self) -> None:
        # On the writer thread: take the flag down first, then read the state, so a save that
        # comes in meanwhile either is in this write or queues a job of its own.
        self._definitions_queued = False
        _write_definitions(self._definitions_path(), self._definitions, self.fsync != "never")

    def _definitions_written(self, job: asyncio.Future) -> None:
        self._definitions_jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("writing the definitions failed: %s", job.exception())

    def load_definitions(self) -> bytes | None:
        try:
            with open(self._definitions_path(), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ logs
    def queue_log(self, vhost: str, queue: str) -> FileQueueLog:
        directory = os.path.join(self.data_dir, "queues", _fs_name(vhost), _fs_name(queue))
        existing = self._logs.get(directory)
        if existing is not None and not existing.dropped:
            return existing
        queue_log = FileQueueLog(self, directory)
        self._logs[directory] = queue_log
        return queue_log

    def dedup_log(self, vhost: str, queue: str) -> FileQueueLog:
        """The log of a queue's deduplication window (same records as a queue log: each key is
        an ENQUEUE, settled once its window has passed)."""
        directory = os.path.join(self.data_dir, "dedup", _fs_name(vhost), _fs_name(queue))
        existing = self._logs.get(directory)
        if existing is not None and not existing.dropped:
            return existing
        dedup_log = FileQueueLog(self, directory)
        self._logs[directory] = dedup_log
        return dedup_log

    def _forget(self, queue_log: FileQueueLog) -> None:
        self._logs.pop(queue_log.directory, None)
        self._dirty_logs.pop(queue_log, None)
        self._retire_fd(queue_log)

    def _reopen(self, queue_log: FileQueueLog, path: str) -> None:
        self._retire_fd(queue_log)
        self._fds[queue_log] = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _retire_fd(self, queue_log: FileQueueLog) -> int | None:
        """Stop appending to the log's current file; it is closed after the next batch (which
        may still write to it). Returns that file descriptor."""
        old = self._fds.pop(queue_log, None)
        if old is not None:
            self._closing.append(old)
        return old

    def _rotate(self, queue_log: FileQueueLog, path: str, base_id: int) -> None:
        """Start a new segment; the header goes out with the next batch of that log."""
        old = self._retire_fd(queue_log)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fds[queue_log] = fd
        # Records appended before the rotation belong to the old file: flush them there first.
        if queue_log.pending and old is not None:
            self._pre_rotation.append((old, bytes(queue_log.pending)))
            queue_log.pending.clear()
        queue_log.pending[:0] = file_header(base_id)
        # size counts bytes handed to the writer; the header is still pending
        queue_log.segments.append(_Segment(base_id, path, 0))

    def _dirty(self, queue_log: FileQueueLog, wait: bool) -> asyncio.Future | None:
        self._dirty_logs[queue_log] = None
        future = None
        if wait and self.fsync != "never":
            future = self._loop.create_future()  # type: ignore[union-attr]
            queue_log.waiters.append(future)
        if self._in_flight is None:
            self._schedule_kick()
        return future

    def _schedule_kick(self) -> None:
        """One pending batch at a time: now (always, never) or after the interval."""
        if self._scheduled:
            return
        self._scheduled = True
        if self.fsync == "interval":
            self._loop.call_later(self.fsync_interval_ms / 1000, self._kick)  # type: ignore
        else:
            self._loop.call_soon(self._kick)  # type: ignore[union-attr]

    def _kick(self) -> None:
        """Hand every dirty log's pending bytes to the writer thread as one batch."""
        self._scheduled = False
        if self._in_flight is not None or not self._dirty_logs:
            return
        batch = []
        waiters: list[asyncio.Future] = []
        for queue_log in self._dirty_logs:
            fd = self._fds.get(queue_log)
            if fd is None or not queue_log.pending:
                waiters.extend(queue_log.waiters)
                queue_log.waiters = []
                continue
            data = bytes(queue_log.pending)
            queue_log.pending.clear()
            queue_log.segments[-1].size += len(data)
            batch.append((fd, data))
            waiters.extend(queue_log.waiters)
            queue_log.waiters = []
        self._dirty_logs.clear()
        pre, self._pre_rotation = self._pre_rotation, []
        closing, self._closing = self._closing, []
        compact = [ql for ql in self._logs.values() if len(ql.segments) > 1 and
                   ql.segments[0].live == 0]
        sync = self.fsync != "never"
        self._in_flight = self._loop.run_in_executor(  # type: ignore[union-attr]
            self._executor, _write_batch, pre + batch, closing, sync)
        self._in_flight.add_done_callback(lambda f: self._batch_done(f, waiters, compact))

    def _batch_done(self, future: asyncio.Future, waiters: list, compact: list) -> None:
        self._in_flight = None
        error = future.exception()
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        if error is not None:
            log.error("writing to the data directory failed: %s", error)
        for queue_log in compact:
            queue_log._compact()
        if self._dirty_logs:
            self._schedule_kick()


def _write_definitions(path: str, data: bytes, sync: bool) -> None:
    """Atomic replace: write a temporary file, fsync it, rename it over the old one."""
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_batch(batch: list[tuple[int, bytes]], closing: list[int], sync: bool) -> None:
    """Runs on the writer thread: write everything, fsync each file once, close retired files."""
    touched: dict[int, None] = {}
    for fd, data in batch:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        touched[fd] = None
    if sync:
        for fd in touched:
            os.fsync(fd)
    for fd in closing:
        try:
            os.close(fd)
        except OSError:
            pass
