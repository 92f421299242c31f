"""Publisher confirms: one sequence number per publish, each confirmed once it is safe, and as
few acks as possible on the wire.

The rule (RabbitMQ's, for AMQP 0-9-1 ``confirm.select``): a cumulative ack for N (AMQP
``multiple=true``) confirms every publish up to N, so one is only sent when nothing up to N is
still waiting for its write; a publish confirmed while an older one waits gets an ack of its own
(``multiple=false``). Cumulative acks that became due are folded into one per write batch
(``flush``, called by the session before it writes). A publish that a queue refused or whose
write failed gets a nack; a nack is never folded.

Publishes in a row that wait for the same awaitable (the store gives every append into one
chunk the same future: they become durable, or fail, together) are kept as one run with one
done callback, not one callback each: a run is answered as a whole.

Events go out through two callbacks: ``ack(seq, multiple)`` and ``nack(seq)``, and ``due(self)``
tells the session that ``flush`` has an ack to send.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable

# A run: [awaitable, first seq, last seq, ended]
_WAIT, _FIRST, _LAST, _ENDED = range(4)


class PublisherConfirms:
    __slots__ = ("seq", "_ack", "_nack", "_due", "_runs", "_waiting", "_upto", "_sent")

    def __init__(self, ack: Callable[[int, bool], None], nack: Callable[[int], None],
                 due: Callable[["PublisherConfirms"], None]):
        self._ack = ack
        self._nack = nack
        self._due = due
        #: the last sequence number given out (the first publish is 1)
        self.seq = 0
        #: runs of publishes waiting for their write, oldest first (ended runs leave from the
        #: head: lazy deletion), and how many publishes they hold
        self._runs: deque[list] = deque()
        self._waiting = 0
        #: highest sequence number that may be acked cumulatively, and the last one sent so
        self._upto = 0
        self._sent = 0

    def __len__(self) -> int:
        """Publishes still waiting for their write."""
        return self._waiting

    def published(self, wait: Any = None, rejected: bool = False) -> int:
        """A publish was routed: ``wait`` is the awaitable of its write (None: nothing to wait
        for), ``rejected`` that a queue refused it. Returns its sequence number."""
        self.seq = seq = self.seq + 1
        if rejected:
            self._nack(seq)
        elif wait is None:
            if self._waiting:
                # an older publish is still on its way to disk: a cumulative ack would cover it
                self._ack(seq, False)
            elif self._upto > self._sent:
                self._upto = seq  # joins the cumulative ack already due
            else:
                self._upto = seq
                self._due(self)
        else:
            self._waiting += 1
            runs = self._runs
            if runs:
                tail = runs[-1]
                if tail[_WAIT] is wait and tail[_LAST] == seq - 1 and not tail[_ENDED]:
                    tail[_LAST] = seq  # the same write as the publish before: same outcome
                    return seq
            run = [wait, seq, seq, False]
            runs.append(run)
            asyncio.ensure_future(wait).add_done_callback(
                lambda future, run=run: self._written(run, future))
        return seq

    def _written(self, run: list, future: Any) -> None:
        """The write of a run ended: every publish in it is safe, or none is."""
        error = None
        if future.cancelled():
            error = "cancelled"
        elif future.exception() is not None:
            error = future.exception()
        run[_ENDED] = True
        first, last = run[_FIRST], run[_LAST]
        self._waiting -= last - first + 1
        runs = self._runs
        while runs and runs[0][_ENDED]:
            runs.popleft()
        if error is not None:
            for seq in range(first, last + 1):
                self._nack(seq)
        elif runs and runs[0][_FIRST] < first:
            # an older publish is still on its way to disk: a cumulative ack would cover it
            for seq in range(first, last + 1):
                self._ack(seq, False)
        elif last > self._upto:
            # Tell the session once per batch: later confirms join the ack already due.
            was_due = self._upto > self._sent
            self._upto = last
            if not was_due:
                self._due(self)

    def flush(self) -> None:
        """Send the cumulative ack that became due, if any (before the session's next write)."""
        if self._upto > self._sent:
            self._sent = self._upto
            self._ack(self._upto, True)
