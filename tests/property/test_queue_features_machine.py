"""The queue machine's features against a naive model, with crashes (Hypothesis).

tests/property/test_queue_machine.py checks a plain queue (credit, acks, order, TTL, power cuts).
This machine declares the queue with random arguments (``x-max-priority``, ``x-max-length`` with
each ``x-overflow``, ``x-dead-letter-exchange`` with or without ``x-dead-letter-reasons``,
``x-message-ttl``, ``x-delay``, ``x-delivery-limit``, a resident budget) and drives it with
publishes (priority, per-message TTL, ``x-delay`` header, persistent or not), consumers, acks,
requeues, rejects, Basic.Get, SQS-style receives with a visibility timeout (change it, delete the
message, let it lapse), purges, time passing, fsyncs and power cuts. The model is a dict of
messages and their states. Checked:

- ready messages wait, and leave, by priority then publish order (a returned one goes back to
  its place); Basic.Get and ReceiveMessage take the head; a consumer is handed the head;
- a delayed message is not ready before its delay is over; an expired one is never handed out;
- a leased message comes back when its visibility timeout lapses (or is set to 0), and counts
  as a return for ``x-delivery-limit``;
- a message leaves other than by an ack / purge / delete only for a reason (rejected, expired,
  maxlen, delivery_limit), and is dead-lettered exactly once iff the queue has a dead-letter
  exchange that takes that reason; ``reject-publish`` refuses what ``drop-head`` makes room for;
- after a power cut the queue holds exactly the persistent messages published before the last
  sync and not settled before it, by priority and publish order, their TTLs restarted; one
  received before comes back with its receive state as last synced (leased until its old
  deadline, or ready with its count towards the delivery limit);
- the queue's ready, unacked and delayed counters agree with the model.
"""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from manifold.broker.clock import ManualClock
from manifold.broker.message import Message, Properties
from manifold.broker.queue import Queue
from tests.fakes import PowerCutLog
from tests.property.test_queue_machine import Recorder, queue_frames, seq_of

# Model states of a message.
DELAYED, READY, CONSUMER, GOT, LEASED, GONE, REFUSED, LOST = (
    "delayed", "ready", "consumer", "got", "leased", "gone", "refused", "lost")


@dataclass
class Msg:
    seq: int
    priority: int
    persistent: bool
    ttl: int | None          # the TTL that applies (the queue's or its own, the shorter)
    expires_at: int | None   # ms
    ready_at: int            # ms (later than the publish when delayed)
    state: str
    returns: int = 0         # as x-delivery-limit counts them (a restart keeps the marked count)
    deliveries: int = 0      # hand-outs (1 after a restart: it may have gone out before)
    msg_id: int = 0          # the queue's id for it, once handed out


class Host:
    """The queue's host: a manual clock and a dead-letter exchange that takes every copy."""

    def __init__(self, machine: "QueueFeaturesMachine") -> None:
        self.clock = ManualClock()
        self.machine = machine

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def schedule(self, queue, when_ms) -> None:
        pass  # the machine ticks the queue itself when time passes

    def dead_letter(self, queue, message, reason):
        self.machine.dead_lettered(queue, message, reason)
        return True

    def queue_unused(self, queue) -> None:
        pass


