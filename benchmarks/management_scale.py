"""The management API and /metrics with many queues: request time and the event loop's longest
stall while answering (what every client of the broker feels meanwhile).

Starts a broker in this process (its loop in a thread, as the tests do), declares ``--queues``
transient queues with one message each, then times ``GET /api/queues?columns=name,messages``
(one request, every queue), a paged request, ``GET /metrics`` and the sampler's pass. A probe on the
broker's loop records the longest gap between its 5 ms ticks. Prints one JSON object:

    .venv/bin/python benchmarks/management_scale.py --queues 100000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import RunningBroker, broker_settings  # noqa: E402

from manifold.broker.message import Message  # noqa: E402


class StallProbe:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.worst = 0.0
        self.last = 0.0

    def start(self) -> None:
        self.last = time.perf_counter()
        self.loop.call_soon_threadsafe(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last)
        self.last = now
        self.loop.call_later(0.005, self._tick)

    def reset(self) -> None:
        self.worst = 0.0


def timed(probe: StallProbe, fn) -> dict:
    time.sleep(0.5)  # let the previous request's tail (encoding, socket writes) finish
    probe.reset()
    started = time.perf_counter()
    size = fn()
    return {"seconds": round(time.perf_counter() - started, 3),
            "loop_stall_ms": round(probe.worst * 1000, 1), "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    broker = RunningBroker(broker_settings(tmp, management={"sample_interval_s": 3600})).start()
    try:
        def declare() -> None:
            vhost = broker.broker.vhosts["/"]
            for i in range(args.queues):
                vhost.declare_queue(f"q{i:06d}")
                vhost.publish("", f"q{i:06d}", Message("", f"q{i:06d}", b"x"))
        broker.call(declare, timeout=600)
        probe = StallProbe(broker.loop)
        probe.start()
        base = f"http://127.0.0.1:{broker.ports['management']}"
        s = requests.Session()
        s.auth = ("guest", "guest")
        from manifold.adapters.management.context import SAMPLER
        sampler = broker.service.http_runners["management"].app[SAMPLER]
        results = {
            "queues": args.queues,
            "list_all_columns_name_messages": timed(probe, lambda: len(s.get(
                base + "/api/queues?columns=name,messages", timeout=600).content)),
            "list_page_100_sorted_by_messages": timed(probe, lambda: len(s.get(
                base + "/api/queues?page=1&page_size=100&sort=messages", timeout=600).content)),
            "metrics": timed(probe, lambda: len(s.get(base + "/metrics", timeout=600).content)),
            "sampler_pass": timed(probe, lambda: broker.call(sampler.sample, timeout=600) and 0),
            "overview": timed(probe, lambda: len(s.get(base + "/api/overview",
                                                       timeout=600).content)),
        }
        print(json.dumps(results, indent=2))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
