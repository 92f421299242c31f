"""The queue machine against a naive model, with crashes (Hypothesis ``RuleBasedStateMachine``).

Random sequences of publishes (persistent or not, some with a TTL), consumers attaching and
leaving, credit going and coming, acks, requeues, rejects, Basic.Get, purges, time passing (TTL
expiry), fsyncs and power cuts, against a model
that is a dict per state. The queue's log is a ``PowerCutLog`` (tests/fakes.py): a power cut keeps
only what the last ``sync`` covered, and a new queue recovers from that. Checked:

- nothing confirmed is lost: after a power cut the queue holds exactly the persistent messages
  published before the last sync and not settled before it;
- nothing settled comes back: an acked or dropped message is never delivered or ready again
  (until a power cut undoes a settle no sync covered, as a real disk would);
- a message has at most one holder; each consumer gets fresh messages in publish order, and
  ready messages wait in publish order (a returned one goes back to its place);
- deliveries respect credit: none reaches a consumer without credit or past its prefetch;
- an expired message is never delivered; a ready message leaves only by a take, a purge or its
  expiry (an expired one may linger until the queue looks at it: the model accepts either);
- the queue's counters agree with the model.
"""
from __future__ import annotations

import sys

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from manifold.broker.clock import ManualClock
from manifold.broker.consumer import Consumer
from manifold.broker.message import Message, Properties
from manifold.broker.message_codec import decode_message
from manifold.broker.queue import Queue
from manifold.broker.queue_commands import Append, Credit, Enqueue, Remove, Settle
from tests.fakes import PowerCutLog


class Host:
    """The queue's host (see QueueHost): a manual clock, nothing else needed here."""

    def __init__(self) -> None:
        self.clock = ManualClock()

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def schedule(self, queue, when_ms) -> None:
        pass

    def dead_letter(self, queue, message, reason):
        return False

    def queue_unused(self, queue) -> None:
        pass


#: the queue's command handlers: none may be running while an effect runs
HANDLERS = {getattr(Queue, name).__code__ for name in (
    "_enqueue", "_settle", "_pump", "_attach", "_detach", "_tick", "_checkout", "_get",
    "_purge", "_receive")}


def queue_frames() -> tuple[int, int]:
    """How many ``Queue._run`` frames and handler frames are on the stack."""
    runs = handlers = 0
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is Queue._run.__code__:
            runs += 1
        elif frame.f_code in HANDLERS:
            handlers += 1
        frame = frame.f_back
    return runs, handlers


class Recorder(Consumer):
    """A consumer whose credit is its prefetch, its connection (``open``) and, with ``window``,
    a count only a delivery changes (as MQTT's Receive Maximum: the queue cannot see it)."""

    def __init__(self, machine: "QueueMachine", tag: str, prefetch: int, ack_in_deliver: bool,
                 window: int | None = None):
        super().__init__(tag, prefetch=prefetch)
        self.machine = machine
        self.open = True              # the connection can take more (its output buffer)
        self.window = window
        self.ack_in_deliver = ack_in_deliver
        self.unacked: list = []       # deliveries in the order they came
        self.fresh_seen: list[int] = []

    def has_credit(self) -> bool:
        if self.window is not None and len(self.unacked) >= self.window:
            return False
        return self.open and super().has_credit()

    def deliver(self, delivery) -> None:
        self.machine.delivered(self, delivery)


def seq_of(message: Message) -> int:
    return int(message.body)


