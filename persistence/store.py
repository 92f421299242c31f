"""The storage interface the core sees, and the in-memory implementation.

Kept small, and in bytes, so that a second engine (a replicated NATS JetStream store: streams with
work-queue retention, acks and a dedup window) can implement it without the core changing:

- ``Store.queue_log(vhost, queue)`` gives the :class:`Log` of one durable queue: ``append`` an encoded
  persistent message under the queue's message id (returning an awaitable that resolves once it
  is safe under the fsync policy, or ``None`` when it already is), ``settle`` it when acked or
  dropped, ``recover`` what was appended and never settled (in id order; past ``resident_bytes``
  the payloads stay on disk and their length, an int, comes back instead; with ``spans`` a log
  may hand over a run of such messages as one ``(first_id, (ids, lengths))`` item, two arrays), ``read`` one payload back (a body that was
  paged out of memory), ``holds``/``size_of`` one record, ``drop`` the whole log when the queue
  is deleted; ``max_id_seen`` is the highest id it ever took, so ids are never reused.
  ``mark`` records a live message's receive state (receive count, invisible-until and first
  receive, wall-clock ms), written only where that state must outlive a restart (SQS receives,
  returns in queues with a delivery limit) and never waited on; after ``recover``, ``marks()``
  hands over the latest mark of each live message that has one.
- ``state_log(name)``: a log of the same kind for durable state that is not a queue (MQTT
  retained messages, persistent sessions, QoS 2 packet ids; see ``broker/durable_map.py``).
- ``dedup_log(vhost, queue)``: a log of the same kind for a queue's deduplication window (keys
  appended, settled when they age out), or None when nothing outlives the process.
- ``stream_log(vhost, stream, segment_bytes)``: a stream's records on disk (see
  ``persistence/streamlog.py``), or None: the stream then keeps its records in memory.
- ``spill_log(vhost, queue)``: a log of the same kind where a queue pages out transient
  messages past its resident budget; emptied at every start (None: transient messages stay
  in memory).
- ``save_definitions`` / ``load_definitions``: the encoded durable exchanges, queues, bindings.
- ``fsync_latency``: the histogram the management API shows, or None.

Every implementation (MemoryStore, FileStore, the fakes in tests/fakes.py) implements all of it:
the core calls it without probing with ``getattr``.
"""
from __future__ import annotations

from typing import Any, Awaitable, Iterable, Protocol


class Log(Protocol):
    """A log of records by id, the one kind of log the store hands out (queues, state, dedup
    windows, spill): part of the :class:`Store` protocol. Ids only grow; they are never reused."""

    #: the highest record id ever appended (settled or not; -1 when none): a new owner of the
    #: log continues above it, so an id is never reused after a restart
    max_id_seen: int

    def append(self, msg_id: int, data: bytes, flags: int = 0) -> Awaitable[None] | None: ...
    def settle(self, msg_id: int) -> None: ...
    def mark(self, msg_id: int, receive_count: int, invisible_until_ms: int,
             first_receive_ms: int) -> None: ...
    def marks(self) -> dict[int, tuple[int, int, int]]: ...
    def recover(self, resident_bytes: int | None = None,
                spans: bool = False) -> Iterable[tuple[int, Any]]: ...
    def read(self, msg_id: int) -> bytes: ...
    def holds(self, msg_id: int) -> bool: ...
    def size_of(self, msg_id: int) -> int: ...
    def drop(self) -> None: ...


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def queue_log(self, vhost: str, queue: str) -> Log | None: ...
    def state_log(self, name: str) -> Log | None: ...
    def dedup_log(self, vhost: str, queue: str) -> Log | None: ...
    def stream_log(self, vhost: str, stream: str, segment_bytes: int | None = None) -> Any: ...
    def spill_log(self, vhost: str, queue: str) -> Log | None: ...
    def save_definitions(self, data: bytes) -> None: ...
    def load_definitions(self) -> bytes | None: ...

    @property
    def fsync_latency(self) -> Any:
        """The fsync latency histogram (persistence/latency.py), or None without a disk."""


class MemoryStore:
    """Keeps nothing beyond the process: every append is "safe" at once. Durable queues get no log,
    so the hot path pays nothing for the interface."""

    def __init__(self) -> None:
        self._definitions: bytes | None = None

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def queue_log(self, vhost: str, queue: str) -> Log | None:
        return None

    def state_log(self, name: str) -> Log | None:
        return None

    def dedup_log(self, vhost: str, queue: str) -> Log | None:
        return None

    def stream_log(self, vhost: str, stream: str, segment_bytes: int | None = None) -> Any:
        return None

    def spill_log(self, vhost: str, queue: str) -> Log | None:
        return None

    def save_definitions(self, data: bytes) -> None:
        self._definitions = data

    def load_definitions(self) -> bytes | None:
        return self._definitions

    @property
    def fsync_latency(self) -> Any:
        return None
