"""Work-queue semantics of the core, on a hand-driven clock (no event loop)."""
import pytest

from manifold.broker.errors import NotFound, PreconditionFailed, ResourceLocked

from .core_helpers import Recorder, make_vhost, send


def setup(arguments=None, **kw):
    vhost, clock = make_vhost(**kw)
    vhost.declare_queue("q", arguments=arguments)
    return vhost, clock


def publish_n(vhost, n, key="q", **props):
    for i in range(n):
        send(vhost, "", key, f"m{i}", **props)


def test_fifo_order():
    vhost, _ = setup()
    publish_n(vhost, 5)
    c = Recorder()
    vhost.consume("q", c)
    assert c.bodies() == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_competing_consumers_round_robin():
    vhost, _ = setup()
    a, b = Recorder("a"), Recorder("b")
    vhost.consume("q", a)
    vhost.consume("q", b)
    publish_n(vhost, 4)
    assert a.bodies() == [b"m0", b"m2"] and b.bodies() == [b"m1", b"m3"]


def test_prefetch_limits_unacked_and_ack_releases_credit():
    vhost, _ = setup()
    c = Recorder(prefetch=2)
    vhost.consume("q", c)
    publish_n(vhost, 5)
    assert c.bodies() == [b"m0", b"m1"]
    assert vhost.queues["q"].message_count == 3
    c.deliveries[0].ack()
    assert c.bodies() == [b"m0", b"m1", b"m2"]


def test_no_ack_consumer_settles_on_delivery():
    vhost, _ = setup()
    c = Recorder(no_ack=True, prefetch=1)
    vhost.consume("q", c)
    publish_n(vhost, 3)
    assert len(c.deliveries) == 3 and all(d.settled for d in c.deliveries)
    assert vhost.queues["q"].unacked_count == 0


def test_reject_with_requeue_sets_redelivered_and_keeps_position():
    vhost, _ = setup()
    publish_n(vhost, 3)
    c = Recorder(prefetch=1)
    vhost.consume("q", c)
    first = c.deliveries[0]
    assert not first.redelivered
    first.reject(requeue=True)
    again = c.deliveries[1]
    assert again.message.body == b"m0" and again.redelivered and again.delivery_count == 1


def test_reject_without_requeue_discards():
    vhost, _ = setup()
    publish_n(vhost, 1)
    c = Recorder()
    vhost.consume("q", c)
    c.deliveries[0].reject(requeue=False)
    assert vhost.queues["q"].message_count == 0 and len(c.deliveries) == 1


def test_settle_twice_is_refused():
    vhost, _ = setup()
    publish_n(vhost, 1)
    c = Recorder()
    vhost.consume("q", c)
    assert c.deliveries[0].ack() is True
    assert c.deliveries[0].ack() is False


def test_unacked_return_when_consumer_goes():
    vhost, _ = setup()
    publish_n(vhost, 3)
    a = Recorder("a")
    vhost.consume("q", a)
    vhost.cancel(a)
    vhost.requeue(a.deliveries)
    b = Recorder("b")
    vhost.consume("q", b)
    assert b.bodies() == [b"m0", b"m1", b"m2"]
    assert all(d.redelivered for d in b.deliveries)


def test_consumer_timeout_redelivers():
    vhost, clock = setup({"x-consumer-timeout": 1000})
    publish_n(vhost, 1)
    a = Recorder("a", prefetch=1)
    vhost.consume("q", a)
    clock.advance(999)
    assert not a.timed_out
    clock.advance(2)
    assert a.timed_out and a.deliveries[0].settled
    assert a.deliveries[0].ack() is False  # too late: the message went back
    assert len(a.deliveries) == 2 and a.deliveries[1].redelivered


def test_per_queue_ttl_expires_ready_messages():
    vhost, clock = setup({"x-message-ttl": 500})
    publish_n(vhost, 2)
    clock.advance(499)
    assert vhost.queues["q"].message_count == 2
    clock.advance(2)
    assert vhost.queues["q"].message_count == 0


def test_per_message_ttl_shorter_than_queue_ttl():
    vhost, clock = setup({"x-message-ttl": 10_000})
    send(vhost, "", "q", "short", expiration="100")
    send(vhost, "", "q", "long")
    clock.advance(150)
    c = Recorder()
    vhost.consume("q", c)
    assert c.bodies() == [b"long"]


