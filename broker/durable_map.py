"""A key -> value map kept in a store log, for durable state that is not a queue (MQTT retained
messages, persistent sessions, QoS 2 packet ids).

It rides on the queue-log interface, so it shares the queues' segment files, group commit, fsync
policy and failure handling: ``put`` appends an ENQUEUE record ``[key, value]`` and settles the
record it replaces; ``delete`` appends a record for the deletion and settles it together with
the old one, so the returned future means "the deletion is on disk" too. Recovery keeps, per key,
the record with the highest id (a replacement whose tombstone was lost in a power cut still
wins). Without a log (an in-memory store) the map keeps nothing and every future is None.
"""
from __future__ import annotations

from typing import Any, Awaitable, Hashable

from .message_codec import decode_value, encode_value


def _key(value: Any) -> Hashable:
    """msgpack returns arrays as lists: keys made of several parts come back as tuples."""
    return tuple(value) if isinstance(value, list) else value


class DurableMap:
    def __init__(self, log: Any):
        self.log = log
        self._ids: dict[Hashable, int] = {}
        self._next_id = 1
        self._loaded = False

    def load(self) -> dict[Hashable, Any]:
        """What an earlier run stored: key -> value."""
        if self.log is None or self._loaded:
            return {}
        self._loaded = True  # record ids continue after the stored ones: load before writing
        values: dict[Hashable, Any] = {}
        for record_id, data in self.log.recover():
            key, value = decode_value(data)
            if key is None:  # a deletion record whose own tombstone was lost
                self.log.settle(record_id)
                continue
            key = _key(key)
            older = self._ids.get(key)
            if older is not None:
                self.log.settle(older)  # replaced, its tombstone lost: settle it now
            self._ids[key] = record_id
            values[key] = value
        self._next_id = max(self.log.max_id_seen + 1, 1)
        return values

    def put(self, key: Hashable, value: Any) -> Awaitable[None] | None:
        """Store ``value`` under ``key``; the result resolves once it is durable."""
        if self.log is None:
            return None
        self.load()
        record_id = self._next_id
        self._next_id += 1
        wait = self.log.append(record_id, encode_value([key, value]))
        older = self._ids.get(key)
        self._ids[key] = record_id
        if older is not None:
            self.log.settle(older)
        return wait

    def delete(self, key: Hashable) -> Awaitable[None] | None:
        """Forget ``key``; the result resolves once the deletion is durable."""
        older = self._ids.pop(key, None)
        if self.log is None or older is None:
            return None
        record_id = self._next_id
        self._next_id += 1
        # An empty record whose append covers the tombstones written right after it.
        wait = self.log.append(record_id, encode_value([None, None]))
        self.log.settle(older)
        self.log.settle(record_id)
        return wait

    async def put_durably(self, key: Hashable, value: Any) -> None:
        """``put``, returning once the value is durable (at once without a log)."""
        wait = self.put(key, value)
        if wait is not None:
            await wait

    async def delete_durably(self, key: Hashable) -> None:
        """``delete``, returning once the deletion is durable (at once without a log)."""
        wait = self.delete(key)
        if wait is not None:
            await wait

    def __contains__(self, key: Hashable) -> bool:
        return key in self._ids
