"""broker/engine/unacked.py, the one bookkeeping of AMQP multiple acks and STOMP cumulative acks,
against a plain model: a sorted list of held tags."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from manifold.broker.engine.unacked import Unacked

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