class QueueMachine(RuleBasedStateMachine):
    @initialize(resident=st.sampled_from([None, 0, 300]))
    def start(self, resident):
        self.host = Host()
        self.log = PowerCutLog()
        self.resident = resident
        self.queue = self._new_queue(self.log)
        self.next_seq = 0
        self.persistent: set[int] = set()
        self.ready: set[int] = set()
        self.holder: dict[int, Recorder] = {}   # seq -> consumer holding it unacked
        self.gotten: dict[int, object] = {}     # seq -> Basic.Get delivery not yet settled
        self.settled: set[int] = set()
        # what a power cut must leave: persistent messages published / settled before the sync
        self.published_log: list[int] = []
        self.settled_log: list[int] = []
        self.synced_published: set[int] = set()
        self.synced_settled: set[int] = set()
        self.consumers: list[Recorder] = []
        self.tags = 0
        self.expires: dict[int, int] = {}  # seq -> when its TTL runs out (ms)

    def _new_queue(self, log) -> Queue:
        return Queue(self.host, "/", "q", durable=True, log=log, resident_bytes=self.resident)

    # ------------------------------------------------------------ model callbacks
    def delivered(self, consumer: Recorder, delivery) -> None:
        seq = seq_of(delivery.message)
        assert not self._expired(seq), "an expired message was delivered"
        assert consumer.queue is self.queue
        assert consumer.open, "a delivery reached a consumer without credit"
        assert not consumer.prefetch or consumer.in_flight <= consumer.prefetch
        assert consumer.window is None or len(consumer.unacked) < consumer.window
        assert queue_frames() == (1, 0), "the queue was re-entered while its effects ran"
        assert seq in self.ready, f"message {seq} delivered but not ready (settled or held)"
        assert seq not in self.settled and seq not in self.holder
        self.ready.discard(seq)
        # Taken from the head: every message still ready in the queue is younger. (Within a
        # run only acks happen, so nothing older can have come back since the checkout.)
        assert all(seq < seq_of(m) for m in self.queue.ready_messages())
        if not delivery.redelivered:
            assert not consumer.fresh_seen or consumer.fresh_seen[-1] < seq
            consumer.fresh_seen.append(seq)
        self.holder[seq] = consumer
        consumer.unacked.append(delivery)
        if consumer.ack_in_deliver:  # re-enters the queue from inside its own effects
            self._settle(consumer, len(consumer.unacked) - 1, "ack")

    def _settle(self, consumer: Recorder, index: int, how: str) -> None:
        delivery = consumer.unacked.pop(index)
        seq = seq_of(delivery.message)
        del self.holder[seq]
        if how == "requeue":
            self.ready.add(seq)  # before: it may go straight out again
        else:
            self._gone(seq)
        if how == "ack":
            assert delivery.ack()
        else:
            assert delivery.reject(requeue=how == "requeue")

    def _expired(self, seq: int, strictly: bool = True) -> bool:
        """Past its TTL. A message is not delivered once strictly past; it may be dropped from
        the moment its TTL is reached (a zero TTL: unless a consumer takes it at once)."""
        expires = self.expires.get(seq)
        now = self.host.now_ms()
        return expires is not None and (expires < now if strictly else expires <= now)

    def _gone(self, seq: int) -> None:
        self.settled.add(seq)
        if seq in self.persistent:
            self.settled_log.append(seq)

    # ------------------------------------------------------------ rules
    @rule(persistent=st.booleans(), size=st.sampled_from([1, 2, 200]),
          ttl=st.sampled_from([None, None, None, 0, 100, 1000]))
    def publish(self, persistent, size, ttl):
        seq = self.next_seq
        self.next_seq += 1
        body = str(seq).rjust(size, "0").encode()
        props = Properties(delivery_mode=2 if persistent else 1,
                           expiration=None if ttl is None else str(ttl))
        if ttl is not None:
            self.expires[seq] = self.host.now_ms() + ttl
        self.ready.add(seq)  # before: a consumer with credit gets it during enqueue
        if persistent:
            self.persistent.add(seq)
            self.published_log.append(seq)
        assert self.queue.enqueue(Message("", "q", body, props)) is True

    @precondition(lambda self: len(self.consumers) < 3)
    @rule(prefetch=st.sampled_from([0, 1, 3]), ack_in_deliver=st.booleans(),
          window=st.sampled_from([None, None, 1, 2]))
    def attach(self, prefetch, ack_in_deliver, window):
        self.tags += 1
        consumer = Recorder(self, f"c{self.tags}", prefetch, ack_in_deliver, window)
        self.consumers.append(consumer)
        self.queue.add_consumer(consumer)

    @precondition(lambda self: self.consumers)
    @rule(data=st.data())
    def detach(self, data):
        """The adapter cancels, then returns what the consumer held, oldest first."""
        consumer = data.draw(st.sampled_from(self.consumers))
        self.consumers.remove(consumer)
        self.queue.remove_consumer(consumer)
        while consumer.unacked:
            delivery = consumer.unacked.pop(0)
            seq = seq_of(delivery.message)
            del self.holder[seq]
            assert self.queue.settle(delivery, False, True, pump=False)
            self.ready.add(seq)
        self.queue.pump()

    @precondition(lambda self: any(c.unacked for c in self.consumers))
    @rule(data=st.data(), how=st.sampled_from(["ack", "ack", "requeue", "reject"]))
    def settle(self, data, how):
        consumer = data.draw(st.sampled_from([c for c in self.consumers if c.unacked]))
        index = data.draw(st.integers(0, len(consumer.unacked) - 1))
        self._settle(consumer, index, how)

    @precondition(lambda self: self.consumers)
    @rule(data=st.data())
    def toggle_credit(self, data):
        consumer = data.draw(st.sampled_from(self.consumers))
        consumer.open = not consumer.open
        if consumer.open:
            consumer.resume()

    @rule(no_ack=st.booleans())
    def get(self, no_ack):
        delivery = self.queue.get(no_ack)
        live = [s for s in self.ready if not self._expired(s)]  # expired ones go on the way
        if delivery is None:
            assert not live
            return
        seq = seq_of(delivery.message)
        assert seq == min(live), "Basic.Get takes the oldest ready message"
        assert seq not in self.settled
        self.ready.discard(seq)
        if no_ack:
            self._gone(seq)
        else:
            self.gotten[seq] = delivery

    @precondition(lambda self: self.gotten)
    @rule(data=st.data(), ack=st.booleans())
    def settle_get(self, data, ack):
        seq = data.draw(st.sampled_from(sorted(self.gotten)))
        delivery = self.gotten.pop(seq)
        if ack:
            self._gone(seq)
        else:
            self.ready.add(seq)
        assert self.queue.settle(delivery, ack, not ack)

    @rule()
    def purge(self):
        assert self.queue.purge() == len(self.ready)
        for seq in sorted(self.ready):
            self._gone(seq)
        self.ready.clear()

    @rule(ms=st.sampled_from([1, 100, 1000]))
    def time_passes(self, ms):
        """The clock moves on and the queue's timer fires (the Tick command): TTLs expire."""
        self.host.clock.advance(ms)
        self.queue.tick()

    @rule()
    def sync(self):
        self.log.sync()
        self.synced_published = set(self.published_log)
        self.synced_settled = set(self.settled_log)

    @rule()
    def power_cut(self):
        """The machine loses power: the disk keeps what the last sync covered; a new queue
        recovers from it. Consumers and transient messages are gone."""
        self.log = self.log.power_cut()
        self.queue = self._new_queue(self.log)
        self.queue.recover()
        survivors = self.synced_published - self.synced_settled
        assert {seq_of(m) for m in self.queue.ready_messages()} == survivors
        now = self.host.now_ms()
        for seq, data in self.log.recover():  # a restart starts the TTL again
            expiration = decode_message(data).properties.expiration
            if expiration is not None:
                self.expires[seq_of(decode_message(data))] = now + int(expiration)
        self.ready = set(survivors)
        self.persistent = set(survivors)
        self.settled -= survivors  # an unsynced settle is undone, as on a real disk
        self.holder.clear()
        self.gotten.clear()
        self.consumers.clear()
        self.published_log = sorted(survivors)
        self.settled_log = []
        self.synced_published = set(survivors)
        self.synced_settled = set()

    # ------------------------------------------------------------ invariants
    @invariant()
    def counts_agree(self):
        if not hasattr(self, "queue"):
            return
        queue = self.queue
        held = sum(len(c.unacked) for c in self.consumers) + len(self.gotten)
        assert queue.unacked_count == held
        for consumer in self.consumers:
            assert consumer.in_flight == len(consumer.unacked)

    @invariant()
    def ready_in_publish_order(self):
        if not hasattr(self, "queue"):
            return
        ready = [seq_of(m) for m in self.queue.ready_messages()]
        for seq in self.ready - set(ready):
            assert self._expired(seq, strictly=False), f"ready message {seq} vanished"
            self.ready.discard(seq)  # dropped on expiry (settled in the log)
            self._gone(seq)
        assert ready == sorted(self.ready)
        assert self.queue.ready_count == len(self.ready)

    @invariant()
    def no_idle_consumer_with_credit(self):
        """Work conserving: a consumer with credit never waits while a message is ready."""
        if not hasattr(self, "queue") or all(self._expired(s, False) for s in self.ready):
            return  # (an expired message the queue has not looked at yet need not go out)
        assert not any(c.has_credit() for c in self.consumers)


