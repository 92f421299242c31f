"""Rates and short history, sampled every few seconds from the broker's counters.

The core keeps only cumulative counters (cheap increments on the hot path); this sampler turns them
into RabbitMQ's ``*_details: {"rate": ...}`` and into the dashboard's 10-minute history. One pass
over the queues per interval; per-queue rates are kept only as the last delta.
"""
from __future__ import annotations

import asyncio
import resource
import time
from collections import deque
from typing import Any, Iterator

SAMPLE_INTERVAL_S = 5.0
CHUNK_QUEUES = 5000
HISTORY_S = 600


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; falls back to the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Sampler:
    def __init__(self, broker: Any, interval_s: float = SAMPLE_INTERVAL_S):
        self.broker = broker
        self.interval_s = interval_s
        self.history: deque[dict] = deque(maxlen=int(HISTORY_S / interval_s) + 1)
        #: (vhost, queue name) -> (publish/s, deliver_get/s, ack/s) over the last interval
        self.queue_rates: dict[tuple[str, str], tuple[float, float, float]] = {}
        self._last_queue: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._last_totals: tuple[float, dict] | None = None
        #: vhost name -> sums over its queues at the last sample (the overview's figures)
        self.vhost_totals: dict[str, dict] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for _ in self._pass():  # in slices: other clients are served between them
                await asyncio.sleep(0)

    def sample(self) -> dict:
        """One pass at once (the first sample, and tests)."""
        for _ in self._pass():
            pass
        return self.history[-1]

    def _pass(self) -> Iterator[None]:
        """One pass over every queue: per-queue rates, per-vhost totals, a history point.
        Yields every few thousand queues so that the caller can let the loop breathe."""
        now = time.time()
        elapsed = None
        if self._last_totals is not None:
            elapsed = max(now - self._last_totals[0], 1e-3)
        new_last: dict[tuple[str, str], tuple[int, int, int]] = {}
        rates: dict[tuple[str, str], tuple[float, float, float]] = {}
        per_vhost: dict[str, dict] = {}
        for vhost in self.broker.vhosts.values():
            ready = unacked = published = delivered = acked = consumers = 0
            queues = list(vhost.queues.values())
            for n, queue in enumerate(queues, 1):
                if n % CHUNK_QUEUES == 0:
                    yield
                key = (vhost.name, queue.name)
                counts = (queue.published_total, queue.delivered_total, queue.acked_total)
                new_last[key] = counts
                before = self._last_queue.get(key)
                if before is not None and elapsed is not None and counts != before:
                    rates[key] = tuple((c - b) / elapsed for c, b in zip(counts, before))
                ready += queue.message_count
                unacked += getattr(queue, "unacked_count", 0)
                published += counts[0]
                delivered += counts[1]
                acked += counts[2]
                consumers += queue.consumer_count
            per_vhost[vhost.name] = {
                "queues": len(queues), "messages_ready": ready,
                "messages_unacknowledged": unacked, "messages": ready + unacked,
                "publish": published, "deliver_get": delivered, "ack": acked,
                "consumers": consumers}
        self._last_queue = new_last
        self.queue_rates = rates
        self.vhost_totals = per_vhost
        totals = self.totals()
        point = {"time": int(now * 1000), "messages": totals["messages"],
                 "messages_ready": totals["messages_ready"],
                 "messages_unacknowledged": totals["messages_unacknowledged"],
                 "memory": rss_bytes(), "message_memory": self.broker.memory.used_bytes,
                 "publish_rate": 0.0, "deliver_get_rate": 0.0, "ack_rate": 0.0}
        if self._last_totals is not None:
            previous = self._last_totals[1]
            for name in ("publish", "deliver_get", "ack"):
                # counters of deleted queues vanish from the sums: never show a negative rate
                point[f"{name}_rate"] = max(0.0, (totals[name] - previous[name]) / elapsed)
        self._last_totals = (now, totals)
        self.history.append(point)

    def totals(self, vhosts: Any = None) -> dict:
        """Sums of the last sample over the vhosts named (all when None)."""
        out = dict.fromkeys(("queues", "messages_ready", "messages_unacknowledged", "messages",
                             "publish", "deliver_get", "ack", "consumers"), 0)
        for name, values in self.vhost_totals.items():
            if vhosts is None or name in vhosts:
                for key in out:
                    out[key] += values[key]
        return out

    def latest(self) -> dict:
        return self.history[-1] if self.history else self.sample()

    def queue_rate(self, vhost: str, name: str) -> tuple[float, float, float]:
        return self.queue_rates.get((vhost, name), (0.0, 0.0, 0.0))
