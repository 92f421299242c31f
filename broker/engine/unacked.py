"""The deliveries a client holds and has not settled, by delivery tag: the bookkeeping behind
AMQP's ``multiple`` acks and STOMP's cumulative ``client`` acks, kept once for both adapters.

Tags are the adapter's (an AMQP channel's counter, a STOMP connection's); they must be added in
increasing order, so insertion order is tag order and "everything up to tag" is a prefix.
"""
from __future__ import annotations

from typing import Iterator

from ..consumer import Delivery


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