def test_zero_ttl_delivers_only_to_a_waiting_consumer():
    vhost, _ = setup({"x-message-ttl": 0})
    send(vhost, "", "q", "lost")
    assert vhost.queues["q"].message_count == 0
    c = Recorder()
    vhost.consume("q", c)
    send(vhost, "", "q", "kept")
    assert c.bodies() == [b"kept"]


def test_max_length_drop_head():
    vhost, _ = setup({"x-max-length": 2})
    publish_n(vhost, 4)
    assert [m.body for m in vhost.queues["q"].ready_messages()] == [b"m2", b"m3"]


def test_max_length_reject_publish():
    vhost, _ = setup({"x-max-length": 2, "x-overflow": "reject-publish"})
    results = [send(vhost, "", "q", f"m{i}") for i in range(3)]
    assert [r.rejected for r in results] == [False, False, True]
    assert [m.body for m in vhost.queues["q"].ready_messages()] == [b"m0", b"m1"]


def test_max_length_bytes():
    vhost, _ = setup({"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        send(vhost, "", "q", body)
    assert [m.body for m in vhost.queues["q"].ready_messages()] == [b"bbbb", b"cccc"]


def dlx_setup(args):
    vhost, clock = make_vhost()
    vhost.declare_exchange("dlx", "fanout")
    vhost.declare_queue("dead")
    vhost.bind_queue("dead", "dlx", "")
    vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx", **args})
    return vhost, clock


def test_dead_letter_on_reject_with_x_death():
    vhost, _ = dlx_setup({})
    send(vhost, "", "q", "bad", expiration="60000")
    c = Recorder()
    vhost.consume("q", c)
    c.deliveries[0].reject(requeue=False)
    dead = vhost.queues["dead"].ready_messages()
    assert [m.body for m in dead] == [b"bad"]
    death = dead[0].headers["x-death"][0]
    assert death["queue"] == "q" and death["reason"] == "rejected" and death["count"] == 1
    assert death["exchange"] == "" and death["routing-keys"] == ["q"]
    assert death["original-expiration"] == "60000" and dead[0].properties.expiration is None
    assert dead[0].headers["x-first-death-reason"] == "rejected"


def test_dead_letter_on_expiry_with_routing_key_override():
    vhost, clock = make_vhost()
    vhost.declare_queue("dead")
    vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "",
                                        "x-dead-letter-routing-key": "dead",
                                        "x-message-ttl": 100})
    send(vhost, "", "q", "old")
    clock.advance(101)
    dead = vhost.queues["dead"].ready_messages()
    assert [m.body for m in dead] == [b"old"]
    assert dead[0].headers["x-death"][0]["reason"] == "expired"


def test_dead_letter_on_maxlen():
    vhost, _ = dlx_setup({"x-max-length": 1})
    publish_n(vhost, 2)
    dead = vhost.queues["dead"].ready_messages()
    assert [m.body for m in dead] == [b"m0"]
    assert dead[0].headers["x-death"][0]["reason"] == "maxlen"


def test_x_death_count_increments_on_repeat():
    vhost, _ = make_vhost()
    vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "",
                                        "x-dead-letter-routing-key": "q"})
    send(vhost, "", "q", "again")
    c = Recorder()
    vhost.consume("q", c)
    c.deliveries[0].reject(requeue=False)  # dead-letters back into q itself (rejected: allowed)
    c.deliveries[1].reject(requeue=False)
    deaths = c.deliveries[2].message.headers["x-death"]
    assert len(deaths) == 1 and deaths[0]["count"] == 2


def test_expiry_cycle_is_broken():
    vhost, clock = make_vhost()
    vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "",
                                        "x-dead-letter-routing-key": "q",
                                        "x-message-ttl": 10})
    send(vhost, "", "q", "loop")
    clock.advance(11)
    assert vhost.queues["q"].message_count == 0  # dropped, not looping forever


def test_delivery_limit_dead_letters():
    vhost, _ = dlx_setup({"x-delivery-limit": 1})
    publish_n(vhost, 1)
    c = Recorder()
    vhost.consume("q", c)
    c.deliveries[0].reject(requeue=True)
    c.deliveries[1].reject(requeue=True)
    assert len(c.deliveries) == 2
    dead = vhost.queues["dead"].ready_messages()
    assert dead[0].headers["x-death"][0]["reason"] == "delivery_limit"


