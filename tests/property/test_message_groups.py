"""Message groups (SQS FIFO) against a naive model: random sends, receives, acks and returns.

The model keeps, per group, the sorted ids of its ready messages and the ids in flight. A receive
must return what the model computes: the next of the group it just took from, else the oldest
head among groups with nothing in flight; never a message of a group in flight elsewhere."""
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from manifold.broker.clock import ManualClock
from manifold.broker.message import Message, Properties
from manifold.broker.vhost import VirtualHost

GROUPS = st.sampled_from(["a", "b", "c", None])


class GroupedQueue(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.vhost = VirtualHost("/", clock=ManualClock())
        self.vhost.declare_queue("q", durable=True)
        self.vhost.set_queue_policy("q", {"x-message-groups": True})
        self.sent = 0
        self.ready: dict = {}        # group -> sorted list of body numbers
        self.in_flight: dict = {}    # body number -> (group, delivery)

    def _model_receive(self, count):
        taken, group = [], None
        preferred = False
        while len(taken) < count:
            if preferred and self.ready.get(group):
                number = self.ready[group].pop(0)
            else:
                locked = {g for g, _ in self.in_flight.values()} | {g for g, _ in taken}
                heads = [(ids[0], g) for g, ids in self.ready.items() if ids and g not in locked]
                if not heads:
                    break
                number, group = min(heads)
                self.ready[group].pop(0)
                preferred = True
            taken.append((group, number))
        return taken

    @rule(group=GROUPS)
    def send(self, group):
        headers = {"x-message-group-id": group} if group is not None else None
        self.vhost.publish("", "q", Message("", "q", str(self.sent).encode(),
                                            Properties(headers=headers, delivery_mode=2)))
        self.ready.setdefault(group, []).append(self.sent)
        self.sent += 1

    @rule(count=st.integers(1, 10))
    def receive(self, count):
        expected = self._model_receive(count)
        got = self.vhost.receive("q", count, 60_000)
        assert [int(d.message.body) for d in got] == [n for _, n in expected]
        for (group, number), delivery in zip(expected, got):
            self.in_flight[number] = (group, delivery)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data(), requeue=st.booleans())
    def settle(self, data, requeue):
        number = data.draw(st.sampled_from(sorted(self.in_flight)))
        group, delivery = self.in_flight.pop(number)
        if requeue:  # visibility 0: back to its place in the group
            assert self.vhost.change_deadline(delivery, 0)
            self.ready[group] = sorted(self.ready.get(group, []) + [number])
        else:
            assert delivery.ack()

    @invariant()
    def counts(self):
        queue = self.vhost.queues["q"]
        assert queue.ready_count == sum(len(ids) for ids in self.ready.values())
        assert queue.unacked_count == len(self.in_flight)


TestGroupedQueue = GroupedQueue.TestCase
TestGroupedQueue.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
