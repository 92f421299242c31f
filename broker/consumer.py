"""What an adapter hands the core to receive messages, and what the core hands back.

An adapter subclasses :class:`Consumer` and implements :meth:`Consumer.deliver`; the core calls it
only while :meth:`Consumer.has_credit` is true (AMQP prefetch, MQTT receive maximum, STOMP
prefetch-count, and the connection's output buffer), so deliveries never pile up in memory. When
credit comes back without an ack (a Basic.Qos raise, a drained socket), the adapter calls
:meth:`Consumer.resume`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .message import Message


class Consumer:
    def __init__(self, tag: str, *, no_ack: bool = False, prefetch: int = 0,
                 exclusive: bool = False, arguments: dict | None = None, owner: Any = None):
        self.tag = tag
        self.no_ack = no_ack
        self.prefetch = prefetch
        self.exclusive = exclusive
        self.arguments = arguments or {}
        self.owner = owner
        #: unsettled deliveries to this consumer; maintained by the core
        self.in_flight = 0
        #: the queue or stream this consumer reads; set by the core on consume
        self.queue: Any = None

    def has_credit(self) -> bool:
        return self.prefetch == 0 or self.in_flight < self.prefetch

    def deliver(self, delivery: "Delivery") -> None:
        raise NotImplementedError

    def cancelled(self, reason: str) -> None:
        """The server ended this consumer (its queue was deleted): AMQP Basic.Cancel, etc."""

    def delivery_timed_out(self, delivery: "Delivery") -> None:
        """A delivery stayed unsettled past the consumer timeout and went back to its queue."""

    def resume(self) -> None:
        """Call when credit returned other than by settling a delivery."""
        if self.queue is not None:
            self.queue.pump()


class Delivery:
    """One hand-out of a message to a consumer (or to a basic.get). Settle it exactly once with
    :meth:`ack` or :meth:`reject`; a late settle of a delivery that timed out returns False."""

    __slots__ = ("queue", "entry", "consumer", "redelivered", "settled", "offset", "deadline")

    def __init__(self, queue: Any, entry: Any, consumer: Consumer | None, redelivered: bool,
                 settled: bool = False, offset: int | None = None):
        self.queue = queue
        self.entry = entry
        self.consumer = consumer
        self.redelivered = redelivered
        self.settled = settled
        #: position in a stream (delivered as the ``x-stream-offset`` header), else None
        self.offset = offset
        #: when the queue takes it back unless settled (ms; 0: never)
        self.deadline = 0

    @property
    def message(self) -> "Message":
        return self.entry.message

    @property
    def delivery_count(self) -> int:
        """How many times this message was handed out before this delivery."""
        return self.entry.delivery_count - 1

    @property
    def msg_id(self) -> int:
        """The message's id in its queue: stable for its life there, across broker restarts."""
        return self.entry.msg_id

    @property
    def receive_count(self) -> int:
        """How many times the message was handed out, this delivery included."""
        return self.entry.delivery_count

    @property
    def on_disk(self) -> bool:
        """Whether the message is in its queue's log (its id and receive count outlive a
        restart)."""
        return self.entry.on_disk

    @property
    def first_delivered_ms(self) -> int:
        """When the message was first handed out by :meth:`Queue.receive` (0: unknown)."""
        return self.entry.first_delivered_ms

    def ack(self) -> bool:
        return self.queue.settle(self, True, False)

    def reject(self, requeue: bool) -> bool:
        return self.queue.settle(self, False, requeue)
