"""The deliveries a client holds and has not settled, by delivery tag: the bookkeeping behind
AMQP's ``multiple`` acks and STOMP's cumulative ``client`` acks, kept once for both adapters,
consumer timeouts (``forget``) and the requeue at teardown (``end_consumers``).

Tags are the adapter's (an AMQP channel's counter, a STOMP connection's); they must be added in
increasing order, so insertion order is tag order and "everything up to tag" is a prefix.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from ..consumer import Delivery
from ..queue import Queue


class Unacked:
    __slots__ = ("_by_tag",)

    def __init__(self) -> None:
        self._by_tag: dict[int, Delivery] = {}

    def __len__(self) -> int:
        return len(self._by_tag)

    def __bool__(self) -> bool:
        return bool(self._by_tag)

    def __contains__(self, tag: int) -> bool:
        return tag in self._by_tag

    def __iter__(self) -> Iterator[int]:
        return iter(self._by_tag)

    def add(self, tag: int, delivery: Delivery) -> None:
        self._by_tag[tag] = delivery

    def take(self, tag: int) -> Delivery | None:
        """The delivery with this tag, now settled by the client; None if not outstanding."""
        return self._by_tag.pop(tag, None)

    def take_upto(self, tag: int) -> list[tuple[int, Delivery]]:
        """Every outstanding delivery with a tag up to ``tag``, oldest first (a cumulative or
        ``multiple`` acknowledgement)."""
        by_tag = self._by_tag
        tags = []
        for held in by_tag:
            if held > tag:
                break
            tags.append(held)
        return [(t, by_tag.pop(t)) for t in tags]

    def take_all(self) -> list[tuple[int, Delivery]]:
        taken = list(self._by_tag.items())
        self._by_tag.clear()
        return taken

    def forget(self, delivery: Delivery) -> int | None:
        """Drop a delivery the core took back (consumer timeout): a late ack finds nothing.
        Returns its tag, or None if it was not held."""
        for tag, held in self._by_tag.items():
            if held is delivery:
                del self._by_tag[tag]
                return tag
        return None

    def restore(self, taken: list[tuple[int, Delivery]]) -> None:
        """Hold again deliveries taken earlier (an AMQP transaction rolled back), in tag order."""
        if not taken:
            return
        merged = dict(self._by_tag)
        merged.update(taken)
        self._by_tag = dict(sorted(merged.items()))

    def deliveries(self) -> list[Delivery]:
        return list(self._by_tag.values())


class Ledger:
    """The deliveries one connection's client holds, by the connection's tags, each in a scope:
    the consumer whose cumulative acks cover it (a STOMP subscription in ``client`` mode acks
    "this message and every earlier one *of this subscription*" [STOMP 1.2 "SUBSCRIBE ack
    Header"]); its ``cumulative`` attribute says whether its acks are. Tags are added in
    increasing order, as for :class:`Unacked`, so each scope's dict
    is in tag order. (Plain dicts rather than an ``Unacked`` per scope: this is on the path of
    every acknowledged STOMP message.)"""

    __slots__ = ("_scope_of", "_by_scope")

    def __init__(self) -> None:
        self._scope_of: dict[int, Any] = {}
        self._by_scope: dict[Any, dict[int, Delivery]] = {}

    def __len__(self) -> int:
        return len(self._scope_of)

    def __contains__(self, tag: int) -> bool:
        return tag in self._scope_of

    def add(self, tag: int, delivery: Delivery, scope: Any) -> None:
        held = self._by_scope.get(scope)
        if held is None:
            held = self._by_scope[scope] = {}
        held[tag] = delivery
        self._scope_of[tag] = scope

    def take_acked(self, tag: int) -> list[tuple[int, Delivery]]:
        """What an ack of ``tag`` settles: every delivery of its scope up to it when the scope's
        acks are cumulative (the scope's ``cumulative`` attribute), else that one; nothing if
        the tag is not held."""
        scope = self._scope_of.get(tag)
        if scope is None:
            return []
        if scope.cumulative:
            return self.take_upto(tag)
        del self._scope_of[tag]
        return [(tag, self._by_scope[scope].pop(tag))]

    def take_upto(self, tag: int) -> list[tuple[int, Delivery]]:
        """Every delivery of the tag's scope up to ``tag``, oldest first (a cumulative ack);
        nothing if the tag is not held."""
        scope = self._scope_of.get(tag)
        if scope is None:
            return []
        held = self._by_scope[scope]
        tags = []
        for t in held:
            if t > tag:
                break
            tags.append(t)
        scope_of = self._scope_of
        taken = []
        for t in tags:
            del scope_of[t]
            taken.append((t, held.pop(t)))
        return taken

    def take_scope(self, scope: Any) -> list[tuple[int, Delivery]]:
        """Everything a scope holds (its consumer ended), oldest first."""
        held = self._by_scope.pop(scope, None)
        if not held:
            return []
        scope_of = self._scope_of
        for t in held:
            del scope_of[t]
        return list(held.items())

    def take_all(self) -> list[tuple[int, Delivery]]:
        """Every delivery held (the connection ended), scope by scope."""
        taken = [pair for held in self._by_scope.values() for pair in held.items()]
        self._by_scope.clear()
        self._scope_of.clear()
        return taken

    def forget(self, delivery: Delivery, scope: Any) -> int | None:
        """Drop a delivery the core took back (consumer timeout): a late ack finds nothing.
        Returns its tag, or None if that scope does not hold it."""
        held = self._by_scope.get(scope)
        if held:
            for tag, d in held.items():
                if d is delivery:
                    del held[tag]
                    del self._scope_of[tag]
                    return tag
        return None

    def deliveries(self, scope: Any) -> list[Delivery]:
        return list(self._by_scope.get(scope, {}).values())


def end_consumers(vhost: Any, consumers: Iterable[Any], held: Iterable[Delivery]) -> None:
    """A connection, channel or subscription ended: cancel its consumers, then return what its
    client held to the queues. Every consumer goes first, so that a returned message is given to
    another connection rather than back to a consumer of this one that is ending."""
    for consumer in consumers:
        vhost.cancel(consumer)
    vhost.requeue(held)


def settle_all(deliveries: list[Delivery], ack: bool, requeue: bool) -> None:
    """Settle what one acknowledgement names (AMQP ``multiple``, a STOMP cumulative ack): each
    run of deliveries from one queue settles as one batch (:meth:`Queue.settle_many`); a stream
    delivery is settled on its own."""
    count = len(deliveries)
    start = 0
    while start < count:
        queue = deliveries[start].queue
        end = start + 1
        if queue.__class__ is Queue:
            while end < count and deliveries[end].queue is queue:
                end += 1
            queue.settle_many(deliveries[start:end], ack, requeue)
        else:
            queue.settle(deliveries[start], ack, requeue)
        start = end
