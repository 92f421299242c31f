"""In-process micro benchmark of the routing core (a benchmark, not a test).

    python benchmarks/core_bench.py [--messages N] [--bindings N]

Measures, on one thread with no sockets:
- publish -> deliver -> ack through the default exchange to one consumer (messages/second);
- fan-out through amq.topic to 10 queues;
- topic matching with 10,000 bindings: cold (cache miss: trie walk) and warm (cached) lookups
  per second, against the naive scan over every binding that the trie replaces;
- publishes against bindings built to be slow (many ``#``), milliseconds per publish.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random
import time


from manifold.broker.clock import ManualClock  # noqa: E402
from manifold.broker.consumer import Consumer  # noqa: E402
from manifold.broker.message import Message, Properties  # noqa: E402
from manifold.broker.topic_trie import TopicTrie, topic_matches  # noqa: E402
from manifold.broker.vhost import VirtualHost  # noqa: E402


class AckAtOnce(Consumer):
    def __init__(self):
        super().__init__("bench", prefetch=100)
        self.count = 0

    def deliver(self, delivery):
        self.count += 1
        delivery.ack()


def bench_publish_deliver(n: int) -> float:
    vhost = VirtualHost("/", clock=ManualClock())
    vhost.declare_queue("q")
    consumer = AckAtOnce()
    vhost.consume("q", consumer)
    body = b"x" * 64
    props = Properties()
    start = time.perf_counter()
    for _ in range(n):
        vhost.publish("", "q", Message("", "q", body, props))
    elapsed = time.perf_counter() - start
    assert consumer.count == n
    return n / elapsed


def bench_fanout(n: int, queues: int = 10) -> float:
    vhost = VirtualHost("/", clock=ManualClock())
    consumers = []
    for i in range(queues):
        vhost.declare_queue(f"q{i}")
        vhost.bind_queue(f"q{i}", "amq.topic", "sensors.#")
        consumer = AckAtOnce()
        vhost.consume(f"q{i}", consumer)
        consumers.append(consumer)
    body = b"x" * 64
    start = time.perf_counter()
    for _ in range(n):
        vhost.publish("amq.topic", "sensors.room1.temp",
                      Message("amq.topic", "sensors.room1.temp", body))
    elapsed = time.perf_counter() - start
    assert all(c.count == n for c in consumers)
    return n / elapsed


def bench_topic_match(bindings: int, lookups: int) -> dict[str, float]:
    rng = random.Random(7)
    words = [f"w{i}" for i in range(40)]

    def pattern() -> str:
        parts = [rng.choice(words + ["*"]) for _ in range(rng.randint(2, 4))]
        if rng.random() < 0.2:
            parts[-1] = "#"
        return ".".join(parts)

    patterns = [pattern() for _ in range(bindings)]
    trie: TopicTrie = TopicTrie()
    for i, p in enumerate(patterns):
        trie.add(p, i)
    keys = [".".join(rng.choice(words) for _ in range(rng.randint(2, 4))) for _ in range(lookups)]
    start = time.perf_counter()
    for key in keys:
        trie._cache.clear()
        trie.match(key)
    cold = lookups / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(10):
        for key in keys[:100]:
            trie.match(key)
    warm = 1000 / (time.perf_counter() - start)
    naive_n = max(1, lookups // 100)
    start = time.perf_counter()
    for key in keys[:naive_n]:
        [i for i, p in enumerate(patterns) if topic_matches(p, key)]
    naive = naive_n / (time.perf_counter() - start)
    return {"trie_cold_lookups_per_s": round(cold), "trie_cached_lookups_per_s": round(warm),
            "naive_scan_lookups_per_s": round(naive, 1)}


def bench_adversarial_publish(n: int) -> dict[str, float]:
    """Publishes through amq.topic with bindings built to make a split-trying matcher
    exponential: 19 '#' then a word (collapses to '#.z') against 40-word keys, and
    '#.a.#.a...#.b' (64 '#', nothing to collapse) against 128-word, 255-byte keys. Every key
    is distinct, so each publish is a cache miss. Milliseconds per publish, mean and worst."""
    vhost = VirtualHost("/", clock=ManualClock())
    vhost.declare_queue("trap")
    vhost.bind_queue("trap", "amq.topic", ".".join(["#"] * 19 + ["z"]))
    vhost.bind_queue("trap", "amq.topic", ".".join(["#", "a"] * 63 + ["#", "b"]))
    cases = {"hash19_key40": lambda i: ".".join(["a"] * 39 + [f"y{i}"]),
             "hash64_key128_255b": lambda i: ".".join(["a"] * 127 + [f"{i % 10}"])}
    out: dict[str, float] = {}
    for name, make_key in cases.items():
        keys = [make_key(i) for i in range(n)]
        worst = 0.0
        start = time.perf_counter()
        for key in keys:
            t0 = time.perf_counter()
            vhost.publish("amq.topic", key, Message("amq.topic", key, b"x"))
            worst = max(worst, time.perf_counter() - t0)
            vhost.exchanges["amq.topic"].trie._cache.clear()
        mean = (time.perf_counter() - start) / n
        out[f"{name}_ms_mean"] = round(mean * 1000, 3)
        out[f"{name}_ms_worst"] = round(worst * 1000, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--bindings", type=int, default=10_000)
    args = parser.parse_args()
    result = {
        "publish_deliver_ack_msgs_per_s": round(bench_publish_deliver(args.messages)),
        "fanout_10_queues_publishes_per_s": round(bench_fanout(args.messages // 10)),
        f"topic_match_{args.bindings}_bindings": bench_topic_match(args.bindings, 5000),
        "adversarial_topic_publish": bench_adversarial_publish(200),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