def test_delayed_delivery_by_header_and_by_queue_argument():
    vhost, clock = setup()
    c = Recorder()
    vhost.consume("q", c)
    send(vhost, "", "q", "later", headers={"x-delay": 200})
    send(vhost, "", "q", "now")
    assert c.bodies() == [b"now"]
    clock.advance(201)
    assert c.bodies() == [b"now", b"later"]
    vhost.declare_queue("slow", arguments={"x-delay": 50})
    send(vhost, "", "slow", "x")
    assert vhost.queues["slow"].message_count == 0 and vhost.queues["slow"].delayed_count == 1
    clock.advance(51)
    assert vhost.queues["slow"].message_count == 1


def test_exclusive_queue_locked_to_owner_and_deleted_with_it():
    vhost, _ = make_vhost()
    owner, other = object(), object()
    vhost.declare_queue("ex", exclusive=True, owner=owner)
    with pytest.raises(ResourceLocked):
        vhost.consume("ex", Recorder(), owner=other)
    with pytest.raises(ResourceLocked):
        vhost.declare_queue("ex", passive=True, owner=other)
    vhost.consume("ex", Recorder(), owner=owner)
    vhost.close_owner(owner)
    assert "ex" not in vhost.queues


def test_auto_delete_queue_goes_with_last_consumer():
    vhost, _ = make_vhost()
    vhost.declare_queue("ad", auto_delete=True)
    a, b = Recorder("a"), Recorder("b")
    vhost.consume("ad", a)
    vhost.consume("ad", b)
    vhost.cancel(a)
    assert "ad" in vhost.queues
    vhost.cancel(b)
    assert "ad" not in vhost.queues


def test_queue_expires_when_unused():
    vhost, clock = setup({"x-expires": 1000})
    clock.advance(500)
    vhost.declare_queue("q", arguments={"x-expires": 1000})  # a redeclare counts as use
    clock.advance(600)
    assert "q" in vhost.queues
    clock.advance(500)
    assert "q" not in vhost.queues


def test_priorities():
    vhost, _ = setup({"x-max-priority": 5})
    for body, prio in (("low", 1), ("high", 5), ("none", None), ("mid", 3), ("over", 9)):
        send(vhost, "", "q", body, priority=prio)
    c = Recorder()
    vhost.consume("q", c)
    assert c.bodies() == [b"high", b"over", b"mid", b"low", b"none"]


def test_exclusive_consumer():
    vhost, _ = setup()
    vhost.consume("q", Recorder("a", exclusive=True))
    with pytest.raises(ResourceLocked):
        vhost.consume("q", Recorder("b"))


def test_get_and_purge_and_delete_conditions():
    vhost, _ = setup()
    publish_n(vhost, 3)
    delivery, remaining = vhost.get("q", no_ack=False)
    assert delivery.message.body == b"m0" and remaining == 2
    delivery.reject(requeue=True)
    again, _ = vhost.get("q", no_ack=True)
    assert again.message.body == b"m0" and again.redelivered
    with pytest.raises(PreconditionFailed, match="not empty"):
        vhost.delete_queue("q", if_empty=True)
    vhost.consume("q", Recorder(prefetch=1))
    with pytest.raises(PreconditionFailed, match="in use"):
        vhost.delete_queue("q", if_unused=True)
    assert vhost.purge_queue("q") == 1
    assert vhost.get("q", no_ack=True) == (None, 0)


def test_delete_cancels_consumers():
    vhost, _ = setup()
    c = Recorder()
    vhost.consume("q", c)
    vhost.delete_queue("q")
    assert c.cancel_reasons and "q" not in vhost.queues
    with pytest.raises(NotFound, match="no queue 'q' in vhost '/'"):
        vhost.consume("q", Recorder())


def test_declare_equivalence_and_argument_validation():
    vhost, _ = make_vhost()
    vhost.declare_queue("d", durable=True)
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'durable'"):
        vhost.declare_queue("d", durable=False)
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-max-length'"):
        vhost.declare_queue("d", durable=True, arguments={"x-max-length": 3})
    with pytest.raises(PreconditionFailed, match="x-message-ttl"):
        vhost.declare_queue("bad", arguments={"x-message-ttl": -1})
    with pytest.raises(PreconditionFailed, match="x-overflow"):
        vhost.declare_queue("bad", arguments={"x-overflow": "explode"})
    name, count, consumers = vhost.declare_queue("")
    assert name.startswith("amq.gen-") and (count, consumers) == (0, 0)