class QueueFeaturesMachine(RuleBasedStateMachine):
    # The first choice of each is the one Hypothesis draws most: the features on.
    @initialize(max_priority=st.sampled_from([3, 0]),
                max_length=st.sampled_from([2, None, 1]),
                overflow=st.sampled_from(["drop-head", "reject-publish", "reject-publish-dlx"]),
                dlx=st.sampled_from([True, False]),
                reasons=st.sampled_from([None, ["rejected"], ["expired", "maxlen"],
                                         ["delivery_limit"]]),
                queue_ttl=st.sampled_from([None, 300, 0]),
                queue_delay=st.sampled_from([0, 200]),
                delivery_limit=st.sampled_from([1, None, 0]),
                resident=st.sampled_from([None, 0]))
    def start(self, max_priority, max_length, overflow, dlx, reasons, queue_ttl, queue_delay,
              delivery_limit, resident):
        args: dict = {}
        if max_priority:
            args["x-max-priority"] = max_priority
        if max_length is not None:
            args["x-max-length"] = max_length
            args["x-overflow"] = overflow
        if dlx:
            args["x-dead-letter-exchange"] = "dlx"
            if reasons is not None:
                args["x-dead-letter-reasons"] = reasons
        if queue_ttl is not None:
            args["x-message-ttl"] = queue_ttl
        if queue_delay:
            args["x-delay"] = queue_delay
        if delivery_limit is not None:
            args["x-delivery-limit"] = delivery_limit
        self.args = args
        self.max_priority = max_priority
        self.max_length = max_length
        self.overflow = overflow if max_length is not None else "drop-head"
        self.dlx = dlx
        self.reasons = reasons
        self.queue_ttl = queue_ttl
        self.queue_delay = queue_delay
        self.delivery_limit = delivery_limit
        self.resident = resident
        self.host = Host(self)
        self.log = PowerCutLog()
        self.queue = self._new_queue()
        self.msgs: dict[int, Msg] = {}
        self.next_seq = 0
        self.consumers: list[Recorder] = []
        self.tags = 0
        self.gotten: dict[int, object] = {}    # seq -> Basic.Get delivery not settled yet
        self.leases: dict[int, object] = {}    # seq -> ReceiveMessage delivery not settled yet
        self.visible_at: dict[int, int] = {}   # seq -> when its lease lapses (ms)
        # receive state written to the log (MARK records, broker/queue_receives.py), in order,
        # and the latest of each message that the last sync covered
        self.marks_log: list[tuple[int, int, int]] = []   # (seq, count, invisible until)
        self.synced_marks: dict[int, tuple[int, int]] = {}
        self.dead: dict[int, str] = {}         # seq -> why it was dead-lettered
        self.expect_dl: dict[int, str] = {}    # seq -> the dead-letter its settle must cause
        self.published_log: list[int] = []     # persistent seqs appended, in order
        self.settled_log: list[int] = []       # persistent seqs settled, in order
        self.synced_published: set[int] = set()
        self.synced_settled: set[int] = set()
        self.ready_at_start: set[int] = set()  # ready when the current step began
        self.ticking = False                   # the current step is a Tick
        self.maxlen_drops: list[int] = []      # dropped for max-length in the current step

    def _new_queue(self) -> Queue:
        return Queue(self.host, "/", "q", durable=True, log=self.log, arguments=self.args,
                     resident_bytes=self.resident)

    # ------------------------------------------------------------ the model
    def now(self) -> int:
        return self.host.now_ms()

    def key(self, seq: int) -> tuple[int, int]:
        """Delivery order: the highest priority first, then publish order."""
        return (-self.msgs[seq].priority, seq)

    def in_state(self, state: str) -> list[int]:
        return sorted((s for s, m in self.msgs.items() if m.state == state), key=self.key)

    def expired(self, seq: int, strictly: bool = True) -> bool:
        """Past its TTL: never handed out once strictly past; may be dropped from the moment
        its TTL is reached (a zero TTL: unless a consumer takes it at once)."""
        expires = self.msgs[seq].expires_at
        return expires is not None and (expires < self.now() if strictly else
                                        expires <= self.now())

    def live_ready(self) -> list[int]:
        return [s for s in self.in_state(READY) if not self.expired(s)]

    def dead_letters(self, reason: str) -> bool:
        return self.dlx and (self.reasons is None or reason in self.reasons)

    def _gone(self, seq: int, reason: str | None = None) -> None:
        """``seq`` leaves the queue for good; ``reason`` (rejected, delivery_limit) is the
        dead-letter its settle must cause."""
        message = self.msgs[seq]
        message.state = GONE
        if message.persistent:
            self.settled_log.append(seq)
        if reason is not None and self.dead_letters(reason):
            self.expect_dl[seq] = reason

    def _mark(self, seq: int, invisible_until: int) -> None:
        """The queue writes ``seq``'s receive state (if it is on disk)."""
        message = self.msgs[seq]
        if message.persistent:
            self.marks_log.append((seq, message.deliveries, invisible_until))

    def _returning(self, seq: int, received: bool) -> None:
        """``seq`` is about to go back to the queue (requeue, consumer gone, visibility lapsed):
        past the delivery limit it is dropped instead. The count is marked first when a
        restart must keep it: a Basic.Get or a receive (``received``), or any return in a
        queue with a delivery limit."""
        message = self.msgs[seq]
        if received or self.delivery_limit is not None:
            self._mark(seq, 0)
        message.returns += 1
        if self.delivery_limit is not None and message.returns > self.delivery_limit:
            self._gone(seq, "delivery_limit")
        else:
            message.state = READY

    def _handed_out(self, seq: int, delivery, state: str) -> None:
        message = self.msgs[seq]
        assert message.state == READY, f"message {seq} handed out but {message.state}"
        assert not self.expired(seq), "an expired message was handed out"
        assert delivery.redelivered == (message.deliveries > 0), (seq, delivery.redelivered)
        message.state = state
        message.deliveries += 1
        message.msg_id = delivery.msg_id

    # ------------------------------------------------------------ callbacks from the queue
    def delivered(self, consumer: Recorder, delivery) -> None:
        seq = seq_of(delivery.message)
        assert consumer.queue is self.queue
        assert consumer.open, "a delivery reached a consumer without credit"
        assert not consumer.prefetch or consumer.in_flight <= consumer.prefetch
        assert consumer.window is None or len(consumer.unacked) < consumer.window
        assert queue_frames() == (1, 0), "the queue was re-entered while its effects ran"
        # It was the head when checked out: whatever was ready then and is still ready waits
        # behind it. Outside a Tick, every message the model holds ready was ready then (what
        # came back in this step came back before the pump); a Tick returns lapsed leases one
        # by one, pumping after each, so there only what was ready when it began counts.
        earlier = self.ready_at_start if self.ticking else set(self.in_state(READY))
        still = {seq_of(m) for m in self.queue.ready_messages()} & earlier
        assert all(self.key(seq) < self.key(other) for other in still), (seq, still)
        self._handed_out(seq, delivery, CONSUMER)
        consumer.unacked.append(delivery)
        if consumer.ack_in_deliver:  # re-enters the queue from inside its own effects
            self._settle(consumer, len(consumer.unacked) - 1, "ack")

    def dead_lettered(self, queue, message: Message, reason: str) -> None:
        assert queue is self.queue
        assert queue_frames() == (1, 0), "a dead-letter ran inside a command"
        assert self.dead_letters(reason), f"dead-lettered for {reason}: not configured"
        seq = seq_of(message)
        assert seq not in self.dead, f"message {seq} dead-lettered twice"
        self.dead[seq] = reason
        model = self.msgs[seq]
        if seq in self.expect_dl:
            assert self.expect_dl.pop(seq) == reason
        elif model.state == REFUSED:
            assert reason == "maxlen" and self.overflow == "reject-publish-dlx"
        elif reason == "expired":
            assert model.state == READY and self.expired(seq, strictly=False), seq
            self._gone(seq)
        elif reason == "maxlen":
            assert model.state == READY and self.overflow == "drop-head", seq
            self.maxlen_drops.append(seq)
            self._gone(seq)
        else:
            raise AssertionError(f"message {seq} dead-lettered for {reason} unexpectedly")

    def _settle(self, consumer: Recorder, index: int, how: str) -> None:
        delivery = consumer.unacked.pop(index)
        seq = seq_of(delivery.message)
        if how == "ack":
            self._gone(seq)
            assert delivery.ack()
        elif how == "requeue":
            self._returning(seq, received=False)  # before: it may go straight out again
            assert delivery.reject(requeue=True)
        else:
            self._gone(seq, "rejected")
            assert delivery.reject(requeue=False)

    # ------------------------------------------------------------ rules
    @rule(persistent=st.sampled_from([True, False]), size=st.sampled_from([1, 3, 200]),
          priority=st.sampled_from([None, 2, 0, 1, 5]),
          ttl=st.sampled_from([None, 100, None, 1000, 0]),
          delay=st.sampled_from([None, None, 100, 0]))
    def publish(self, persistent, size, priority, ttl, delay):
        seq = self.next_seq
        self.next_seq += 1
        now = self.now()
        own_delay = self.queue_delay if delay is None else delay  # the header overrides
        ttls = [t for t in (self.queue_ttl, ttl) if t is not None]
        applies = min(ttls) if ttls else None
        full = self.max_length is not None and len(self.in_state(READY)) >= self.max_length
        refused = full and self.overflow != "drop-head"
        # RabbitMQ: a zero-TTL message goes only to a consumer that can take it right now.
        dropped_at_once = (not refused and applies == 0 and not own_delay and
                           not any(c.has_credit() for c in self.consumers))
        self.msgs[seq] = Msg(
            seq, min(priority or 0, self.max_priority), persistent, applies,
            None if applies is None else now + own_delay + applies, now + own_delay,
            REFUSED if refused else DELAYED if own_delay else READY)
        props = Properties(delivery_mode=2 if persistent else 1, priority=priority,
                           expiration=None if ttl is None else str(ttl),
                           headers=None if delay is None else {"x-delay": delay})
        body = str(seq).rjust(size, "0").encode()
        assert self.queue.enqueue(Message("", "q", body, props)) is (not refused)
        if refused:
            assert (seq in self.dead) == (self.dead_letters("maxlen") and
                                          self.overflow == "reject-publish-dlx")
            return
        if persistent:
            self.published_log.append(seq)
        self._sync_ready()
        if dropped_at_once:
            assert self.msgs[seq].state == GONE, "a zero-TTL message waited for a consumer"
        if self.overflow == "drop-head" and self.max_length is not None and not own_delay and (
                applies != 0):
            assert self.queue.ready_count <= self.max_length

    @precondition(lambda self: len(self.consumers) < 3)
    @rule(prefetch=st.sampled_from([1, 0, 3]), ack_in_deliver=st.booleans(),
          window=st.sampled_from([None, None, 1]))
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
            self._returning(seq_of(delivery.message), received=False)
            assert self.queue.settle(delivery, False, True, pump=False)
        self.queue.pump()
        self._sync_ready()

    @precondition(lambda self: any(c.unacked for c in self.consumers))
    @rule(data=st.data(), how=st.sampled_from(["requeue", "ack", "reject"]))
    def settle(self, data, how):
        consumer = data.draw(st.sampled_from([c for c in self.consumers if c.unacked]))
        self._settle(consumer, data.draw(st.integers(0, len(consumer.unacked) - 1)), how)
        self._sync_ready()

    @precondition(lambda self: self.consumers)
    @rule(data=st.data())
    def toggle_credit(self, data):
        consumer = data.draw(st.sampled_from(self.consumers))
        consumer.open = not consumer.open
        if consumer.open:
            consumer.resume()

    @rule(no_ack=st.booleans())
    def get(self, no_ack):
        live = self.live_ready()  # strictly expired ones are dropped on the way
        delivery = self.queue.get(no_ack)
        if delivery is None:
            assert not live
            return
        seq = seq_of(delivery.message)
        assert live and seq == live[0], "Basic.Get takes the head"
        self._handed_out(seq, delivery, GOT)
        if no_ack:
            self._gone(seq)
        else:
            self.gotten[seq] = delivery
        self._sync_ready()

    @precondition(lambda self: self.gotten)
    @rule(data=st.data(), how=st.sampled_from(["requeue", "ack", "reject"]))
    def settle_get(self, data, how):
        seq = data.draw(st.sampled_from(sorted(self.gotten)))
        delivery = self.gotten.pop(seq)
        if how == "ack":
            self._gone(seq)
        elif how == "requeue":
            self._returning(seq, received=True)
        else:
            self._gone(seq, "rejected")
        assert self.queue.settle(delivery, how == "ack", how == "requeue")
        self._sync_ready()

    @rule(max_count=st.integers(1, 3), visibility_ms=st.sampled_from([100, 1000, 0]),
          kept=st.sampled_from([True, False]))
    def receive(self, max_count, visibility_ms, kept):
        """SQS ReceiveMessage: the first ``max_count`` live messages, leased (``kept``: a
        restart keeps the lease, else only the receive count)."""
        expected = self.live_ready()[:max_count]
        deliveries = self.queue.receive(max_count, visibility_ms, kept)
        assert [seq_of(d.message) for d in deliveries] == expected
        for delivery in deliveries:
            seq = seq_of(delivery.message)
            self._handed_out(seq, delivery, LEASED)
            self.leases[seq] = delivery
            self.visible_at[seq] = self.now() + visibility_ms
            self._mark(seq, self.now() + visibility_ms if kept else 0)
            assert self.queue.lease(delivery.msg_id) is delivery
        self._sync_ready()

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), timeout_ms=st.sampled_from([100, 0, 1000]))
    def change_visibility(self, data, timeout_ms):
        seq = data.draw(st.sampled_from(sorted(self.leases)))
        delivery = self.leases[seq]
        if timeout_ms == 0:  # back to the queue now
            del self.leases[seq]
            self._returning(seq, received=True)
        else:
            self._mark(seq, self.now() + timeout_ms)
        self.visible_at[seq] = self.now() + timeout_ms
        assert self.queue.change_deadline(delivery, timeout_ms)
        self._sync_ready()

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), by_id=st.booleans())
    def delete_leased(self, data, by_id):
        """SQS DeleteMessage: by its lease, or by message id (a lease lost to a restart)."""
        seq = data.draw(st.sampled_from(sorted(self.leases)))
        delivery = self.leases.pop(seq)
        self._gone(seq)
        if by_id:
            assert self.queue.withdraw(delivery.msg_id)
        else:
            assert self.queue.settle(delivery, True, False)
        assert self.queue.lease(delivery.msg_id) is None

    @rule(everything=st.booleans())
    def purge(self, everything):
        """AMQP Queue.Purge drops ready messages; SQS PurgeQueue delayed and leased ones too."""
        going = self.in_state(READY)
        if everything:
            going += self.in_state(DELAYED) + sorted(self.leases)
            self.leases.clear()
        count = self.queue.purge_all() if everything else self.queue.purge()
        assert count == len(going)
        for seq in going:
            self._gone(seq)

    @rule(ms=st.sampled_from([100, 50, 1, 250, 1000]))
    def time_passes(self, ms):
        """The clock moves on and the queue's timer fires (Tick): delays end, TTLs expire,
        visibility timeouts lapse."""
        self.host.clock.advance(ms)
        now = self.now()
        for seq in self.in_state(DELAYED):
            if self.msgs[seq].ready_at <= now:
                self.msgs[seq].state = READY
        due = sorted((self.visible_at[seq], seq) for seq in self.leases
                     if self.visible_at[seq] <= now)
        for _, seq in due:
            del self.leases[seq]
            self._returning(seq, received=True)
        self.ticking = True
        self.queue.tick()
        self.ticking = False
        self._sync_ready()
        # The tick dropped every expired message (one that came back in this tick may wait for
        # the next: the queue asked for a timer at its expiry, which is now).
        returned = {seq for _, seq in due}
        assert not [s for s in self.in_state(READY)
                    if s not in returned and self.expired(s, strictly=False)]

    @rule()
    def sync(self):
        self.log.sync()
        self.synced_published = set(self.published_log)
        self.synced_settled = set(self.settled_log)
        self.synced_marks = {seq: (count, until) for seq, count, until in self.marks_log}

    @rule()
    def power_cut(self):
        """The disk keeps what the last sync covered; a new queue recovers from it. Consumers
        and transient messages are gone; TTLs start again. A message with a receive state
        comes back as it was marked (broker/queue_receives.py): still leased until its old
        deadline, or ready with its count; one past the delivery limit leased until now (the
        first tick dead-letters it)."""
        self.log = self.log.power_cut()
        self.queue = self._new_queue()
        self.queue.recover()
        survivors = self.synced_published - self.synced_settled
        now = self.now()
        self.consumers.clear()
        self.gotten.clear()
        self.leases.clear()
        for seq, message in self.msgs.items():
            if seq not in survivors:
                if message.state != GONE:
                    message.state = LOST
                continue
            # A settle no sync covered is undone, a dead-letter copy made before it is not
            # (the copy may be made again: at most once holds only without crashes).
            self.dead.pop(seq, None)
            message.expires_at = None if message.ttl is None else now + message.ttl
            message.state, message.returns, message.deliveries = READY, 0, 1
            if seq not in self.synced_marks:
                continue
            count, until = self.synced_marks[seq]
            message.deliveries = max(count, 1)
            message.returns = count
            limit = self.delivery_limit
            if until > now or (limit is not None and count > limit):
                message.state, message.returns = LEASED, max(count - 1, 0)
                self.leases[seq] = self.queue.lease(message.msg_id)
                assert self.leases[seq] is not None, f"message {seq} not leased again"
                self.visible_at[seq] = max(until, now)
        assert [seq_of(m) for m in self.queue.ready_messages()] == self.in_state(READY)
        self.published_log = sorted(survivors)
        self.settled_log = []
        self.synced_published = set(survivors)
        self.synced_settled = set()
        self.synced_marks = {s: m for s, m in self.synced_marks.items() if s in survivors}
        self.marks_log = [(s, *m) for s, m in self.synced_marks.items()]

    # ------------------------------------------------------------ checks
    def _sync_ready(self) -> None:
        """Account for what left the ready messages without a word to anyone: expired (it
        may linger until the queue looks at it) or, in a drop-head queue, made room."""
        in_queue = {seq_of(m) for m in self.queue.ready_messages()}
        for seq in self.in_state(READY):
            if seq in in_queue:
                continue
            as_expired = self.expired(seq, strictly=False) and not self.dead_letters("expired")
            as_maxlen = (self.max_length is not None and self.overflow == "drop-head" and
                         not self.dead_letters("maxlen"))
            assert as_expired or as_maxlen, f"ready message {seq} vanished"
            if not as_expired:
                self.maxlen_drops.append(seq)
            self._gone(seq)

    @invariant()
    def agrees_with_the_model(self):
        if not hasattr(self, "queue"):
            return
        self._sync_ready()
        queue = self.queue
        ready = [seq_of(m) for m in queue.ready_messages()]
        assert ready == self.in_state(READY)
        assert queue.ready_count == len(ready)
        assert queue.delayed_count == len(self.in_state(DELAYED))
        held = sum(len(c.unacked) for c in self.consumers) + len(self.gotten) + len(self.leases)
        assert queue.unacked_count == held
        for consumer in self.consumers:
            assert consumer.in_flight == len(consumer.unacked)
        assert not self.expect_dl, f"dead-letters missing: {self.expect_dl}"
        # drop-head drops the head: what stayed ready through the step waits behind it
        stayed = set(ready) & self.ready_at_start
        for dropped in self.maxlen_drops:
            assert all(self.key(dropped) < self.key(s) for s in stayed), (dropped, stayed)
        self.maxlen_drops = []
        self.ready_at_start = set(ready)

    @invariant()
    def no_idle_consumer_with_credit(self):
        """Work conserving: a consumer with credit never waits while a live message is ready."""
        if not hasattr(self, "queue") or all(self.expired(s, False) for s in self.in_state(READY)):
            return
        assert not any(c.has_credit() for c in self.consumers)


# No explain phase: on Python 3.11 it traces every line, minutes for a failing case.
QueueFeaturesMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None,
    phases=[p for p in Phase if p is not Phase.explain],
    suppress_health_check=[HealthCheck.too_slow])
test_queue_features_machine = QueueFeaturesMachine.TestCase
