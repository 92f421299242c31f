"""A deduplication window: "was a message with this key accepted in the last N ms?"

SQS FIFO queues drop a send whose MessageDeduplicationId (or body hash) was seen in the last five
minutes, even if the first copy was consumed and deleted meanwhile, and JetStream's ``Nats-Msg-Id``
window works the same way. The window remembers each key with what the first send was answered
(the caller's ``value``, e.g. its message id), and writes every key to the store's log for it, so
a restart of the broker keeps the window. Keys leave memory and are settled in the log (which then
compacts) once their time is up; the window is as large as what was sent during it.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Awaitable

from .message_codec import decode_value, encode_value


class DedupWindow:
    def __init__(self, log: Any, clock: Any, window_ms: int):
        self.log = log            # a store Log, or None (nothing survives a restart)
        self.clock = clock
        self.window_ms = window_ms
        self._seen: dict[str, tuple[int, int, Any]] = {}   # key -> (record id, expires, value)
        self._by_age: deque[tuple[int, str, int]] = deque()  # (expires, key, record id)
        self._next_id = 1
        if log is not None:
            self._recover()

    def _recover(self) -> None:
        now = self.clock.now_ms()
        for record_id, data in self.log.recover(None):
            key, expires, value = decode_value(data)
            if expires <= now:
                self.log.settle(record_id)
                continue
            self._seen[key] = (record_id, expires, value)
            self._by_age.append((expires, key, record_id))
        self._next_id = max([self._next_id, self.log.max_id_seen + 1,
                             *(r + 1 for r, _, _ in self._seen.values())])

    def _expire(self, now: int) -> None:
        by_age = self._by_age
        while by_age and by_age[0][0] <= now:
            _, key, record_id = by_age.popleft()
            current = self._seen.get(key)
            if current is not None and current[0] == record_id:
                del self._seen[key]
            if self.log is not None:
                self.log.settle(record_id)

    def seen(self, key: str) -> Any:
        """The value remembered for ``key`` if it was added within the window, else None."""
        now = self.clock.now_ms()
        self._expire(now)
        found = self._seen.get(key)
        return None if found is None else found[2]

    def add(self, key: str, value: Any) -> Awaitable[None] | None:
        """Remember ``key`` for the window; returns the store's write awaitable (or None)."""
        expires = self.clock.now_ms() + self.window_ms
        record_id = self._next_id
        self._next_id += 1
        self._seen[key] = (record_id, expires, value)
        self._by_age.append((expires, key, record_id))
        if self.log is None:
            return None
        return self.log.append(record_id, encode_value([key, expires, value]))

    def drop(self) -> None:
        self._seen.clear()
        self._by_age.clear()
        if self.log is not None:
            self.log.drop()
