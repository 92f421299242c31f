"""Core operations behind SQS, usable by any adapter: receive with per-delivery deadlines,
deadline changes, withdraw by id, ready listeners, policies, message groups, dedup windows."""
import pytest

from manifold.broker.dedup import DedupWindow
from manifold.broker.errors import PreconditionFailed

from tests.fakes import MemoryLog

from .core_helpers import Recorder, make_vhost, send


def setup(policy=None, **kw):
    vhost, clock = make_vhost(**kw)
    vhost.declare_queue("q", durable=True)
    if policy:
        vhost.set_queue_policy("q", policy)
    return vhost, clock


def bodies(deliveries):
    return [d.message.body.decode() for d in deliveries]


def test_receive_leases_until_the_deadline():
    vhost, clock = setup()
    for i in range(3):
        send(vhost, "", "q", f"m{i}")
    first = vhost.receive("q", 2, 1000)
    assert bodies(first) == ["m0", "m1"]
    assert [d.receive_count for d in first] == [1, 1]
    assert vhost.lease("q", first[0].msg_id) is first[0]
    (last,) = vhost.receive("q", 10, 1000)
    last.ack()
    clock.advance(1000)
    again = vhost.receive("q", 10, 1000)
    assert bodies(again) == ["m0", "m1"]  # back in their old places
    assert [d.receive_count for d in again] == [2, 2]
    assert vhost.lease("q", first[0].msg_id) is again[0]


def test_change_deadline_extends_and_zero_returns_now():
    vhost, clock = setup()
    send(vhost, "", "q", "m")
    (delivery,) = vhost.receive("q", 1, 1000)
    assert vhost.change_deadline(delivery, 5000)
    clock.advance(1000)
    assert vhost.receive("q", 1, 1000) == []  # the old deadline no longer applies
    assert vhost.change_deadline(delivery, 0)
    (again,) = vhost.receive("q", 1, 1000)
    assert again.receive_count == 2
    again.ack()
    assert not vhost.change_deadline(again, 10)
    assert vhost.lease("q", again.msg_id) is None


def test_withdraw_removes_ready_or_leased_messages_by_id():
    vhost, _ = setup()
    for i in range(3):
        send(vhost, "", "q", f"m{i}")
    (leased,) = vhost.receive("q", 1, 1000)
    assert vhost.withdraw("q", leased.msg_id)
    ready_id = leased.msg_id + 1
    assert vhost.withdraw("q", ready_id)
    assert not vhost.withdraw("q", ready_id)
    assert bodies(vhost.receive("q", 10, 1000)) == ["m2"]


def test_ready_listener_is_called_once_per_message():
    vhost, _ = setup()
    woken = []
    vhost.wait_ready("q", lambda: woken.append("a"))
    vhost.wait_ready("q", lambda: woken.append("b"))
    send(vhost, "", "q", "m0")
    assert woken == ["a"]
    send(vhost, "", "q", "m1")
    assert woken == ["a", "b"]
    listener = lambda: woken.append("c")  # noqa: E731
    vhost.wait_ready("q", listener)
    vhost.stop_waiting("q", listener)
    send(vhost, "", "q", "m2")
    assert woken == ["a", "b"]


def test_policy_is_not_part_of_declare_equivalence():
    vhost, clock = setup({"x-message-ttl": 100})
    vhost.declare_queue("q", durable=True)  # a plain redeclare still works
    send(vhost, "", "q", "m")
    clock.advance(101)
    assert vhost.receive("q", 1, 1000) == []
    with pytest.raises(PreconditionFailed):
        vhost.set_queue_policy("q", {"x-message-ttl": -1})
    assert vhost.definitions()["queues"][0][3] == {"x-message-ttl": 100}


def test_delivery_limit_dead_letters_only_for_listed_reasons():
    vhost, clock = setup({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq",
                          "x-delivery-limit": 0, "x-message-ttl": 5000,
                          "x-dead-letter-reasons": ["delivery_limit"]})
    vhost.declare_queue("dlq", durable=True)
    send(vhost, "", "q", "poison")
    send(vhost, "", "q", "old", expiration="10")
    (delivery, old) = vhost.receive("q", 2, 1000)
    old.ack()
    clock.advance(1000)
    (dead,) = vhost.receive("dlq", 10, 1000)
    assert dead.message.body == b"poison"
    assert dead.message.headers["x-first-death-reason"] == "delivery_limit"
    send(vhost, "", "q", "expires", expiration="10")
    clock.advance(20)
    assert vhost.receive("q", 10, 1000) == [] and vhost.receive("dlq", 10, 1000) == []


def grouped():
    vhost, clock = setup({"x-message-groups": True})
    for group, body in [("a", "a1"), ("b", "b1"), ("a", "a2"), (None, "n1"), ("b", "b2")]:
        headers = {"x-message-group-id": group} if group else None
        send(vhost, "", "q", body, headers=headers)
    return vhost, clock


def test_groups_keep_order_and_lock_while_unacked():
    vhost, _ = grouped()
    (a1,) = vhost.receive("q", 1, 1000)
    assert bodies([a1]) == ["a1"]
    # One receive takes as much of one group as it can, then moves on to the next group.
    assert bodies(vhost.receive("q", 10, 1000)) == ["b1", "b2", "n1"]
    assert vhost.receive("q", 10, 1000) == []
    a1.ack()
    assert bodies(vhost.receive("q", 10, 1000)) == ["a2"]


def test_group_returns_to_its_head_and_consumers_respect_locks():
    vhost, clock = grouped()
    batch = vhost.receive("q", 2, 1000)
    assert bodies(batch) == ["a1", "a2"]  # one receive may take several of a group, in order
    clock.advance(1000)
    consumer = Recorder(prefetch=10)
    vhost.consume("q", consumer)
    assert consumer.bodies() == [b"a1", b"b1", b"n1"]  # one per group until acked
    consumer.deliveries[1].ack()
    assert consumer.bodies()[-1] == b"b2"


def test_group_setting_changes_only_while_empty():
    vhost, _ = grouped()
    with pytest.raises(PreconditionFailed):
        vhost.set_queue_policy("q", {})
    vhost.purge_queue("q")
    assert vhost.receive("q", 10, 1000) == []
    vhost.set_queue_policy("q", {})


def test_purge_and_overflow_ignore_group_locks():
    vhost, _ = grouped()
    vhost.receive("q", 1, 1000)
    assert vhost.purge_queue("q") == 4


def test_dedup_window_expires_and_recovers():
    _, clock = make_vhost()
    log = MemoryLog()
    window = DedupWindow(log, clock, 300_000)
    window.add("k1", ["id-1", "seq-1"])
    clock.advance(100_000)
    window.add("k2", ["id-2", "seq-2"])
    assert window.seen("k1") == ["id-1", "seq-1"]
    restored = DedupWindow(log, clock, 300_000)  # a restart reads the log back
    assert restored.seen("k2") == ["id-2", "seq-2"]
    clock.advance(200_000)
    assert restored.seen("k1") is None and restored.seen("k2") == ["id-2", "seq-2"]
    assert 1 in log.settled  # the expired key's record is settled, so its segment can go
    restored.add("k3", "v")
    assert max(log.records) == 3  # record ids are never reused
