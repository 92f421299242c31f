"""Receive state that outlives a restart: how often a message was received, until when it stays
invisible, when it was first received (SQS ``ApproximateReceiveCount``, visibility timeout,
``ApproximateFirstReceiveTimestamp``; the delivery count behind ``x-delivery-limit``).

Part of :class:`broker.queue.Queue` (it inherits :class:`QueueReceives`). The state goes to the
queue's log as a MARK record (persistence/FORMAT.md) only where a restart must keep it, so plain
consumption pays no write per delivery:

- an SQS receive (the ``Receive`` command) and a visibility change of a received message: the
  receive count and the wall-clock deadline (AWS keeps an in-flight message invisible until its
  visibility timeout ends, whatever happens to the host);
- a return (requeue, visibility timeout over, consumer gone) of a received message, or of any
  message in a queue with a delivery limit (RabbitMQ quorum queues, SQS redrive policies): the
  count that the limit is checked against, with no deadline.

Only messages on disk are marked (a transient one does not outlive the restart anyway). At
recovery a marked message gets an entry of its own (not a cold run: it was received, so it had an
entry before the restart too): still invisible, it is leased again until its old deadline;
visible, it waits where a returned message waits. Nothing is marked for a message that was
never received, so the cold part of a backlog stays as it was.
"""
from __future__ import annotations

from typing import Any

from .consumer import Delivery
from .entry import UNACKED, Entry
from .queue_commands import Mark


class QueueReceives:
    # State of Queue this part uses (set in Queue.__init__; methods it calls live in Queue and
    # its other parts: _push_ready, _became_ready, _set_deadline).
    log: Any
    grouped: Any
    delivery_limit: int | None
    unacked_count: int
    _leases: dict
    _writes: list

    def _mark(self, entry: Entry, invisible_until_ms: int) -> None:
        """Write ``entry``'s receive state (see the module docstring for when)."""
        if entry.on_disk:
            self._writes.append(Mark(self.log, entry.msg_id, entry.delivery_count,
                                     invisible_until_ms, entry.first_delivered_ms))

    def _restore_receive(self, entry: Entry, mark: tuple[int, int, int], now: int) -> None:
        """File a recovered message that has a receive state: leased again until its deadline
        if that is still ahead, else ready where returned messages wait. One whose count is
        past the delivery limit gets a lease that ends now, so that its return (at the first
        tick, once every queue is restored) dead-letters it as it would have been had the
        broker been running."""
        count, invisible_until, first_receive = mark
        entry.delivery_count = max(count, 1)  # redelivered=true / DUP, as for every recovered
        entry.first_delivered_ms = first_receive
        limit = self.delivery_limit
        if invisible_until > now or (limit is not None and count > limit):
            entry.returns = max(count - 1, 0)  # the receive under way has not come back yet
            entry.state = UNACKED
            self.unacked_count += 1
            if self.grouped is not None:
                self.grouped.lock(entry.group)
            delivery = Delivery(self, entry, None, True)
            self._leases[entry.msg_id] = delivery
            self._set_deadline(delivery, max(invisible_until, now))  # type: ignore[attr-defined]
            return
        entry.returns = count
        self._push_ready(entry, True)  # type: ignore[attr-defined]
        self._became_ready(entry)  # type: ignore[attr-defined]