def test_settled_and_delivered_entries_do_not_pile_up_in_timer_heaps():
    vhost, _ = setup({"x-message-ttl": 3_600_000, "x-consumer-timeout": 3_600_000})
    c = Recorder(prefetch=1)
    vhost.consume("q", c)
    queue = vhost.queues["q"]
    send(vhost, "", "q", "first")  # handed straight over: never waits in the queue
    for i in range(1000):
        send(vhost, "", "q", f"m{i}")
        c.deliveries[-1].ack()
    assert len(queue._timeouts) < 200 and len(queue._expiries) < 200


def test_single_active_consumer_gets_everything_and_hands_over():
    vhost, clock = setup({"x-single-active-consumer": True})
    first, second = Recorder("first", prefetch=2), Recorder("second", prefetch=2)
    vhost.consume("q", first)
    vhost.consume("q", second)
    publish_n(vhost, 4)
    assert first.bodies() == [b"m0", b"m1"] and second.bodies() == []  # waits, in order
    first.deliveries[0].ack()
    assert first.bodies() == [b"m0", b"m1", b"m2"] and second.bodies() == []
    vhost.cancel(first)
    vhost.requeue(first.deliveries)  # its unacked m1, m2 go back ahead of m3
    clock.advance(0)
    assert second.bodies() == [b"m1", b"m2"]


def test_single_active_successor_starts_even_when_nothing_was_unacked():
    vhost, clock = setup({"x-single-active-consumer": True})
    first, second = Recorder("first", no_ack=True), Recorder("second")
    vhost.consume("q", first)
    vhost.consume("q", second)
    vhost.cancel(first)
    publish_n(vhost, 1)
    clock.advance(0)
    assert second.bodies() == [b"m0"]


def test_single_active_consumer_argument_must_be_boolean():
    vhost, _ = make_vhost()
    with pytest.raises(PreconditionFailed, match="x-single-active-consumer"):
        vhost.declare_queue("q", arguments={"x-single-active-consumer": "yes"})


def test_consumer_priorities_prefer_the_highest_with_credit():
    vhost, _ = setup()
    low = Recorder("low", prefetch=10)
    high_a = Recorder("high-a", prefetch=1, arguments={"x-priority": 5})
    high_b = Recorder("high-b", prefetch=1, arguments={"x-priority": 5})
    vhost.consume("q", low)
    vhost.consume("q", high_a)
    vhost.consume("q", high_b)
    publish_n(vhost, 4)
    # high-priority consumers take what they have credit for, round robin; the rest spills over
    assert high_a.bodies() == [b"m0"] and high_b.bodies() == [b"m1"]
    assert low.bodies() == [b"m2", b"m3"]
    high_a.deliveries[0].ack()
    send(vhost, "", "q", "m4")
    assert high_a.bodies() == [b"m0", b"m4"]


def test_settle_all_acks_and_requeues_runs_per_queue_in_order():
    """One acknowledgement naming deliveries of two queues (an AMQP multiple ack or nack):
    each queue settles its run at once; requeued messages come back in their old order,
    marked redelivered, and the credit the acks freed is used."""
    from manifold.broker.engine.unacked import settle_all
    vhost, _ = setup()
    vhost.declare_queue("r")
    publish_n(vhost, 4)
    publish_n(vhost, 2, key="r")
    c = Recorder(prefetch=3)
    vhost.consume("q", c)
    d = Recorder("d", prefetch=2)
    vhost.consume("r", d)
    q, r = vhost.queues["q"], vhost.queues["r"]
    assert c.bodies() == [b"m0", b"m1", b"m2"] and d.bodies() == [b"m0", b"m1"]
    settle_all(c.deliveries[:2] + d.deliveries, True, False)
    assert r.unacked_count == 0 and r.message_count == 0
    assert c.bodies() == [b"m0", b"m1", b"m2", b"m3"]  # two credits back, one message left
    settle_all(c.deliveries[2:], False, True)
    assert q.unacked_count == 2 and q.message_count == 0
    assert c.bodies()[4:] == [b"m2", b"m3"] and all(x.redelivered for x in c.deliveries[4:])
    settle_all(c.deliveries[2:4], True, False)  # settled already: nothing happens
    assert q.unacked_count == 2
