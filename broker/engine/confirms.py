"""Publisher confirms: one sequence number per publish, each confirmed once it is safe, and as
few acks as possible on the wire.

The rule (RabbitMQ's, for AMQP 0-9-1 ``confirm.select``): a cumulative ack for N (AMQP
``multiple=true``) confirms every publish up to N, so one is only sent when nothing up to N is
still waiting for its write; a publish confirmed while an older one waits gets an ack of its own
(``multiple=false``). Cumulative acks that became due are folded into one per write batch
(``flush``, called by the session before it writes). A publish that a queue refused or whose
write failed gets a nack; a nack is never folded.

Events go out through two callbacks: ``ack(seq, multiple)`` and ``nack(seq)``, and ``due(self)``
tells the session that ``flush`` has an ack to send.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable


class PublisherConfirms:
    __slots__ = ("seq", "_ack", "_nack", "_due", "_waiting", "_order", "_upto", "_sent")

    def __init__(self, ack: Callable[[int, bool], None], nack: Callable[[int], None],
                 due: Callable[["PublisherConfirms"], None]):
        self._ack = ack
        self._nack = nack
        self._due = due
        #: the last sequence number given out (the first publish is 1)
        self.seq = 0
        #: publishes waiting for their write, and the same oldest first (lazy deletion)
        self._waiting: set[int] = set()
        self._order: deque[int] = deque()
        #: highest sequence number that may be acked cumulatively, and the last one sent so
        self._upto = 0
        self._sent = 0

    def __len__(self) -> int:
        """Publishes still waiting for their write."""
        return len(self._waiting)

    def published(self, wait: Any = None, rejected: bool = False) -> int:
        """A publish was routed: ``wait`` is the awaitable of its write (None: nothing to wait
        for), ``rejected`` that a queue refused it. Returns its sequence number."""
        self.seq = seq = self.seq + 1
        if rejected:
            self._nack(seq)
        elif wait is None:
            if self._order:
                # an older publish is still on its way to disk: a cumulative ack would cover it
                self._ack(seq, False)
            elif self._upto > self._sent:
                self._upto = seq  # joins the cumulative ack already due
            else:
                self._upto = seq
                self._due(self)
        else:
            self._waiting.add(seq)
            self._order.append(seq)
            asyncio.ensure_future(wait).add_done_callback(
                lambda future, seq=seq: self._written(seq, future))
        return seq

    def _written(self, seq: int, future: Any) -> None:
        error = None
        if future.cancelled():
            error = "cancelled"
        elif future.exception() is not None:
            error = future.exception()
        self.written(seq, error)

    def written(self, seq: int, error: Any = None) -> None:
        """The write of ``seq`` ended (``error``: why it failed, None if it is safe)."""
        waiting = self._waiting
        waiting.discard(seq)
        order = self._order
        while order and order[0] not in waiting:
            order.popleft()
        if error is not None:
            self._nack(seq)
        else:
            self._confirm(seq)

    def _confirm(self, seq: int) -> None:
        order = self._order
        if order and order[0] < seq:
            # an older publish is still on its way to disk: a cumulative ack would cover it
            self._ack(seq, False)
            return
        if seq > self._upto:
            self._due_upto(seq)

    def _due_upto(self, seq: int) -> None:
        # Tell the session once per batch: later confirms join the ack already due.
        was_due = self._upto > self._sent
        self._upto = seq
        if not was_due:
            self._due(self)

    def flush(self) -> None:
        """Send the cumulative ack that became due, if any (before the session's next write)."""
        if self._upto > self._sent:
            self._sent = self._upto
            self._ack(self._upto, True)
