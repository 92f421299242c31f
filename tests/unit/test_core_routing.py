"""Exchanges and bindings: direct, fanout, topic, headers, default, exchange-to-exchange."""
import pytest

from manifold.broker.errors import AccessRefused, CommandInvalid, NotFound, PreconditionFailed
from manifold.broker.topic_trie import TopicTrie

from .core_helpers import make_vhost, send


def queues_with(vhost, *names):
    for name in names:
        vhost.declare_queue(name)


def ready(vhost, name):
    return [m.body for m in vhost.queues[name].ready_messages()]


def test_standard_exchanges_exist():
    vhost, _ = make_vhost()
    assert {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} <= set(vhost.exchanges)
    assert vhost.exchanges["amq.topic"].kind == "topic"


def test_default_exchange_routes_by_queue_name():
    vhost, _ = make_vhost()
    queues_with(vhost, "q1", "q2")
    assert send(vhost, "", "q2", "x").routed == 1
    assert send(vhost, "", "nope", "y").routed == 0
    assert ready(vhost, "q1") == [] and ready(vhost, "q2") == [b"x"]


def test_direct_exchange_and_unbind():
    vhost, _ = make_vhost()
    queues_with(vhost, "a", "b")
    vhost.bind_queue("a", "amq.direct", "k1")
    vhost.bind_queue("b", "amq.direct", "k1")
    vhost.bind_queue("b", "amq.direct", "k2")
    send(vhost, "amq.direct", "k1", "one")
    send(vhost, "amq.direct", "k2", "two")
    vhost.unbind_queue("b", "amq.direct", "k1")
    send(vhost, "amq.direct", "k1", "three")
    assert ready(vhost, "a") == [b"one", b"three"]
    assert ready(vhost, "b") == [b"one", b"two"]


def test_fanout_ignores_routing_key():
    vhost, _ = make_vhost()
    queues_with(vhost, "a", "b")
    vhost.bind_queue("a", "amq.fanout", "")
    vhost.bind_queue("b", "amq.fanout", "whatever")
    assert send(vhost, "amq.fanout", "any.key", "m").routed == 2


@pytest.mark.parametrize("pattern,key,hit", [
    ("a.*.c", "a.b.c", True), ("a.*.c", "a.b.b.c", False), ("a.#", "a", True),
    ("a.#", "a.b.c", True), ("#", "", True), ("#.c", "a.b.c", True), ("*", "a.b", False),
    ("a.#.c", "a.c", True), ("a.#.c", "a.x.y.c", True), ("a.#.c", "a.x.y", False),
])
def test_topic_exchange_patterns(pattern, key, hit):
    vhost, _ = make_vhost()
    queues_with(vhost, "q")
    vhost.bind_queue("q", "amq.topic", pattern)
    assert send(vhost, "amq.topic", key, "m").routed == int(hit)


def test_topic_trie_cache_invalidated_by_binding_change():
    trie = TopicTrie()
    trie.add("a.*", "q1")
    assert trie.match("a.b") == ("q1",)
    generation = trie.generation
    trie.add("#", "q2")
    assert trie.generation > generation
    assert set(trie.match("a.b")) == {"q1", "q2"}
    trie.remove("a.*", "q1")
    assert trie.match("a.b") == ("q2",)


def test_headers_exchange_all_and_any():
    vhost, _ = make_vhost()
    queues_with(vhost, "all", "any")
    vhost.bind_queue("all", "amq.headers", "", {"x-match": "all", "a": 1, "b": "two"})
    vhost.bind_queue("any", "amq.headers", "", {"x-match": "any", "a": 1, "b": "two"})
    send(vhost, "amq.headers", "", "both", headers={"a": 1, "b": "two"})
    send(vhost, "amq.headers", "", "one", headers={"a": 1})
    send(vhost, "amq.headers", "", "none", headers={"a": 2})
    assert ready(vhost, "all") == [b"both"]
    assert ready(vhost, "any") == [b"both", b"one"]


def test_headers_exchange_rejects_bad_x_match():
    vhost, _ = make_vhost()
    queues_with(vhost, "q")
    with pytest.raises(PreconditionFailed):
        vhost.bind_queue("q", "amq.headers", "", {"x-match": "some"})


def test_exchange_to_exchange_binding_and_cycle_safety():
    vhost, _ = make_vhost()
    vhost.declare_exchange("src", "topic")
    vhost.declare_exchange("dst", "fanout")
    queues_with(vhost, "q")
    vhost.bind_exchange("dst", "src", "a.#")
    vhost.bind_exchange("src", "dst", "")  # a cycle must not loop
    vhost.bind_queue("q", "dst", "")
    assert send(vhost, "src", "a.b", "m").routed == 1
    assert send(vhost, "src", "b", "n").routed == 0
    vhost.unbind_exchange("dst", "src", "a.#")
    assert send(vhost, "src", "a.b", "m").routed == 0


def test_alternate_exchange_gets_unroutable():
    vhost, _ = make_vhost()
    vhost.declare_exchange("alt", "fanout")
    vhost.declare_exchange("main", "direct", arguments={"alternate-exchange": "alt"})
    queues_with(vhost, "spill")
    vhost.bind_queue("spill", "alt", "")
    assert send(vhost, "main", "nowhere", "m").routed == 1
    assert ready(vhost, "spill") == [b"m"]


def test_exchange_errors():
    vhost, _ = make_vhost()
    with pytest.raises(NotFound, match="no exchange 'nope' in vhost '/'"):
        send(vhost, "nope", "k", "m")
    with pytest.raises(CommandInvalid):
        vhost.declare_exchange("x", "bogus")
    with pytest.raises(AccessRefused):
        vhost.declare_exchange("amq.custom", "direct")
    vhost.declare_exchange("x", "direct")
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'type'"):
        vhost.declare_exchange("x", "fanout")
    queues_with(vhost, "q")
    vhost.bind_queue("q", "x", "k")
    with pytest.raises(PreconditionFailed, match="in use"):
        vhost.delete_exchange("x", if_unused=True)
    vhost.delete_exchange("x")
    assert "x" not in vhost.exchanges
    with pytest.raises(NotFound):
        vhost.declare_exchange("x", "direct", passive=True)


def test_internal_exchange_refuses_publish():
    vhost, _ = make_vhost()
    vhost.declare_exchange("inner", "fanout", internal=True)
    with pytest.raises(AccessRefused, match="internal exchange"):
        send(vhost, "inner", "", "m")


def test_auto_delete_exchange_goes_with_last_binding():
    vhost, _ = make_vhost()
    vhost.declare_exchange("temp", "direct", auto_delete=True)
    queues_with(vhost, "q")
    vhost.bind_queue("q", "temp", "k")
    vhost.unbind_queue("q", "temp", "k")
    assert "temp" not in vhost.exchanges


def test_deleting_a_queue_removes_its_bindings():
    vhost, _ = make_vhost()
    queues_with(vhost, "q")
    vhost.bind_queue("q", "amq.topic", "#")
    vhost.delete_queue("q")
    assert send(vhost, "amq.topic", "a", "m").routed == 0
    assert not vhost.exchanges["amq.topic"].bindings
