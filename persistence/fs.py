"""The file-system calls the file store makes, in one replaceable object.

Every byte the store writes, every fsync, every file it creates, renames or deletes goes through
a :class:`FileSystem`. Tests pass a subclass instead: one that records which bytes were fsynced
(to build the data directory a power cut would leave), or one that fails with ENOSPC, EIO or
EMFILE, or tears a write, at a chosen call (SQLite's crash tests use the same seam, its VFS).
"""
from __future__ import annotations

import errno
import os
import shutil


class FileSystem:
    # ------------------------------------------------------------------ file descriptors
    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def pread(self, fd: int, length: int, position: int) -> bytes:
        return os.pread(fd, length, position)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    # ------------------------------------------------------------------ paths
    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def replace(self, source: str, target: str) -> None:
        os.replace(source, target)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (files created, renamed or removed in it) durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ helpers built on the above
    def makedirs(self, path: str) -> list[str]:
        """Create ``path`` and missing parents; returns the directories created, outermost
        first (their parents need an fsync for the new entries to survive a power cut)."""
        missing = []
        while path and not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        created = []
        for directory in reversed(missing):
            try:
                self.mkdir(directory)
            except FileExistsError:
                continue
            created.append(directory)
        return created

    def truncate_file(self, path: str, length: int) -> None:
        """Cut ``path`` to ``length`` bytes and fsync it (recovery dropping a torn tail)."""
        fd = self.open(path, os.O_WRONLY)
        try:
            self.ftruncate(fd, length)
            self.fsync(fd)
        finally:
            self.close(fd)

    def fsync_file(self, path: str) -> None:
        """fsync a file that is not open for writing (recovery, before indexing a segment)."""
        fd = self.open(path, os.O_RDONLY)
        try:
            self.fsync(fd)
        finally:
            self.close(fd)

    def write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.write(fd, view)
            if written <= 0:  # pragma: no cover - write(2) reports errors by raising
                raise OSError(errno.EIO, "write made no progress")
            view = view[written:]
