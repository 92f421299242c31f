"""In-process benchmark of the SQS receive state kept across restarts (a benchmark, not a test).

    python benchmarks/receive_state.py [--messages N] [--received M] [--fsync always|never]

On one durable queue of a FileStore in a temporary directory, with the core's own calls (no HTTP):
- receive: ``vhost.receive(q, 10, 30 s)`` + ``ack`` of every message, the CPU time per message
  (event loop and writer thread; each receive writes a MARK record, each ack a SETTLE);
- recovery: N persistent messages of which M were received and are still in flight (their
  MARKs say so), stopped cleanly and recovered (``VirtualHost.restore``) with a resident budget
  of 0: seconds, and how many came back in flight.
Prints one JSON object. Run it against another build with that build's packages on PYTHONPATH
to compare.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

from manifold.broker.clock import LoopClock
from manifold.broker.message import Message, Properties
from manifold.broker.vhost import VirtualHost
from manifold.persistence.filestore import FileStore


def fill(vhost: VirtualHost, n: int) -> None:
    for _ in range(n):
        vhost.publish("", "q", Message("", "q", b"x" * 100, Properties(delivery_mode=2)))


async def bench_receive(n: int, fsync: str) -> float:
    with tempfile.TemporaryDirectory() as directory:
        store = FileStore(directory, fsync=fsync)
        await store.open()
        vhost = VirtualHost("/", clock=LoopClock(), store=store)
        vhost.declare_queue("q", durable=True)
        fill(vhost, n)
        await store._flush()
        started = time.process_time()
        done = 0
        while done < n:
            for delivery in vhost.receive("q", 10, 30_000):
                delivery.ack()
                done += 1
            if done % 1000 == 0:
                await asyncio.sleep(0)  # let the writer's batches go
        await store._flush()
        spent = time.process_time() - started
        await store.close()
        return spent / n * 1e6


async def bench_recovery(n: int, received: int, fsync: str) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        store = FileStore(directory, fsync=fsync)
        await store.open()
        vhost = VirtualHost("/", clock=LoopClock(), store=store, resident_bytes=0)
        vhost.declare_queue("q", durable=True)
        fill(vhost, n)
        await store._flush()
        taken = 0
        while taken < received:
            taken += len(vhost.receive("q", 10, 600_000))
        definitions = vhost.definitions()
        await store.close()
        store = FileStore(directory, fsync=fsync)
        await store.open()
        again = VirtualHost("/", clock=LoopClock(), store=store, resident_bytes=0)
        started = time.perf_counter()
        count = again.restore(definitions)
        seconds = time.perf_counter() - started
        queue = again.queues["q"]
        result = {"recovered": count, "seconds": round(seconds, 3),
                  "in_flight": queue.unacked_count, "cold": queue.cold_count}
        await store.close()
        return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--received", type=int, default=20_000)
    parser.add_argument("--fsync", default="always", choices=("always", "never"))
    args = parser.parse_args()
    receive_us = await bench_receive(min(args.messages, 20_000), args.fsync)
    print(json.dumps({
        "receive_ack_cpu_us_per_msg": round(receive_us, 1),
        "recovery_none_received": await bench_recovery(args.messages, 0, args.fsync),
        "recovery_received": await bench_recovery(args.messages, args.received, args.fsync),
    }))


if __name__ == "__main__":
    asyncio.run(main())
