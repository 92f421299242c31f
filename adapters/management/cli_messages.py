"""``manifold messages export|import``: a queue's messages as JSON lines and back.

One line per message: ``payload`` (text, or base64 with ``payload_encoding: "base64"``),
``routing_key``, ``exchange``, ``properties`` (content_type, headers, ...). Import publishes the
lines in order to the queue through the default exchange, keeping properties and headers.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from .cli_client import CliError, Client, quote
from .cli_output import Output

BATCH = 500


def _line(message: dict) -> str:
    return json.dumps({"payload": message["payload"],
                       "payload_encoding": message["payload_encoding"],
                       "routing_key": message["routing_key"], "exchange": message["exchange"],
                       "properties": message.get("properties") or {},
                       "redelivered": message.get("redelivered", False)},
                      ensure_ascii=False) + "\n"


def export_messages(c: Client, out: Output, args: argparse.Namespace) -> int:
    """Without --remove the queue keeps its messages: one get of every ready message, requeued
    together (RabbitMQ's ack_requeue_true). With --remove, batches are taken off the queue and
    each batch is written and flushed before the next is fetched."""
    path = f"/api/queues/{quote(args.vhost)}/{quote(args.queue)}"
    total = c.get(path).get("messages_ready", 0)
    written = 0
    with open(args.file, "w", encoding="utf-8") as fh, \
            out.progress(f"export {args.queue}", total) as bar:
        if args.remove:
            while True:
                batch = c.request("POST", path + "/get", {"count": BATCH, "encoding": "auto",
                                                          "ackmode": "ack_requeue_false"})
                for message in batch:
                    fh.write(_line(message))
                fh.flush()
                written += len(batch)
                bar.advance(len(batch))
                if len(batch) < BATCH:
                    break
        else:
            batch = c.request("POST", path + "/get", {"count": total, "encoding": "auto",
                                                      "ackmode": "ack_requeue_true"})
            for message in batch:
                fh.write(_line(message))
                written += 1
                bar.advance()
    out.done(f"{written} messages from '{args.queue}' written to {args.file}"
             + (" (removed from the queue)" if args.remove else ""),
             {"queue": args.queue, "file": args.file, "messages": written})
    return 0


def _read_lines(path: str) -> list[dict[str, Any]]:
    messages = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise CliError(f"{path} line {number} is not JSON: {exc}")
                if not isinstance(item, dict) or "payload" not in item:
                    raise CliError(f"{path} line {number} has no 'payload' (expected the "
                                   "format of `manifold messages export`)")
                messages.append(item)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}")
    return messages


def import_messages(c: Client, out: Output, args: argparse.Namespace) -> int:
    messages = _read_lines(args.file)
    c.get(f"/api/queues/{quote(args.vhost)}/{quote(args.queue)}")  # 404 early, before publishing
    publish = f"/api/exchanges/{quote(args.vhost)}/amq.default/publish"
    unrouted = 0
    with out.progress(f"import into {args.queue}", len(messages)) as bar:
        for item in messages:  # one at a time: the order in the file is the order in the queue
            result = c.request("POST", publish, {
                "routing_key": args.queue, "payload": item["payload"],
                "payload_encoding": item.get("payload_encoding", "string"),
                "properties": item.get("properties") or {}})
            if not result.get("routed"):
                unrouted += 1
            bar.advance()
    if unrouted:
        raise CliError(f"{unrouted} of {len(messages)} messages were not routed to "
                       f"'{args.queue}' (was it deleted meanwhile?)")
    out.done(f"{len(messages)} messages from {args.file} published to '{args.queue}'",
             {"queue": args.queue, "file": args.file, "messages": len(messages)})
    return 0
