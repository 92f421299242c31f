"""File-system shims for the store: a power-cut recorder and a fault injector.

``PowerCutFS`` records, for every file, the bytes it held at its last fsync, and which directory
entries were made durable by an fsync of their directory. :meth:`PowerCutFS.image` then builds
the data directory a power cut at that moment would leave: each file cut to its last fsynced
content, each file or directory whose entry was never fsynced left out. (Files that existed when
the recorder was made count as durable.) This is stricter than ``kill -9``, which keeps the page
cache, and is what the store's confirms promise.

``FaultyFS`` fails chosen calls: ``fail("write", errno.ENOSPC, after_bytes=7)`` makes the next
write write 7 bytes and then fail, as a full disk does.
"""
from __future__ import annotations

import errno
import os
import stat
import threading

from manifold.persistence.fs import FileSystem


class PowerCutFS(FileSystem):
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._lock = threading.Lock()
        #: inode -> how many times a file was created with it (the kernel reuses inode numbers)
        self._generation: dict[int, int] = {}
        #: (inode, generation) -> content at its last fsync
        self._synced: dict[tuple[int, int], bytes] = {}
        #: durable directory entries: path -> ((inode, generation), is_dir)
        self._entries: dict[str, tuple[tuple[int, int], bool]] = {}
        os.makedirs(self.root, exist_ok=True)
        for directory, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                self._entries[path] = (self._file(st.st_ino), stat.S_ISDIR(st.st_mode))
                if not stat.S_ISDIR(st.st_mode):
                    with open(path, "rb") as fh:
                        self._synced[self._file(st.st_ino)] = fh.read()
        self.fsyncs = 0

    def _file(self, ino: int) -> tuple[int, int]:
        return ino, self._generation.get(ino, 0)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        existed = os.path.exists(path)
        fd = super().open(path, flags, mode)
        if not existed:
            ino = os.fstat(fd).st_ino
            with self._lock:  # a new file: nothing of it is durable yet
                self._generation[ino] = self._generation.get(ino, 0) + 1
        return fd

    def mkdir(self, path: str) -> None:
        super().mkdir(path)
        ino = os.stat(path).st_ino
        with self._lock:
            self._generation[ino] = self._generation.get(ino, 0) + 1

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        st = os.fstat(fd)
        # The descriptor may be write-only: read the file through /proc.
        with open(f"/proc/self/fd/{fd}", "rb") as fh:
            content = fh.read()
        with self._lock:
            self._synced[self._file(st.st_ino)] = content
            self.fsyncs += 1

    def fsync_dir(self, path: str) -> None:
        super().fsync_dir(path)
        path = os.path.abspath(path)
        with self._lock:
            present = {}
            for name in os.listdir(path):
                child = os.path.join(path, name)
                try:
                    st = os.lstat(child)
                except FileNotFoundError:
                    continue
                present[child] = (self._file(st.st_ino), stat.S_ISDIR(st.st_mode))
            for child in [p for p in self._entries if os.path.dirname(p) == path]:
                if child not in present:
                    del self._entries[child]
            self._entries.update(present)

    def image(self, target: str) -> None:
        """Write into ``target`` what a power cut now would leave of ``root``."""
        with self._lock:
            entries = dict(self._entries)
            synced = dict(self._synced)
        os.makedirs(target, exist_ok=True)
        for path in sorted(entries):
            ancestor = os.path.dirname(path)
            reachable = True
            while ancestor != self.root:
                if ancestor not in entries:
                    reachable = False
                    break
                ancestor = os.path.dirname(ancestor)
            if not reachable:
                continue
            ino, is_dir = entries[path]
            out = os.path.join(target, os.path.relpath(path, self.root))
            if is_dir:
                os.makedirs(out, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out, "wb") as fh:
                    fh.write(synced.get(ino, b""))


class FaultyFS(FileSystem):
    """Fails the next matching call(s) with an OSError. Thread-safe enough for one writer."""

    def __init__(self) -> None:
        self._faults: list[dict] = []
        self.calls: list[str] = []
        self.open_fds: set[int] = set()
        self.max_open_fds = 0

    def fail(self, op: str, code: int = errno.EIO, *, times: int = 1, path: str = "",
             after_bytes: int | None = None) -> None:
        self._faults.append({"op": op, "code": code, "times": times, "path": path,
                             "after_bytes": after_bytes})

    def clear(self) -> None:
        self._faults.clear()

    def _fault(self, op: str, path: str = "") -> dict | None:
        for fault in self._faults:
            if fault["op"] == op and fault["path"] in path and fault["times"] > 0:
                fault["times"] -= 1
                return fault
        return None

    @staticmethod
    def _raise(fault: dict, what: str) -> None:
        raise OSError(fault["code"], f"injected {os.strerror(fault['code'])}", what)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        self.calls.append("open")
        fault = self._fault("open", path)
        if fault is not None:
            self._raise(fault, path)
        fd = super().open(path, flags, mode)
        self.open_fds.add(fd)
        self.max_open_fds = max(self.max_open_fds, len(self.open_fds))
        return fd

    def close(self, fd: int) -> None:
        self.open_fds.discard(fd)
        super().close(fd)

    def write(self, fd: int, data: memoryview) -> int:
        self.calls.append("write")
        fault = self._fault("write")
        if fault is not None:
            keep = fault["after_bytes"]
            if keep:  # a torn write: some bytes land, then the disk is full
                os.write(fd, data[:min(keep, len(data))])
            self._raise(fault, f"fd {fd}")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self.calls.append("fsync")
        fault = self._fault("fsync")
        if fault is not None:
            self._raise(fault, f"fd {fd}")
        super().fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        fault = self._fault("ftruncate")
        if fault is not None:
            self._raise(fault, f"fd {fd}")
        super().ftruncate(fd, length)

    def fsync_dir(self, path: str) -> None:
        fault = self._fault("fsync_dir", path)
        if fault is not None:
            self._raise(fault, path)
        super().fsync_dir(path)

    def replace(self, source: str, target: str) -> None:
        fault = self._fault("replace", target)
        if fault is not None:
            self._raise(fault, target)
        super().replace(source, target)


class FaultyPowerCutFS(FaultyFS, PowerCutFS):
    """Both: faults on demand, and the record of what a power cut would keep."""

    def __init__(self, root: str):
        PowerCutFS.__init__(self, root)
        FaultyFS.__init__(self)
