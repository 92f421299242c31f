"""Read-only descriptions of the broker's objects, for operators (management API, /metrics).

Plain dicts with RabbitMQ's management field names, built from public attributes, so that an
adapter can show the broker without reaching into its internals. Nothing here changes state.
"""
from __future__ import annotations

import shutil
from typing import Any, Iterator

from .vhost import STANDARD_EXCHANGES, VirtualHost


def queue_info(vhost: str, queue: Any) -> dict:
    ready = queue.message_count
    unacked = getattr(queue, "unacked_count", 0)
    info = {
        "name": queue.name, "vhost": vhost, "type": getattr(queue, "kind", "classic"),
        "durable": bool(queue.durable), "auto_delete": bool(queue.auto_delete),
        "exclusive": queue.exclusive_owner is not None,
        "arguments": dict(queue.arguments), "policy": getattr(queue, "policy", None) or None,
        "messages": ready + unacked, "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_bytes_ready": getattr(queue, "ready_bytes", 0),
        "memory": getattr(queue, "resident_bytes", 0), "consumers": queue.consumer_count,
        "state": "running", "node": "manifold",
        "publish_total": queue.published_total, "deliver_get_total": queue.delivered_total,
        "ack_total": queue.acked_total,
    }
    if info["type"] == "stream":
        info["message_bytes"] = queue.size_bytes
        info["memory"] = queue.size_bytes
        info["first_offset"] = queue.first_offset
        info["last_offset"] = queue.next_offset - 1
        info["readers"] = queue.reader_count
    return info


def exchange_info(vhost: str, exchange: Any) -> dict:
    return {"name": exchange.name, "vhost": vhost, "type": exchange.kind,
            "durable": bool(exchange.durable), "auto_delete": bool(exchange.auto_delete),
            "internal": bool(exchange.internal), "arguments": dict(exchange.arguments),
            "user_who_performed_action": "rmq-internal" if exchange.name in _STANDARD else ""}


_STANDARD = {"", *(name for name, _ in STANDARD_EXCHANGES)}


def bindings(vhost: VirtualHost) -> Iterator[dict]:
    """Every binding, including the default exchange's implicit one per queue (as RabbitMQ)."""
    for queue in vhost.queues.values():
        yield _binding(vhost.name, "", "queue", queue.name, queue.name, {})
    for exchange in vhost.exchanges.values():
        if exchange.name == "":
            continue
        for b in exchange.bindings.values():
            kind = "exchange" if getattr(b.destination, "is_exchange", False) else "queue"
            yield _binding(vhost.name, exchange.name, kind, b.destination.name, b.routing_key,
                           b.arguments)


def _binding(vhost: str, source: str, kind: str, destination: str, routing_key: str,
             arguments: dict) -> dict:
    # RabbitMQ's properties_key: "~" for an empty routing key without arguments
    props_key = routing_key.replace("%", "%25").replace("/", "%2F") or "~"
    return {"source": source, "vhost": vhost, "destination": destination,
            "destination_type": kind, "routing_key": routing_key,
            "arguments": dict(arguments or {}), "properties_key": props_key}


def consumers(vhost: VirtualHost) -> Iterator[dict]:
    for queue in vhost.queues.values():
        for consumer in queue.consumers:
            owner = consumer.owner
            conn = getattr(owner, "conn", None) or getattr(getattr(owner, "session", None),
                                                           "conn", None)
            yield {"consumer_tag": consumer.tag, "queue": {"name": queue.name, "vhost": vhost.name},
                   "ack_required": not consumer.no_ack, "prefetch_count": consumer.prefetch,
                   "exclusive": bool(consumer.exclusive), "arguments": dict(consumer.arguments),
                   "active": True, "activity_status": "up",
                   "channel_details": {"connection_name": getattr(conn, "name", ""),
                                       "peer_host": getattr(conn, "peer", ("", 0))[0],
                                       "peer_port": getattr(conn, "peer", ("", 0))[1]}}


def fsync_latency(broker: Any) -> Any:
    """The store's fsync latency histogram (persistence/latency.py), or None for a memory store."""
    return broker.store.fsync_latency


def disk(broker: Any) -> dict:
    """Free space of the data directory against the disk alarm's limit."""
    server = broker.settings.server
    try:
        free = shutil.disk_usage(server.data_dir).free
    except OSError:
        free = -1
    return {"free_bytes": free, "limit_bytes": getattr(server, "disk_free_limit_bytes", 0),
            "alarm": bool(getattr(broker.memory, "disk_alarm", False))}
