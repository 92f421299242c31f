"""A queue's declare arguments and policy keys: what they may hold, checked once at declare.

RabbitMQ answers a bad ``x-`` argument with 406 PRECONDITION_FAILED naming the key; so do these
checks (adapters map PreconditionFailed to their protocol's error).
"""
from __future__ import annotations

from typing import Any

from .errors import PreconditionFailed

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum", "stream")
DEAD_LETTER_STRATEGIES = ("at-most-once", "at-least-once")
# RabbitMQ 4.x quorum queues dead-letter a message after 20 returns unless x-delivery-limit says
# otherwise (-1: no limit).
QUORUM_DELIVERY_LIMIT = 20
# At-least-once dead-lettering: how long a message that no dead-letter queue took waits in its
# source queue before it is offered again.
DEAD_LETTER_RETRY_MS = 5_000
#: header naming a message's group in queues with ``x-message-groups`` (SQS FIFO MessageGroupId)
GROUP_HEADER = "x-message-group-id"
DEAD_LETTER_REASONS = ("rejected", "expired", "maxlen", "delivery_limit")
#: arguments that must be integers (RabbitMQ's, plus Manifold's x-consumer-timeout and x-delay)
INTEGER_ARGUMENTS = ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                     "x-max-priority", "x-delivery-limit", "x-consumer-timeout", "x-delay")


def _int_argument(queue: str, vhost: str, args: dict, key: str, low: int = 0,
                  high: int | None = None) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise PreconditionFailed(f"invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': "
                                 f"{value!r} must be an integer {bound}")
    return value


def validate_arguments(name: str, vhost: str, args: dict) -> None:
    for key in INTEGER_ARGUMENTS:
        low = 1 if key == "x-expires" else -1 if key == "x-delivery-limit" else 0
        _int_argument(name, vhost, args, key, low=low,
                      high=255 if key == "x-max-priority" else None)
    strategy = args.get("x-dead-letter-strategy")
    if strategy is not None and strategy not in DEAD_LETTER_STRATEGIES:
        raise PreconditionFailed(f"invalid arg 'x-dead-letter-strategy' for queue '{name}' in "
                                 f"vhost '{vhost}': {strategy!r}; accepted: "
                                 f"{', '.join(DEAD_LETTER_STRATEGIES)}")
    overflow = args.get("x-overflow")
    if overflow is not None and overflow not in OVERFLOW_MODES:
        raise PreconditionFailed(f"invalid arg 'x-overflow' for queue '{name}' in vhost "
                                 f"'{vhost}': {overflow!r}; accepted: {', '.join(OVERFLOW_MODES)}")
    sac = args.get("x-single-active-consumer")
    if sac is not None and not isinstance(sac, bool):
        raise PreconditionFailed(f"invalid arg 'x-single-active-consumer' for queue '{name}' in "
                                 f"vhost '{vhost}': {sac!r}; accepted: true or false")
    reasons = args.get("x-dead-letter-reasons")
    if reasons is not None and (not isinstance(reasons, (list, tuple)) or
                                any(r not in DEAD_LETTER_REASONS for r in reasons)):
        raise PreconditionFailed(f"invalid arg 'x-dead-letter-reasons' for queue '{name}' in "
                                 f"vhost '{vhost}': {reasons!r}; accepted: a list of "
                                 f"{', '.join(DEAD_LETTER_REASONS)}")
    kind = args.get("x-queue-type")
    if kind is not None and kind not in QUEUE_TYPES:
        raise PreconditionFailed(f"invalid arg 'x-queue-type' for queue '{name}' in vhost "
                                 f"'{vhost}': {kind!r}; accepted: {', '.join(QUEUE_TYPES)}")


def parse_expiration(value: Any) -> int | None:
    """AMQP ``expiration`` is a decimal string of milliseconds; anything else is ignored."""
    if value is None:
        return None
    try:
        ttl = int(value)
    except (TypeError, ValueError):
        return None
    return ttl if ttl >= 0 else None

