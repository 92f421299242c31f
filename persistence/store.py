"""The storage interface the core sees, and the in-memory implementation.

Kept small on purpose, so that a second engine (append-only segment files; later a replicated
NATS JetStream store: streams with work-queue retention, acks and a dedup window) can implement it
without the core changing:

- ``Store.queue_log(vhost, queue)`` gives the log of one durable queue: ``append`` a persistent
  message under the queue's message id (returning an awaitable that resolves once it is safe, or
  ``None`` when it already is), ``settle`` it when acked or dropped, ``recover`` what was appended
  and never settled, ``drop`` the whole log when the queue is deleted.
- ``Store.save_definitions`` / ``load_definitions``: durable exchanges, queues and bindings.
"""
from __future__ import annotations

from typing import Any, Awaitable, Iterable, Protocol


class QueueLog(Protocol):
    def append(self, msg_id: int, message: Any) -> Awaitable[None] | None: ...
    def settle(self, msg_id: int) -> None: ...
    def recover(self) -> Iterable[tuple[int, Any]]: ...
    def drop(self) -> None: ...


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def queue_log(self, vhost: str, queue: str) -> QueueLog | None: ...
    def save_definitions(self, definitions: dict) -> None: ...
    def load_definitions(self) -> dict: ...


class MemoryStore:
    """Keeps nothing beyond the process: every append is "safe" at once. Durable queues get no log,
    so the hot path pays nothing for the interface."""

    def __init__(self) -> None:
        self._definitions: dict = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def queue_log(self, vhost: str, queue: str) -> QueueLog | None:
        return None

    def save_definitions(self, definitions: dict) -> None:
        self._definitions = definitions

    def load_definitions(self) -> dict:
        return self._definitions
