"""What a queue is asked to do (commands) and what it asks its caller to do (effects).

The queue is a state machine in the style of RabbitMQ's ``rabbit_fifo``: ``Queue.apply(command)``
changes its state and returns ``(reply, effects)``; it does no I/O and calls no one. The caller
runs the effects afterwards (``Queue.run(effects)``), so a consumer that acks from inside its
``deliver``, a dead-letter that routes back into the same queue, or a timer that fires at once
finds the queue between two commands, never inside one.

Commands are plain data. Effects are:

- a :class:`~broker.consumer.Delivery`: hand it to ``delivery.consumer.deliver`` (deliveries
  are the hot path: they are their own effect, no wrapper object);
- :class:`Append` / :class:`Remove` / :class:`Mark`: store writes (a message onto a log, its
  settle tombstone, its receive state).
  They never call back into the queue, so the queue runs them before any store read in the same
  command (a read must see the writes before it) and first when the command is done;
- :class:`Timer`, :class:`DeadLetter`, :class:`TimedOut`, :class:`Wake`, :class:`Unused`: timers
  and callbacks into the host and the adapters.
"""
from __future__ import annotations

from typing import Any, Callable

from .message import Message


# ---------------------------------------------------------------- commands
class Command:
    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Enqueue(Command):
    """A message arrives. Reply: False (refused: overflow), True, or the :class:`Append` whose
    ``result`` (once run) resolves when the message is on disk."""
    __slots__ = ("message",)

    def __init__(self, message: Message):
        self.message = message


class Checkout(Command):
    """A consumer attaches (AMQP Basic.Consume, MQTT SUBSCRIBE, STOMP SUBSCRIBE)."""
    __slots__ = ("consumer",)

    def __init__(self, consumer: Any):
        self.consumer = consumer


class Cancel(Command):
    """A consumer detaches; what it holds stays out until settled or returned."""
    __slots__ = ("consumer",)

    def __init__(self, consumer: Any):
        self.consumer = consumer


class Credit(Command):
    """Consumers may have credit again other than by settling (a raised prefetch, a drained
    socket): hand out what they can take."""
    __slots__ = ()


class Settle(Command):
    """Ack a delivery. Reply: False if it was settled already (e.g. it timed out)."""
    __slots__ = ("delivery",)

    def __init__(self, delivery: Any):
        self.delivery = delivery


class Return(Command):
    """Put a delivery back at its old place (nack/reject with requeue). ``pump=False`` when
    several return together: the caller sends :class:`Credit` after the last, keeping order."""
    __slots__ = ("delivery", "pump")

    def __init__(self, delivery: Any, pump: bool = True):
        self.delivery = delivery
        self.pump = pump


class Discard(Command):
    """Drop a delivery (reject without requeue): dead-lettered if the queue says so."""
    __slots__ = ("delivery",)

    def __init__(self, delivery: Any):
        self.delivery = delivery


class Get(Command):
    """AMQP Basic.Get: one message without a consumer. Reply: a Delivery or None."""
    __slots__ = ("no_ack",)

    def __init__(self, no_ack: bool):
        self.no_ack = no_ack


class Receive(Command):
    """SQS ReceiveMessage: up to ``max_count`` leased deliveries, returning after
    ``visibility_ms`` unless settled; ``kept``: the leases outlive a restart (their receive
    counts always do). Reply: the list of deliveries."""
    __slots__ = ("max_count", "visibility_ms", "kept")

    def __init__(self, max_count: int, visibility_ms: int, kept: bool = True):
        self.max_count = max_count
        self.visibility_ms = visibility_ms
        self.kept = kept


class ChangeDeadline(Command):
    """Move an unsettled delivery's return deadline (0: return it now). Reply: bool."""
    __slots__ = ("delivery", "timeout_ms")

    def __init__(self, delivery: Any, timeout_ms: int):
        self.delivery = delivery
        self.timeout_ms = timeout_ms


class Withdraw(Command):
    """Remove message ``msg_id`` for good, leased or ready. Reply: bool."""
    __slots__ = ("msg_id",)

    def __init__(self, msg_id: int):
        self.msg_id = msg_id


class Tick(Command):
    """Time passed: delayed messages become ready, TTLs expire, consumer timeouts and held
    dead-letters fall due, an unused queue expires."""
    __slots__ = ()


class Purge(Command):
    """Drop every ready message; with ``everything`` delayed and leased ones too (SQS
    PurgeQueue). Reply: how many went."""
    __slots__ = ("everything",)

    def __init__(self, everything: bool = False):
        self.everything = everything


