"""Hypothesis: the queue against a naive model, the topic trie against a naive matcher."""
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from manifold.broker.topic_trie import TopicTrie, topic_matches
from tests.unit.core_helpers import Recorder, make_vhost, send

WORDS = st.sampled_from(["a", "b", "c", ""])
PATTERN_WORDS = st.sampled_from(["a", "b", "c", "*", "#"])


@settings(max_examples=300, deadline=None)
@given(patterns=st.lists(st.lists(PATTERN_WORDS, min_size=1, max_size=4).map(".".join),
                         min_size=1, max_size=12),
       keys=st.lists(st.lists(WORDS, min_size=1, max_size=5).map(".".join), min_size=1,
                     max_size=10),
       removals=st.lists(st.integers(min_value=0, max_value=11), max_size=4))
def test_trie_matches_like_naive_matcher(patterns, keys, removals):
    trie: TopicTrie = TopicTrie()
    bound = list(enumerate(patterns))
    for i, pattern in bound:
        trie.add(pattern, i)
    for r in removals:
        if r < len(patterns) and (r, patterns[r]) in bound:
            trie.remove(patterns[r], r)
            bound.remove((r, patterns[r]))
    for key in keys:
        expected = {i for i, pattern in bound if topic_matches(pattern, key)}
        assert set(trie.match(key)) == expected, key
        assert set(trie.match(key)) == expected  # and again, from the cache


class QueueAgainstModel(RuleBasedStateMachine):
    """One queue, one consumer with a prefetch window. The model: ready ids kept sorted (a
    returned message goes back to its original place), a set of unacked ids."""

    def __init__(self):
        super().__init__()
        self.vhost, _ = make_vhost()
        self.vhost.declare_queue("q")
        self.next_id = 0
        self.model_ready: list[int] = []
        self.model_unacked: dict[int, bool] = {}  # id -> delivered before
        self.seen: dict[int, int] = {}  # id -> times delivered
        self.consumer = None
        self.handled = 0

    def _attach(self, prefetch):
        self.consumer = Recorder(prefetch=prefetch)
        self.handled = 0
        self.vhost.consume("q", self.consumer)
        self._sync_deliveries()

    def _sync_deliveries(self):
        """Check every new delivery against the model's next ready id."""
        for d in self.consumer.deliveries[self.handled:]:
            expected = self.model_ready.pop(0)
            got = int(d.message.body)
            assert got == expected, (got, expected)
            assert d.redelivered == (self.seen.get(got, 0) > 0)
            self.seen[got] = self.seen.get(got, 0) + 1
            self.model_unacked[got] = True
        self.handled = len(self.consumer.deliveries)

    def _open(self):
        return [d for d in self.consumer.deliveries if not d.settled] if self.consumer else []

    @rule(prefetch=st.integers(min_value=1, max_value=4))
    @precondition(lambda self: self.consumer is None)
    def consume(self, prefetch):
        self._attach(prefetch)

    @rule()
    def publish(self):
        self.model_ready.append(self.next_id)
        send(self.vhost, "", "q", str(self.next_id))
        self.next_id += 1
        if self.consumer:
            self._sync_deliveries()

    @rule(data=st.data(), how=st.sampled_from(["ack", "requeue", "discard"]))
    @precondition(lambda self: any(not d.settled for d in self._open()))
    def settle(self, data, how):
        delivery = data.draw(st.sampled_from(self._open()))
        mid = int(delivery.message.body)
        del self.model_unacked[mid]
        if how == "ack":
            delivery.ack()
        elif how == "requeue":
            self.model_ready.append(mid)
            self.model_ready.sort()
            delivery.reject(True)
        else:
            delivery.reject(False)
        self._sync_deliveries()

    @rule()
    @precondition(lambda self: self.consumer is not None)
    def consumer_goes(self):
        self.vhost.cancel(self.consumer)
        open_ = self._open()
        for d in open_:
            mid = int(d.message.body)
            del self.model_unacked[mid]
            self.model_ready.append(mid)
        self.model_ready.sort()
        self.vhost.requeue(open_)
        self.consumer = None

    @rule()
    @precondition(lambda self: self.consumer is None)
    def get_no_ack(self):
        delivery, remaining = self.vhost.get("q", no_ack=True)
        if not self.model_ready:
            assert delivery is None
            return
        expected = self.model_ready.pop(0)
        assert int(delivery.message.body) == expected
        assert remaining == len(self.model_ready)

    @invariant()
    def counts_agree(self):
        queue = self.vhost.queues["q"]
        assert queue.message_count == len(self.model_ready)
        assert queue.unacked_count == len(self.model_unacked)
        if self.consumer is not None:
            assert self.consumer.in_flight <= self.consumer.prefetch


TestQueueAgainstModel = QueueAgainstModel.TestCase
TestQueueAgainstModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
