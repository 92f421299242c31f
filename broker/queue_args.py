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
    for key, valid, accepted in _CHOICE_ARGUMENTS:
        value = args.get(key)
        if value is not None and not valid(value):
            raise PreconditionFailed(f"invalid arg '{key}' for queue '{name}' in vhost "
                                     f"'{vhost}': {value!r}; accepted: {accepted}")


#: arguments with a fixed set of values: (key, check, what the error says is accepted)
_CHOICE_ARGUMENTS = (
    ("x-dead-letter-strategy", DEAD_LETTER_STRATEGIES.__contains__,
     ", ".join(DEAD_LETTER_STRATEGIES)),
    ("x-overflow", OVERFLOW_MODES.__contains__, ", ".join(OVERFLOW_MODES)),
    ("x-single-active-consumer", lambda v: isinstance(v, bool), "true or false"),
    ("x-dead-letter-reasons",
     lambda v: isinstance(v, (list, tuple)) and all(r in DEAD_LETTER_REASONS for r in v),
     "a list of " + ", ".join(DEAD_LETTER_REASONS)),
    ("x-queue-type", QUEUE_TYPES.__contains__, ", ".join(QUEUE_TYPES)),
)


def parse_expiration(value: Any) -> int | None:
    """AMQP ``expiration`` is a decimal string of milliseconds; anything else is ignored."""
    if value is None:
        return None
    try:
        ttl = int(value)
    except (TypeError, ValueError):
        return None
    return ttl if ttl >= 0 else None

