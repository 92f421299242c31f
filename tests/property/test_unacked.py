"""broker/engine/unacked.py, the one bookkeeping of AMQP multiple acks and STOMP cumulative acks,
against a plain model: a sorted list of held tags."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from manifold.broker.engine.unacked import Ledger, Unacked, end_consumers

OPS = st.lists(st.tuples(st.sampled_from(["add", "take", "upto", "all", "forget", "restore"]),
                         st.integers(min_value=0, max_value=40)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_unacked_matches_a_sorted_model(ops):
    unacked = Unacked()
    model: dict[int, object] = {}
    next_tag = 1
    taken_back: list = []
    for op, n in ops:
        if op == "add":
            delivery = object()
            unacked.add(next_tag, delivery)  # type: ignore[arg-type]
            model[next_tag] = delivery
            next_tag += 1
        elif op == "take":
            assert unacked.take(n) is model.pop(n, None)
        elif op == "upto":
            expected = [(t, model.pop(t)) for t in sorted(model) if t <= n]
            got = unacked.take_upto(n)
            assert got == expected
            taken_back = got
        elif op == "all":
            expected = [(t, model[t]) for t in sorted(model)]
            model.clear()
            assert unacked.take_all() == expected
            taken_back = expected
        elif op == "forget" and model:
            tag = sorted(model)[n % len(model)]
            assert unacked.forget(model.pop(tag)) == tag  # type: ignore[arg-type]
        elif op == "restore":
            unacked.restore(taken_back)
            model.update(taken_back)
            taken_back = []
        assert list(unacked) == sorted(model)
        assert len(unacked) == len(model) and bool(unacked) == bool(model)
        assert unacked.deliveries() == [model[t] for t in sorted(model)]


def test_forget_of_a_delivery_not_held():
    unacked = Unacked()
    unacked.add(1, "d1")  # type: ignore[arg-type]
    assert unacked.forget("other") is None  # type: ignore[arg-type]
    assert list(unacked) == [1]


class Scope:
    """A consumer as the Ledger sees it: whether its acks are cumulative."""

    def __init__(self, cumulative: bool) -> None:
        self.cumulative = cumulative


LEDGER_OPS = st.lists(st.tuples(
    st.sampled_from(["add", "upto", "acked", "scope", "all", "forget"]),
    st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=2)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(ops=LEDGER_OPS)
def test_ledger_matches_a_model_of_tags_in_scopes(ops):
    """Ledger (STOMP: one connection's tags, each in its subscription's scope) against a dict
    tag -> (delivery, scope): a cumulative ack takes only its own scope's earlier tags."""
    ledger = Ledger()
    scopes = [Scope(False), Scope(True), Scope(False)]  # scope 1 acks cumulatively
    model: dict[int, tuple[object, int]] = {}
    next_tag = 1

    def pairs(tags):
        return [(t, model.pop(t)[0]) for t in sorted(tags)]

    for op, n, scope in ops:
        if op == "add":
            delivery = object()
            ledger.add(next_tag, delivery, scopes[scope])  # type: ignore[arg-type]
            model[next_tag] = (delivery, scope)
            next_tag += 1
        elif op == "upto":
            if n in model:
                own = model[n][1]
                expected = pairs([t for t, (_, s) in model.items() if s == own and t <= n])
            else:
                expected = []
            assert ledger.take_upto(n) == expected
        elif op == "acked":
            if n in model:
                own = model[n][1]
                cumulative = scopes[own].cumulative
                expected = pairs([t for t, (_, s) in model.items()
                                  if s == own and (t <= n if cumulative else t == n)])
            else:
                expected = []
            assert ledger.take_acked(n) == expected
        elif op == "scope":
            assert ledger.take_scope(scopes[scope]) == pairs([t for t, (_, s) in model.items()
                                                      if s == scope])
        elif op == "all":
            got = ledger.take_all()
            assert sorted(got, key=lambda p: p[0]) == pairs(list(model))
        elif op == "forget" and model:
            tag = sorted(model)[n % len(model)]
            delivery, own = model[tag]
            assert ledger.forget(delivery, scopes[(own + 1) % 3]) is None  # not in that scope
            assert ledger.forget(delivery, scopes[own]) == tag  # type: ignore[arg-type]
            del model[tag]
        assert len(ledger) == len(model)
        for t in range(next_tag):
            assert (t in ledger) == (t in model)
        for s in range(3):
            assert ledger.deliveries(scopes[s]) == [d for t, (d, o) in sorted(model.items())
                                                    if o == s]


def test_end_consumers_cancels_every_consumer_before_it_requeues():
    calls = []

    class Host:
        def cancel(self, consumer):
            calls.append(("cancel", consumer))

        def requeue(self, deliveries):
            calls.append(("requeue", list(deliveries)))

    end_consumers(Host(), ["c1", "c2"], ["d1", "d2"])
    assert calls == [("cancel", "c1"), ("cancel", "c2"), ("requeue", ["d1", "d2"])]
