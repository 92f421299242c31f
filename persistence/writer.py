"""The writer thread's side of the file store: one batch at a time, every failure recorded.

A :class:`Batch` carries, in the order they are applied: directories of dropped logs to remove,
the definitions file to replace, chunks of records to append, compacted segment files to unlink.
The writer never raises for an I/O error: it records it on the chunk (or on the batch, for the
definitions) and undoes what it can, so the event loop can refuse the confirms the failure covers
and repair its offsets (see :meth:`persistence.filestore.FileQueueLog.chunk_failed`).

Write file descriptors live in an LRU cache of ``max_open`` entries: thousands of logs need no
descriptor each, and an EMFILE on open closes the cache and tries once more.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from collections import OrderedDict
from typing import Any

from .fs import FileSystem
from .latency import LatencyHistogram

log = logging.getLogger("manifold.persistence")

_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


class StoreError(OSError):
    """A write the store could not make durable; the append it covers was not stored."""


class Chunk:
    """Bytes for one segment file: ``start`` is the file's length before them (0 with ``create``,
    whose bytes begin with the file header)."""
    __slots__ = ("log", "segment", "path", "start", "create", "data", "ids", "settles", "waiters",
                 "confirm", "error", "rolled_back")

    def __init__(self, owner: Any, segment: Any, path: str, start: int, create: bool):
        self.log = owner
        self.segment = segment
        self.path = path
        self.start = start
        self.create = create
        self.data = bytearray()
        self.ids: list[int] = []        # ENQUEUE records in data
        self.settles: list[int] = []    # SETTLE records in data
        self.waiters: list = []         # futures resolved once data is durable
        #: the one future (also in ``waiters``) every append into this chunk returns
        self.confirm: Any = None
        #: set by the writer: why the chunk is not durable, and whether the file was cut back
        self.error: OSError | None = None
        self.rolled_back = False


class Batch:
    __slots__ = ("definitions_path", "definitions", "definitions_error", "chunks", "removals",
                 "unlinks")

    def __init__(self, definitions_path: str | None, definitions: bytes | None):
        self.definitions_path = definitions_path
        self.definitions = definitions
        self.definitions_error: OSError | None = None
        self.chunks: list[Chunk] = []
        self.removals: list[str] = []
        self.unlinks: list[str] = []


class Writer:
    def __init__(self, fs: FileSystem, max_open: int, sync: bool):
        self.fs = fs
        self.max_open = max(1, max_open)
        self.sync = sync
        self._fds: OrderedDict[str, int] = OrderedDict()
        #: how long each successful fsync took (exported as a histogram on /metrics)
        self.fsync_latency = LatencyHistogram()
        #: directories created whose entry in their parent is not yet known to be durable
        self._unsynced_dirs: set[str] = set()

    # ------------------------------------------------------------------ the batch
    def run(self, batch: Batch) -> None:
        for directory in batch.removals:
            self._remove_tree(directory)
        if batch.definitions is not None:
            try:
                self.write_definitions(batch.definitions_path, batch.definitions)  # type: ignore
            except OSError as exc:
                batch.definitions_error = exc
        #: fd -> chunks written to it in this batch (fsynced once each: group commit)
        touched: dict[int, list[Chunk]] = {}
        #: directory -> chunks whose file is new in it (the entry needs a directory fsync)
        new_entries: dict[str, list[Chunk]] = {}
        for chunk in batch.chunks:
            self._write_chunk(chunk, touched, new_entries)
        if self.sync:
            for fd, chunks in touched.items():
                self._fsync(fd, chunks)
            for directory, chunks in new_entries.items():
                try:
                    self.fs.fsync_dir(directory)
                except OSError as exc:
                    self._fail(chunks, exc)
                    continue
                self._unsynced_dirs = {d for d in self._unsynced_dirs
                                       if os.path.dirname(d) != directory}
        else:
            self._unsynced_dirs.clear()
        self._unlink(batch.unlinks)

    def _write_chunk(self, chunk: Chunk, touched: dict, new_entries: dict) -> None:
        fs = self.fs
        try:
            fd = self._fd_for(chunk, touched, new_entries)
        except OSError as exc:
            chunk.error = exc
            chunk.rolled_back = not chunk.create  # nothing was written
            return
        try:
            fs.write_all(fd, chunk.data)
        except OSError as exc:
            chunk.error = exc
            # Cut the file back to its last good record before anything else is written.
            try:
                fs.ftruncate(fd, chunk.start)
                chunk.rolled_back = not chunk.create
            except OSError as cut:
                log.error("cannot truncate %s back to %d bytes: %s", chunk.path, chunk.start, cut)
            if not chunk.rolled_back:
                self._drop_fd(chunk.path)
            return
        touched.setdefault(fd, []).append(chunk)

    def _fd_for(self, chunk: Chunk, touched: dict, new_entries: dict) -> int:
        fd = self._fds.get(chunk.path)
        if fd is not None:
            if not chunk.create:
                self._fds.move_to_end(chunk.path)
                return fd
            self._drop_fd(chunk.path)  # a file written anew (an index file): O_TRUNC it
        fs = self.fs
        flags = os.O_WRONLY | os.O_APPEND
        directory = os.path.dirname(chunk.path)
        made: list[str] = []
        if chunk.create:
            flags |= os.O_CREAT | os.O_TRUNC
            # Remembered until their parents' fsync succeeds, even if this open fails.
            self._unsynced_dirs.update(fs.makedirs(directory))
            made = [d for d in self._unsynced_dirs
                    if chunk.path.startswith(d + os.sep)]
        try:
            fd = fs.open(chunk.path, flags)
        except OSError as exc:
            if exc.errno not in _OUT_OF_FDS or not self._fds:
                raise
            self._release(touched)  # out of descriptors: sync and give back ours, try once more
            fd = fs.open(chunk.path, flags)
        self._fds[chunk.path] = fd
        while len(self._fds) > self.max_open:
            # Keep within the budget inside a batch too: sync the oldest file early, close it.
            _, old = self._fds.popitem(last=False)
            chunks = touched.pop(old, None)
            if chunks is not None and self.sync:
                self._fsync(old, chunks)
            self._close(old)
        if chunk.create:
            new_entries.setdefault(directory, []).append(chunk)
            for new_directory in made:
                # A new directory is an entry in its parent: that parent needs an fsync too.
                new_entries.setdefault(os.path.dirname(new_directory), []).append(chunk)
        return fd

    def _fsync(self, fd: int, chunks: list[Chunk]) -> None:
        started = time.perf_counter()
        try:
            self.fs.fsync(fd)
            self.fsync_latency.observe(time.perf_counter() - started)
        except OSError as exc:
            # Fatal to the segment: after a failed fsync the kernel may have dropped the dirty
            # pages and the next fsync can report success (PostgreSQL "fsyncgate", 2018).
            self._fail(chunks, exc)
            for chunk in chunks:
                self._drop_fd(chunk.path)

    @staticmethod
    def _fail(chunks: list[Chunk], exc: OSError) -> None:
        for chunk in chunks:
            if chunk.error is None:
                chunk.error = exc
            chunk.rolled_back = False

    def _release(self, touched: dict) -> None:
        """Close every cached descriptor, fsyncing first the ones written in this batch."""
        for path, fd in list(self._fds.items()):
            chunks = touched.pop(fd, None)
            if chunks is not None and self.sync:
                self._fsync(fd, chunks)
            self._drop_fd(path)

    def _drop_fd(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            self._close(fd)

    def _close(self, fd: int) -> None:
        try:
            self.fs.close(fd)
        except OSError:
            pass

    def close_all(self) -> None:
        for fd in self._fds.values():
            self._close(fd)
        self._fds.clear()

    # ------------------------------------------------------------------ files as a whole
    def write_definitions(self, path: str, data: bytes) -> None:
        """Atomic replace: write a temporary file, fsync it, rename it over the old one, fsync
        the directory (the rename is an entry change)."""
        fs = self.fs
        tmp = path + ".tmp"
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            fs.write_all(fd, data)
            if self.sync:
                fs.fsync(fd)
        finally:
            fs.close(fd)
        fs.replace(tmp, path)
        if self.sync:
            fs.fsync_dir(os.path.dirname(path) or ".")

    def _remove_tree(self, directory: str) -> None:
        prefix = directory + os.sep
        for path in [p for p in self._fds if p.startswith(prefix)]:
            self._drop_fd(path)
        self.fs.rmtree(directory)
        if self.sync:
            # Without this a dropped queue's files could come back after a power cut, and a
            # queue declared again with the same name would recover them.
            try:
                self.fs.fsync_dir(os.path.dirname(directory))
            except OSError as exc:
                log.error("cannot fsync %s: %s", os.path.dirname(directory), exc)

    def _unlink(self, paths: list[str]) -> None:
        directories = set()
        for path in paths:
            self._drop_fd(path)
            try:
                self.fs.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("cannot remove compacted segment %s: %s", path, exc)
                continue
            directories.add(os.path.dirname(path))
        if self.sync:
            # Segments go oldest first; if an older one came back after a power cut while a newer
            # one (holding its tombstones) stayed gone, settled messages would return.
            for directory in directories:
                try:
                    self.fs.fsync_dir(directory)
                except OSError as exc:
                    log.error("cannot fsync %s: %s", directory, exc)