# No explain phase: on Python 3.11 it traces every line, minutes for a failing case.
QueueMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50,
                                          deadline=None,
                                          phases=[p for p in Phase if p is not Phase.explain],
                                          suppress_health_check=[HealthCheck.too_slow])
test_queue_machine = QueueMachine.TestCase


def test_apply_returns_effects_and_runs_nothing():
    """``apply`` only changes state: the delivery, the store write and its settle are effects
    the caller runs, and a consumer acking from inside ``deliver`` finds the command finished."""
    host, log = Host(), PowerCutLog()
    queue = Queue(host, "/", "q", durable=True, log=log)
    seen = []

    class Acker(Consumer):
        def deliver(self, delivery):
            seen.append(delivery)
            reply, effects = queue.apply(Settle(delivery))
            assert reply is True and [type(e) for e in effects] == [Remove]
            queue.run(effects)

    consumer = Acker("c", prefetch=1)
    queue.add_consumer(consumer)
    reply, effects = queue.apply(Enqueue(Message("", "q", b"1", Properties(delivery_mode=2))))
    assert [type(e).__name__ for e in effects] == ["Append", "Delivery"]
    assert reply is effects[0] and isinstance(reply, Append)
    assert log.records == {} and seen == []  # nothing ran yet
    queue.run(effects)
    assert seen and log.records == {} and log.settled == [1]
    assert queue.unacked_count == 0 and consumer.in_flight == 0
    reply, effects = queue.apply(Credit())
    assert reply is None and effects == []