class Delete(Command):
    """The queue is deleted. Reply: the ready count it had."""
    __slots__ = ()


class PageOut(Command):
    """Memory is short: let go of every body that can be read back. Reply: bytes let go."""
    __slots__ = ()


# ---------------------------------------------------------------- effects
class Effect:
    __slots__ = ()

    def run(self, queue: Any) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__
                           if name not in ("data", "log"))
        return f"{type(self).__name__}({fields})"


class Append(Effect):
    """Write ``data`` under ``msg_id`` to ``log``. ``result`` is the log's answer once run (an
    awaitable that resolves when it is safe, or None); ``then`` (if set) is called with it."""
    __slots__ = ("log", "msg_id", "data", "flags", "result", "then")

    def __init__(self, log: Any, msg_id: int, data: bytes, flags: int = 0):
        self.log = log
        self.msg_id = msg_id
        self.data = data
        self.flags = flags
        self.result: Any = None
        self.then: Callable[[Any], None] | None = None

    def run(self, queue: Any) -> None:
        result = self.result = self.log.append(self.msg_id, self.data, self.flags)
        if result is not None and self.then is not None:
            result.add_done_callback(self.then)


class Remove(Effect):
    """Settle ``msg_id`` in ``log`` (its tombstone): it will not come back after a restart.
    Messages settled one after another in the same log join the last Remove (``ids``, in
    order), so a batch of acks makes one effect, not one each."""
    __slots__ = ("log", "ids")

    def __init__(self, log: Any, msg_id: int):
        self.log = log
        self.ids = [msg_id]

    def run(self, queue: Any) -> None:
        settle = self.log.settle
        for msg_id in self.ids:
            settle(msg_id)


class Mark(Effect):
    """Record message ``msg_id``'s receive state in ``log`` (a MARK record): how often it was
    received, until when it stays invisible (wall-clock ms, 0: visible) and when it was first
    received, so that a restart keeps them. Nothing waits for it."""
    __slots__ = ("log", "msg_id", "receive_count", "invisible_until_ms", "first_receive_ms")

    def __init__(self, log: Any, msg_id: int, receive_count: int, invisible_until_ms: int,
                 first_receive_ms: int):
        self.log = log
        self.msg_id = msg_id
        self.receive_count = receive_count
        self.invisible_until_ms = invisible_until_ms
        self.first_receive_ms = first_receive_ms

    def run(self, queue: Any) -> None:
        self.log.mark(self.msg_id, self.receive_count, self.invisible_until_ms,
                      self.first_receive_ms)


class Timer(Effect):
    """Send :class:`Tick` at ``when_ms`` (the host keeps one timer per queue: the earliest)."""
    __slots__ = ("when_ms",)

    def __init__(self, when_ms: int):
        self.when_ms = when_ms

    def run(self, queue: Any) -> None:
        queue.host.schedule(queue, self.when_ms)


class DeadLetter(Effect):
    """Republish ``message`` to the queue's dead-letter exchange. With an ``entry`` (the
    original, still held) the queue is told how it went, to settle or hold the original."""
    __slots__ = ("entry", "message", "reason")

    def __init__(self, entry: Any, message: Message, reason: str):
        self.entry = entry
        self.message = message
        self.reason = reason

    def run(self, queue: Any) -> None:
        copied = queue.host.dead_letter(queue, self.message, self.reason)
        if self.entry is not None:
            queue.dead_letter_done(self.entry, self.message, self.reason, copied)


class TimedOut(Effect):
    """Tell the consumer its delivery outlived the consumer timeout and went back."""
    __slots__ = ("delivery",)

    def __init__(self, delivery: Any):
        self.delivery = delivery

    def run(self, queue: Any) -> None:
        self.delivery.consumer.delivery_timed_out(self.delivery)


class Wake(Effect):
    """A message became ready (or the queue went): wake one long poll."""
    __slots__ = ("listener",)

    def __init__(self, listener: Callable[[], None]):
        self.listener = listener

    def run(self, queue: Any) -> None:
        self.listener()


class Unused(Effect):
    """The queue expired or lost its last consumer (auto-delete): the host deletes it."""
    __slots__ = ()

    def run(self, queue: Any) -> None:
        queue.host.queue_unused(queue)


#: store writes: run before any store read and before the other effects
STORE_WRITES = (Append, Remove, Mark)
