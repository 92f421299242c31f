"""``/metrics``: Prometheus text format, made with prometheus-client.

Cheap for the event loop with many queues: one pass on the loop copies the numbers into tuples
(no locks, no per-queue metric objects kept between scrapes), then a worker thread turns the
snapshot into text with prometheus-client's exposition code. No state lives in a global registry:
each scrape builds its own.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from manifold.broker import introspect

from .context import Context
from .errors import json_error
from .stats import rss_bytes


class Snapshot:
    """Every number one scrape exports, copied on the event loop."""

    def __init__(self, broker: Any, connections: list):
        self.queues: list[tuple] = []
        self.streams: list[tuple] = []
        for vhost in broker.vhosts.values():
            name = vhost.name
            for queue in vhost.queues.values():
                unacked = getattr(queue, "unacked_count", 0)
                ready = queue.message_count
                self.queues.append((name, queue.name, ready + unacked, ready, unacked,
                                    queue.consumer_count, queue.published_total,
                                    queue.delivered_total, queue.acked_total))
                if getattr(queue, "kind", "") == "stream":
                    self.streams.append((name, queue.name, queue.size_bytes,
                                         queue.first_offset, queue.next_offset - 1))
        self.connections: dict[str, int] = {}
        for conn in connections:
            self.connections[conn.protocol] = self.connections.get(conn.protocol, 0) + 1
        memory = broker.memory
        self.memory = (memory.used_bytes, memory.high_water_bytes, memory.alarm, rss_bytes())
        self.disk = introspect.disk(broker)
        histogram = introspect.fsync_latency(broker)
        self.fsync = None
        if histogram is not None:
            self.fsync = (histogram.cumulative(), histogram.sum_s)


class SnapshotCollector:
    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def collect(self):
        s = self.snapshot
        labels = ["vhost", "queue"]
        gauges = [("manifold_queue_messages", "Ready plus unacknowledged messages", 2),
                  ("manifold_queue_messages_ready", "Messages ready for delivery", 3),
                  ("manifold_queue_messages_unacked", "Messages delivered, not yet acked", 4),
                  ("manifold_queue_consumers", "Consumers on the queue", 5)]
        for name, doc, index in gauges:
            family = GaugeMetricFamily(name, doc, labels=labels)
            for row in s.queues:
                family.add_metric((row[0], row[1]), row[index])
            yield family
        counters = [("manifold_queue_published", "Messages enqueued", 6),
                    ("manifold_queue_delivered", "Messages delivered or fetched", 7),
                    ("manifold_queue_acked", "Deliveries acknowledged", 8)]
        for name, doc, index in counters:
            family = CounterMetricFamily(name, doc, labels=labels)
            for row in s.queues:
                family.add_metric((row[0], row[1]), row[index])
            yield family
        connections = GaugeMetricFamily("manifold_connections", "Open client connections",
                                        labels=["protocol"])
        for protocol in ("amqp", "mqtt", "stomp"):
            s.connections.setdefault(protocol, 0)
        for protocol, count in sorted(s.connections.items()):
            connections.add_metric((protocol,), count)
        yield connections
        used, high, alarm, rss = s.memory
        yield GaugeMetricFamily("manifold_memory_message_bytes",
                                "Bytes of message bodies held in memory", value=used)
        yield GaugeMetricFamily("manifold_memory_high_watermark_bytes",
                                "Memory alarm threshold for message bodies (0: off)", value=high)
        yield GaugeMetricFamily("manifold_memory_alarm", "1 while the memory alarm is set",
                                value=int(alarm))
        yield GaugeMetricFamily("manifold_process_resident_memory_bytes",
                                "Resident memory of the broker process", value=rss)
        yield GaugeMetricFamily("manifold_disk_free_bytes",
                                "Free bytes on the data directory's file system",
                                value=s.disk["free_bytes"])
        yield GaugeMetricFamily("manifold_disk_free_limit_bytes",
                                "Disk alarm threshold (0: off)", value=s.disk["limit_bytes"])
        yield GaugeMetricFamily("manifold_disk_alarm", "1 while the disk alarm is set",
                                value=int(s.disk["alarm"]))
        if s.fsync is not None:
            buckets, total = s.fsync
            yield HistogramMetricFamily(
                "manifold_fsync_seconds", "Duration of each fsync of a segment file",
                buckets=[("+Inf" if b == float("inf") else repr(b), n) for b, n in buckets],
                sum_value=total)
        stream_labels = ["vhost", "stream"]
        for name, doc, index in (("manifold_stream_bytes", "Bytes held by the stream", 2),
                                 ("manifold_stream_first_offset", "First offset kept", 3),
                                 ("manifold_stream_last_offset", "Last offset written", 4)):
            family = GaugeMetricFamily(name, doc, labels=stream_labels)
            for row in s.streams:
                family.add_metric((row[0], row[1]), row[index])
            yield family


def render(snapshot: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


async def metrics(request: web.Request) -> web.Response:
    ctx = Context(request)
    if not ctx.principal.sees_everything:
        raise json_error(403, "not_authorised", "/metrics needs the monitoring or "
                                                "administrator tag")
    snapshot = Snapshot(ctx.broker, ctx.connections())
    body = await asyncio.get_running_loop().run_in_executor(None, render, snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
