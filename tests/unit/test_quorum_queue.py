"""``x-queue-type: quorum``: RabbitMQ's quorum-queue delivery limit and at-least-once
dead-lettering on a single node (adapters/amqp/MAPPING.md says what differs)."""
from __future__ import annotations

import asyncio
import logging

import pytest

from manifold.broker.errors import PreconditionFailed
from manifold.broker.queue import DEAD_LETTER_RETRY_MS, QUORUM_DELIVERY_LIMIT
from tests.fakes import FakeStore, PendingLog
from tests.unit.core_helpers import Recorder, make_vhost, send

QUORUM = {"x-queue-type": "quorum"}
AT_LEAST_ONCE = {**QUORUM, "x-dead-letter-exchange": "dlx", "x-overflow": "reject-publish",
                 "x-dead-letter-strategy": "at-least-once"}


def _returns_until_dead(vhost, queue: str) -> int:
    """Requeue the one message until it is gone; how many deliveries it had."""
    c = Recorder()
    vhost.consume(queue, c)
    while len(c.deliveries) < 100 and not c.deliveries[-1].settled:
        c.deliveries[-1].reject(requeue=True)
    vhost.cancel(c)
    return len(c.deliveries)


def test_quorum_queue_dead_letters_after_20_returns_by_default():
    vhost, _ = make_vhost()
    vhost.declare_exchange("dlx", "fanout")
    vhost.declare_queue("dead", durable=True)
    vhost.bind_queue("dead", "dlx", "")
    vhost.declare_queue("q", durable=True, arguments={**QUORUM, "x-dead-letter-exchange": "dlx"})
    send(vhost, "", "q", "poison")
    assert _returns_until_dead(vhost, "q") == QUORUM_DELIVERY_LIMIT + 1 == 21
    dead = vhost.queues["dead"].ready_messages()
    assert [m.body for m in dead] == [b"poison"]
    assert dead[0].headers["x-death"][0]["reason"] == "delivery_limit"


def test_quorum_delivery_limit_argument_and_minus_one_for_none():
    vhost, _ = make_vhost()
    vhost.declare_queue("two", durable=True, arguments={**QUORUM, "x-delivery-limit": 2})
    send(vhost, "", "two", "m")
    assert _returns_until_dead(vhost, "two") == 3
    vhost.declare_queue("none", durable=True, arguments={**QUORUM, "x-delivery-limit": -1})
    send(vhost, "", "none", "m")
    assert _returns_until_dead(vhost, "none") == 100  # still there after 99 returns
    with pytest.raises(PreconditionFailed):
        vhost.declare_queue("bad", durable=True, arguments={**QUORUM, "x-delivery-limit": -2})


def test_classic_queue_has_no_default_delivery_limit():
    vhost, _ = make_vhost()
    vhost.declare_queue("classic")
    send(vhost, "", "classic", "m")
    assert _returns_until_dead(vhost, "classic") == 100


def test_at_least_once_holds_a_dead_letter_no_queue_takes_and_retries():
    vhost, clock = make_vhost()
    vhost.declare_exchange("dlx", "fanout")  # nothing bound yet: the dead letter has no route
    vhost.declare_queue("q", durable=True, arguments={**AT_LEAST_ONCE, "x-max-length": 2})
    send(vhost, "", "q", "keep-me")
    c = Recorder()
    vhost.consume("q", c)
    c.deliveries[0].reject(requeue=False)
    vhost.cancel(c)
    assert vhost.queues["q"].message_count == 0
    # held: it still takes room (x-max-length 2 with reject-publish)
    assert send(vhost, "", "q", "one").routed == 1
    assert send(vhost, "", "q", "two").rejected
    vhost.declare_queue("dead", durable=True)
    vhost.bind_queue("dead", "dlx", "")
    clock.advance(DEAD_LETTER_RETRY_MS - 1)
    assert vhost.queues["dead"].message_count == 0
    clock.advance(1)
    dead = vhost.queues["dead"].ready_messages()
    assert [m.body for m in dead] == [b"keep-me"]
    assert dead[0].headers["x-death"][0]["reason"] == "rejected"
    assert dead[0].headers["x-death"][0]["count"] == 1  # retries do not count as deaths
    assert send(vhost, "", "q", "room-again").routed == 1  # no longer held


def test_at_most_once_drops_a_dead_letter_with_no_route():
    vhost, clock = make_vhost()
    vhost.declare_exchange("dlx", "fanout")
    vhost.declare_queue("q", durable=True, arguments={**QUORUM, "x-dead-letter-exchange": "dlx",
                                                      "x-max-length": 1,
                                                      "x-overflow": "reject-publish"})
    send(vhost, "", "q", "lost")
    c = Recorder()
    vhost.consume("q", c)
    c.deliveries[0].reject(requeue=False)
    vhost.cancel(c)
    vhost.declare_queue("dead", durable=True)
    vhost.bind_queue("dead", "dlx", "")
    clock.advance(DEAD_LETTER_RETRY_MS * 2)
    assert vhost.queues["dead"].message_count == 0
    assert send(vhost, "", "q", "fits").routed == 1  # nothing held


def _rejected_on_disk():
    """A durable at-least-once quorum queue whose one persistent message was just rejected
    into a durable dead-letter queue; writes complete when the test says so."""
    vhost, clock = make_vhost(store=FakeStore(PendingLog))
    vhost.declare_exchange("dlx", "fanout")
    vhost.declare_queue("dead", durable=True)
    vhost.bind_queue("dead", "dlx", "")
    vhost.declare_queue("q", durable=True, arguments=AT_LEAST_ONCE)
    send(vhost, "", "q", "durable", delivery_mode=2)
    c = Recorder()
    vhost.consume("q", c)
    c.deliveries[0].reject(requeue=False)
    return vhost.store, clock


async def test_at_least_once_settles_the_source_only_after_the_target_write():
    store, _ = _rejected_on_disk()
    assert store.logs["q"].settled == []  # the dead-letter queue's write is still pending
    store.logs["dead"].pending[0].set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.logs["q"].settled == [1]


async def test_at_least_once_retries_after_a_failed_target_write():
    store, clock = _rejected_on_disk()
    store.logs["dead"].pending[0].set_exception(OSError("disk full"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.logs["q"].settled == []
    clock.advance(DEAD_LETTER_RETRY_MS)
    assert len(store.logs["dead"].pending) == 2  # offered again
    store.logs["dead"].pending[1].set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.logs["q"].settled == [1]


def test_at_least_once_without_reject_publish_falls_back_and_says_so(caplog):
    vhost, _ = make_vhost()
    with caplog.at_level(logging.INFO, logger="manifold.broker"):
        vhost.declare_queue("q", durable=True, arguments={
            **QUORUM, "x-dead-letter-exchange": "dlx", "x-dead-letter-strategy": "at-least-once"})
    assert not vhost.queues["q"].dead_letter_at_least_once
    messages = [r.getMessage() for r in caplog.records]
    assert any("single-node durable queue" in m and "at-most-once" in m for m in messages)
    assert any("needs x-overflow reject-publish" in m for m in messages)


def test_unknown_dead_letter_strategy_is_refused():
    vhost, _ = make_vhost()
    with pytest.raises(PreconditionFailed):
        vhost.declare_queue("q", durable=True,
                            arguments={**QUORUM, "x-dead-letter-strategy": "sometimes"})
