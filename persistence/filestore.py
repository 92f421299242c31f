"""Durable queues on disk: append-only segment files per queue, group-committed fsyncs.

Layout under the data directory (see FORMAT.md)::

    definitions.bin                      durable exchanges, queues, bindings (atomic replace)
    queues/<vhost>/<queue>/<base>.seg    a queue's log: ENQUEUE records and SETTLE tombstones

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
from typing import Any

from .records import (ENQUEUE, FILE_HEADER_SIZE, SETTLE, encode_record, file_header,
                      parse_file_header, scan, segment_name)

log = logging.getLogger("manifold.persistence")

FSYNC_POLICIES = ("always", "interval", "never")


def _fs_name(name: str) -> str:
    """A vhost or queue name as one safe path component (reversible)."""
    return urllib.parse.quote(name, safe="") or "%2F"


class _Segment:
    __slots__ = ("base_id", "path", "live", "size")

    def __init__(self, base_id: int, path: str, size: int):
        self.base_id = base_id
        self.path = path
        self.live = 0
        self.size = size


class FileQueueLog:
    def __init__(self, store: "FileStore", directory: str):
        self.store = store
        self.directory = directory
        self.segments: list[_Segment] = []
        self._where: dict[int, _Segment] = {}
        self._fd: int | None = None
        self.pending = bytearray()
        self.waiters: list[asyncio.Future] = []
        self.dropped = False
        self.recovery_problems: list[str] = []
        #: the highest record id ever written (settled or not), so ids are never reused
        self.max_id_seen = -1
        os.makedirs(directory, exist_ok=True)

    # ------------------------------------------------------------------ recovery
    def recover(self) -> list[tuple[int, bytes]]:
        """Rebuild the unsettled set from the segments; truncate each at its first bad record."""
        live: dict[int, bytes] = {}
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(".seg"))
        for name in names:
            path = os.path.join(self.directory, name)
            with open(path, "rb") as fh:
                data = fh.read()
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
                    live[record.msg_id] = record.payload
                    self._where[record.msg_id] = segment
                    segment.live += 1
                elif record.kind == SETTLE and record.msg_id in live:
                    del live[record.msg_id]
                    owner = self._where.pop(record.msg_id, None)
                    if owner is not None:
                        owner.live -= 1
        for problem in self.recovery_problems:
            log.warning("recovery: %s", problem)
        self._compact()
        if self.segments:
            # Go on appending (settle tombstones, new messages) to the newest segment.
            self.store._reopen(self, self.segments[-1].path)
        return sorted(live.items())

    # ------------------------------------------------------------------ writing (event loop side)
    def append(self, msg_id: int, data: bytes) -> asyncio.Future | None:
        self._ensure_segment(msg_id)
        segment = self.segments[-1]
        self._where[msg_id] = segment
        segment.live += 1
        self.pending += encode_record(ENQUEUE, msg_id, data)
        return self.store._dirty(self, wait=True)

    def settle(self, msg_id: int) -> None:
        segment = self._where.pop(msg_id, None)
        if segment is None or self.dropped:
            return
        segment.live -= 1
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
            gone.append(self.segments.pop(0).path)
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

    async def open(self) -> None:
        os.makedirs(os.path.join(self.data_dir, "queues"), exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="manifold-fsync")

    async def close(self) -> None:
        while self._dirty_logs or self._in_flight is not None:
            if self._in_flight is not None:
                await self._in_flight
            else:
                self._kick()
        for fd in list(self._fds.values()) + self._closing:
            os.close(fd)
        self._fds.clear()
        self._closing.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ definitions
    def _definitions_path(self) -> str:
        return os.path.join(self.data_dir, "definitions.bin")

    def save_definitions(self, data: bytes) -> None:
        """Atomic replace: write a temporary file, fsync it, rename it over the old one."""
        path = self._definitions_path()
        tmp = path + ".tmp"
        os.makedirs(self.data_dir, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if self.fsync != "never":
                os.fsync(fh.fileno())
        os.replace(tmp, path)

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

    def _forget(self, queue_log: FileQueueLog) -> None:
        self._logs.pop(queue_log.directory, None)
        self._dirty_logs.pop(queue_log, None)
        fd = self._fds.pop(queue_log, None)
        if fd is not None:
            self._closing.append(fd)

    def _reopen(self, queue_log: FileQueueLog, path: str) -> None:
        old = self._fds.pop(queue_log, None)
        if old is not None:
            self._closing.append(old)
        self._fds[queue_log] = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _rotate(self, queue_log: FileQueueLog, path: str, base_id: int) -> None:
        """Start a new segment; the header goes out with the next batch of that log."""
        old = self._fds.pop(queue_log, None)
        if old is not None:
            self._closing.append(old)  # closed after the batch that still writes to it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fds[queue_log] = fd
        # Records appended before the rotation belong to the old file: flush them there first.
        if queue_log.pending and old is not None:
            self._pre_rotation.append((old, bytes(queue_log.pending)))
            queue_log.pending.clear()
        queue_log.pending[:0] = file_header(base_id)
        queue_log.segments.append(_Segment(base_id, path, FILE_HEADER_SIZE))

    def _dirty(self, queue_log: FileQueueLog, wait: bool) -> asyncio.Future | None:
        self._dirty_logs[queue_log] = None
        future = None
        if wait and self.fsync != "never":
            future = self._loop.create_future()  # type: ignore[union-attr]
            queue_log.waiters.append(future)
        if not self._scheduled and self._in_flight is None:
            self._scheduled = True
            if self.fsync == "interval":
                self._loop.call_later(self.fsync_interval_ms / 1000, self._kick)  # type: ignore
            else:
                self._loop.call_soon(self._kick)  # type: ignore[union-attr]
        return future

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
        if self._dirty_logs and not self._scheduled:
            self._scheduled = True
            if self.fsync == "interval":
                self._loop.call_later(self.fsync_interval_ms / 1000, self._kick)  # type: ignore
            else:
                self._loop.call_soon(self._kick)  # type: ignore[union-attr]


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
