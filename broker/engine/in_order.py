"""Replies released in the order their requests arrived, each only once its own write is safe.

MQTT's PUBACK / PUBREC / PUBCOMP / SUBACK [MQTT-4.6.0-2] and STOMP's RECEIPT frames promise both:
nothing is acknowledged before it is on disk, and acknowledgements keep the order of the
requests. A session adds each reply with the awaitable of its write (None if there is nothing
to wait for); ``release`` is called for the replies strictly in order, with the reason the
write failed (an exception, or "cancelled") or None.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable


class InOrderReplies:
    __slots__ = ("_release", "_drained", "_waiting", "_ended")

    def __init__(self, release: Callable[[Any, Any], bool],
                 drained: Callable[[], None] | None = None):
        """``release(reply, error)`` sends one reply and returns False when the connection is
        ending, which drops every reply still waiting and every reply added later.
        ``drained()`` runs after replies were released because a write completed (outside the
        session's own input handling)."""
        self._release = release
        self._drained = drained
        #: [ready, reply, error], oldest first
        self._waiting: deque[list] = deque()
        self._ended = False

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, reply: Any, wait: Any = None) -> None:
        if self._ended:
            return
        if wait is None and not self._waiting:
            if not self._release(reply, None):
                self._ended = True
            return
        entry = [wait is None, reply, None]
        self._waiting.append(entry)
        if wait is not None:
            asyncio.ensure_future(wait).add_done_callback(
                lambda future, entry=entry: self._written(entry, future))

    def _written(self, entry: list, future: Any) -> None:
        entry[0] = True
        if future.cancelled():
            entry[2] = "cancelled"
        elif future.exception() is not None:
            entry[2] = future.exception()
        if self._drain() and self._drained is not None:
            self._drained()

    def _drain(self) -> bool:
        waiting = self._waiting
        while waiting and waiting[0][0]:
            _, reply, error = waiting.popleft()
            if not self._release(reply, error):
                waiting.clear()
                self._ended = True
                return False
        return True

    def clear(self) -> None:
        """Forget the replies still waiting (the connection is gone); their writes go on."""
        self._waiting.clear()
        self._ended = True
