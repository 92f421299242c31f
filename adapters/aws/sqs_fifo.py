"""FIFO queue rules for sends: group ids, deduplication, sequence numbers.

Ordering and group locking are the core's (``x-message-groups``: a group's messages leave in order
and the group is locked while one of them is unacked). What is SQS's alone lives here:
- a send needs a MessageGroupId, and a MessageDeduplicationId unless the queue has
  ContentBasedDeduplication (then the SHA-256 of the body is the id);
- a send whose id was accepted in the last 5 minutes is answered as the first one was and not
  enqueued again, even after the first copy was deleted; the window is the core's persisted
  :class:`~manifold.broker.dedup.DedupWindow`, so it also holds across a broker restart
  (DeduplicationScope ``messageGroup`` scopes ids to their group);
- every accepted message gets a SequenceNumber that only grows.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

from .sqs_common import SqsContext, invalid, missing

DEDUP_WINDOW_MS = 5 * 60 * 1000
_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # [SQS] alphanumerics and punctuation, 128 chars


def check_ids(ctx: SqsContext, queue: Any, entry: dict) -> tuple[str | None, str | None]:
    """(group id, dedup id) of a send, checked for the queue's type."""
    group = entry.get("MessageGroupId")
    dedup = entry.get("MessageDeduplicationId")
    attributes = ctx.sqs_attributes(queue)
    fifo = attributes.get("FifoQueue") == "true"
    for name, value in (("MessageGroupId", group), ("MessageDeduplicationId", dedup)):
        if value is not None and (not isinstance(value, str) or not _ID.match(value)):
            raise invalid(f"Value {value} for parameter {name} is invalid. Reason: {name} can "
                          "only include alphanumeric and punctuation characters. 1 to 128 in "
                          "length.")
    if not fifo:
        if dedup is not None:
            raise invalid("The request include parameter MessageDeduplicationId which is not "
                          "valid for this queue type")
        return group, None  # standard queues accept a group id (fair queues) and keep it
    if group is None:
        raise missing("MessageGroupId")
    if entry.get("DelaySeconds") not in (None, 0, "0"):
        raise invalid(f"Value {entry.get('DelaySeconds')} for parameter DelaySeconds is invalid. "
                      "Reason: The request include parameter that is not valid for this queue "
                      "type.")
    if dedup is None:
        if attributes.get("ContentBasedDeduplication") != "true":
            raise invalid("The queue should either have ContentBasedDeduplication enabled or "
                          "MessageDeduplicationId provided explicitly")
        dedup = hashlib.sha256(entry["MessageBody"].encode("utf-8")).hexdigest()
    return group, dedup


def dedup_key(ctx: SqsContext, queue: Any, group: str, dedup: str) -> str:
    if ctx.sqs_attributes(queue).get("DeduplicationScope") == "messageGroup":
        return f"{group}\x00{dedup}"
    return dedup


def window(ctx: SqsContext, name: str) -> Any:
    return ctx.vhost.dedup_window(name, DEDUP_WINDOW_MS)
