"""Test doubles shared by the session tests."""
from __future__ import annotations

from typing import Any


class FakeConnection:
    """Stands in for ``broker.transport.Connection`` when a session is driven without sockets:
    it records what the session wrote, how often, and how it closed."""

    id = 1
    peer_host = "127.0.0.1"

    def __init__(self) -> None:
        self.out = bytearray()
        self.writes = 0
        self.writable = True
        self.closed = False
        self.close_reason: str | None = None
        self.keepalive: tuple = ()
        self.publishing = False
        #: CN of a verified TLS client certificate (none here)
        self.tls_identity: str | None = None
        #: login back-off delays the session asked for, and close callbacks (vhost limits)
        self.held: list[float] = []
        self.close_callbacks: list = []

    def hold_output(self, delay_s: float) -> None:
        self.held.append(delay_s)

    def on_close(self, callback: Any) -> None:
        self.close_callbacks.append(callback)

    def opened(self, user: str, vhost: str) -> None:
        """The session logged its client in (the transport logs the "open" line)."""
        self.login = (user, vhost)

    def write(self, data: Any) -> None:
        self.writes += 1
        self.out += data

    def writelines(self, chunks: list) -> None:
        self.writes += 1
        for chunk in chunks:
            self.out += chunk

    def close(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason

    abort = close

    def set_keepalive(self, read_timeout_s=None, on_read_timeout=None, send_interval_s=None,
                      send_heartbeat=None) -> None:
        self.keepalive = (read_timeout_s, on_read_timeout, send_interval_s, send_heartbeat)

    def mark_publishing(self) -> None:
        self.publishing = True

    def take(self) -> bytes:
        """Everything written since the last take."""
        data = bytes(self.out)
        self.out.clear()
        return data


class MemoryLog:
    """A store ``Log`` (persistence/store.py) kept in a dict: appends are "safe" at once (None).
    ``settled`` lists the ids settled, in order, for tests to inspect."""

    def __init__(self) -> None:
        self.records: dict[int, tuple[bytes, int]] = {}
        self.settled: list[int] = []
        self.max_id_seen = -1
        self.dropped = False
        #: the latest receive state of each live message that has one (``mark``)
        self.marked: dict[int, tuple[int, int, int]] = {}

    def append(self, msg_id: int, data: bytes, flags: int = 0) -> Any:
        self.records[msg_id] = (bytes(data), flags)
        self.max_id_seen = max(self.max_id_seen, msg_id)
        return None

    def settle(self, msg_id: int) -> None:
        self.marked.pop(msg_id, None)
        if self.records.pop(msg_id, None) is not None:
            self.settled.append(msg_id)

    def mark(self, msg_id: int, receive_count: int, invisible_until_ms: int,
             first_receive_ms: int) -> None:
        if msg_id in self.records:
            self.marked[msg_id] = (receive_count, invisible_until_ms, first_receive_ms)

    def marks(self) -> dict[int, tuple[int, int, int]]:
        return dict(self.marked)

    def recover(self, resident_bytes: int | None = None,
                spans: bool = False) -> list[tuple[int, bytes | int]]:
        """Live records in id order; past ``resident_bytes`` their length stands in for them
        (kept a prefix, as FileQueueLog does), unless flagged to be read anyway."""
        budget = resident_bytes
        out: list[tuple[int, bytes | int]] = []
        for msg_id in sorted(self.records):
            data, flags = self.records[msg_id]
            if budget is None or len(data) <= budget:
                out.append((msg_id, data))
                if budget is not None:
                    budget -= len(data)
            elif flags:
                out.append((msg_id, data))
            elif msg_id in self.marked:
                budget = 0
                out.append((msg_id, len(data)))
            else:
                budget = 0
                out.append((msg_id, len(data)))
        return out

    def read(self, msg_id: int) -> bytes:
        return self.records[msg_id][0]

    def holds(self, msg_id: int) -> bool:
        return msg_id in self.records

    def size_of(self, msg_id: int) -> int:
        return len(self.records[msg_id][0])

    def drop(self) -> None:
        self.dropped = True
        self.records.clear()


class PendingLog(MemoryLog):
    """A log whose appends complete when the test says so (a slow disk): each append returns a
    future, kept in ``pending``, on the running loop."""

    def __init__(self, loop: Any = None) -> None:
        super().__init__()
        self.loop = loop
        self.pending: list = []

    def append(self, msg_id: int, data: bytes, flags: int = 0) -> Any:
        super().append(msg_id, data, flags)
        import asyncio
        future = (self.loop or asyncio.get_running_loop()).create_future()
        self.pending.append(future)
        return future


class PowerCutLog(MemoryLog):
    """A log that loses, at a power cut, what no sync covered: ``sync()`` makes every write so
    far durable (an fsync), ``power_cut()`` returns the log as the disk would show it after a
    restart. Appends and settles are journaled in order, as in a segment file."""

    def __init__(self) -> None:
        super().__init__()
        self.journal: list[tuple[str, int, bytes, Any]] = []
        self.synced = 0

    def append(self, msg_id: int, data: bytes, flags: int = 0) -> Any:
        self.journal.append(("append", msg_id, bytes(data), flags))
        return super().append(msg_id, data, flags)

    def settle(self, msg_id: int) -> None:
        if msg_id in self.records:
            self.journal.append(("settle", msg_id, b"", 0))
        super().settle(msg_id)

    def mark(self, msg_id: int, receive_count: int, invisible_until_ms: int,
             first_receive_ms: int) -> None:
        if msg_id in self.records:
            self.journal.append(("mark", msg_id, b"", (receive_count, invisible_until_ms,
                                                       first_receive_ms)))
        super().mark(msg_id, receive_count, invisible_until_ms, first_receive_ms)

    def sync(self) -> None:
        self.synced = len(self.journal)

    def power_cut(self) -> "PowerCutLog":
        survivor = PowerCutLog()
        for kind, msg_id, data, flags in self.journal[:self.synced]:
            if kind == "append":
                survivor.append(msg_id, data, flags)
            elif kind == "mark":
                survivor.mark(msg_id, *flags)
            else:
                survivor.settle(msg_id)
        survivor.settled.clear()
        survivor.sync()
        return survivor


class FakeStore:
    """A ``Store`` (persistence/store.py) whose logs are made by ``make_log`` (MemoryLog by
    default), kept by name in ``logs``; streams stay in memory, definitions in ``definitions``."""

    def __init__(self, make_log: Any = MemoryLog) -> None:
        self.make_log = make_log
        self.logs: dict[str, Any] = {}
        self.definitions: bytes | None = None

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _log(self, name: str) -> Any:
        found = self.logs.get(name)
        if found is None or found.dropped:
            found = self.logs[name] = self.make_log()
        return found

    def queue_log(self, vhost: str, queue: str) -> Any:
        return self._log(queue)

    def state_log(self, name: str) -> Any:
        return self._log(f"state:{name}")

    def dedup_log(self, vhost: str, queue: str) -> Any:
        return self._log(f"dedup:{queue}")

    def stream_log(self, vhost: str, stream: str, segment_bytes: int | None = None) -> Any:
        return None

    def spill_log(self, vhost: str, queue: str) -> Any:
        return None

    def save_definitions(self, data: bytes) -> None:
        self.definitions = data

    def load_definitions(self) -> bytes | None:
        return self.definitions

    @property
    def fsync_latency(self) -> Any:
        return None
