"""broker/engine/credit.py: a prefetch window shared by several consumers, and when they resume."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from manifold.broker.engine.credit import Window, resume


def test_no_limit_is_always_open_and_never_frees():
    window = Window()
    assert window.open(10**6)
    assert not window.freed(5, 4)


def test_a_window_opens_when_a_settle_takes_it_below_its_limit():
    window = Window(2)
    assert window.open(1) and not window.open(2)
    assert window.freed(2, 1)
    assert not window.freed(1, 0)  # was not full: nobody waited for it
    assert window.freed(5, 1)      # the limit was lowered below what was held


def test_set_limit_says_when_waiting_consumers_must_resume():
    window = Window(3)
    assert window.set_limit(5)        # grew
    assert not window.set_limit(2)    # shrank
    assert window.set_limit(0)        # no limit any more
    assert not window.set_limit(4)    # from none to some: narrower


def test_resume_tolerates_consumers_that_go_while_resuming():
    consumers: dict = {}

    class C:
        def __init__(self, name):
            self.name = name

        def resume(self):
            consumers.pop(self.name, None)  # a resume that ends a consumer

    consumers.update(a=C("a"), b=C("b"))
    resume(consumers.values())
    assert consumers == {}


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(0, 6), steps=st.lists(st.booleans(), max_size=60))
def test_a_consumer_blocked_by_the_window_is_always_resumed(limit, steps):
    """Model: deliveries while open, settles at random; whenever a delivery was refused for lack
    of room, the next settle that makes room must report it (else that consumer would stall)."""
    window = Window(limit)
    held = 0
    blocked = False
    for deliver in steps:
        if deliver:
            if window.open(held):
                held += 1
            else:
                blocked = True
        elif held:
            held -= 1
            freed = window.freed(held + 1, held)
            if blocked:
                assert freed
                blocked = False
        assert limit == 0 or held <= limit
