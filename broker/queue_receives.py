"""Consumer-less receives (SQS ReceiveMessage: leases with a deadline, deadline changes, withdraw
by id) and the receive state that outlives a restart: how often a message was received, until
when it stays invisible, when it was first received (SQS ``ApproximateReceiveCount``, visibility
timeout, ``ApproximateFirstReceiveTimestamp``; the delivery count behind ``x-delivery-limit``).

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
from .groups import NO_GROUP
from .queue_commands import Mark


class QueueReceives:
    # State of Queue this part uses (set in Queue.__init__; methods it calls live in Queue and
    # its other parts: touch, _next_live, _checkout, _set_deadline, _settle, _withdraw_ready,
    # _push_ready, _became_ready).
    host: Any
    log: Any
    grouped: Any
    delivery_limit: int | None
    unacked_count: int
    _leases: dict
    _writes: list

    def _receive(self, max_count: int, visibility_ms: int, kept: bool) -> list[Delivery]:
        self.touch()
        now = self.host.now_ms()
        taken: list[Delivery] = []
        group = NO_GROUP
        while len(taken) < max_count:
            entry = self._next_live(group)
            if entry is None:
                break
            delivery = self._checkout(entry, None)
            group = entry.group
            if not entry.first_delivered_ms:
                entry.first_delivered_ms = now
            self._leases[entry.msg_id] = delivery
            self._set_deadline(delivery, now + visibility_ms)
            self._mark(entry, now + visibility_ms if kept else 0)  # as on AWS
            taken.append(delivery)
        return taken

    def _change_deadline(self, delivery: Delivery, timeout_ms: int) -> bool:
        if delivery.settled:
            return False
        if timeout_ms <= 0:
            return self._settle(delivery, False, True)
        self._set_deadline(delivery, self.host.now_ms() + timeout_ms)
        if delivery.consumer is None:
            self._mark(delivery.entry, delivery.deadline)
        return True

    def _withdraw(self, msg_id: int) -> bool:
        delivery = self._leases.get(msg_id)
        if delivery is not None:
            return self._settle(delivery, True, False)
        return self._withdraw_ready(msg_id)

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
