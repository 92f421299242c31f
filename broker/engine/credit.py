"""Prefetch and credit: how many deliveries a client may hold unsettled, and when the consumers
that waited for room must be told to go on.

A queue asks each of its consumers ``has_credit()`` before every delivery and pumps again when
one of *its own* deliveries is settled, which covers a consumer's own prefetch (AMQP
``basic.qos`` per consumer, STOMP ``prefetch-count``). A :class:`Window` is a limit shared by
several consumers, possibly on different queues: AMQP's channel-wide prefetch
(``basic.qos global=true``) and MQTT's Receive Maximum (one in-flight window per session
[MQTT-4.9.0-2]). A settle on one queue can then make room for a consumer of another, which no
queue knows about: the window says when its consumers must be resumed.
"""
from __future__ import annotations

from typing import Any, Iterable


class Window:
    __slots__ = ("limit",)

    def __init__(self, limit: int = 0):
        #: deliveries the group may hold unsettled; 0: no limit
        self.limit = limit

    def open(self, held: int) -> bool:
        """Is there room for one more delivery while ``held`` are unsettled?"""
        limit = self.limit
        return not limit or held < limit

    def freed(self, held_before: int, held_after: int) -> bool:
        """Settling took the window from full to open: its consumers must be resumed."""
        limit = self.limit
        return bool(limit) and held_before >= limit > held_after

    def set_limit(self, limit: int) -> bool:
        """A new limit (0: none); True if it grew, so that waiting consumers must resume."""
        grew = limit == 0 and self.limit != 0 or limit > self.limit != 0
        self.limit = limit
        return grew


def resume(consumers: Iterable[Any]) -> None:
    """Credit came back other than by a settle on their queues (the window opened, the
    transport drained, a limit grew): each consumer's queue pumps again."""
    for consumer in list(consumers):
        consumer.resume()
