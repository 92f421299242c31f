"""What every SQS module shares: the service state, errors with their query-protocol codes, queue
URLs and ARNs, parameter checks.

Error codes: the JSON protocol answers with the modeled shape name in ``__type`` (botocore picks the
exception class from it) and the query protocol's code in ``x-amzn-query-error`` (what
``e.response["Error"]["Code"]`` shows); the query protocol answers with the latter in ``<Code>``.
Both are SQS's, checked against botocore's sqs/2012-11-05 service model.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from manifold.broker.errors import NotFound, PreconditionFailed

from .http import ACCOUNT_ID, REGION, AwsError, AwsRequest

VHOST = "/"
# [SQS CreateQueue] up to 80 characters: alphanumerics, hyphens, underscores; ".fifo" suffix.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
MAX_BATCH = 10
ALARM_WAIT_S = 10

# shape name -> query-protocol code (x-amzn-query-error / <Code>)
_QUERY_CODES = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "QueueNameExists": "QueueAlreadyExists",
    "QueueDeletedRecently": "AWS.SimpleQueueService.QueueDeletedRecently",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "BatchRequestTooLong": "AWS.SimpleQueueService.BatchRequestTooLong",
    "PurgeQueueInProgress": "AWS.SimpleQueueService.PurgeQueueInProgress",
    "UnsupportedOperation": "AWS.SimpleQueueService.UnsupportedOperation",
}


def sqs_error(code: str, message: str, status: int = 400) -> AwsError:
    return AwsError(code, message, status, query_code=_QUERY_CODES.get(code, code))


def invalid(message: str) -> AwsError:
    return sqs_error("InvalidParameterValue", message)


def missing(name: str) -> AwsError:
    return sqs_error("MissingParameter", f"The request must contain the parameter {name}.")


def no_queue() -> AwsError:
    return sqs_error("QueueDoesNotExist", "The specified queue does not exist.")


def now_ms() -> int:
    return int(time.time() * 1000)


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"


def name_from_arn(arn: Any) -> str | None:
    if not isinstance(arn, str):
        return None
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs":
        return None
    return parts[5]


def valid_queue_name(name: str) -> bool:
    base = name[:-5] if name.endswith(".fifo") else name
    return len(name) <= 80 and bool(_QUEUE_NAME.match(base))


def is_fifo_name(name: str) -> bool:
    return name.endswith(".fifo")


def int_param(params: dict, name: str, low: int, high: int, default: int | None = None,
              what: str | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and value != number):
            raise ValueError
    except (TypeError, ValueError):
        raise invalid(f"Value {value} for parameter {name} is invalid. Reason: must be an "
                      "integer.") from None
    if not low <= number <= high:
        raise invalid(f"Value {value} for parameter {name} is invalid. Reason: "
                      f"{what or f'Must be between {low} and {high}'}.")
    return number


def str_param(params: dict, name: str, required: bool = True) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise invalid(f"Value for parameter {name} is invalid. Reason: must be a string.")
    return value


def check_batch(entries: Any, operation: str) -> list[dict]:
    """The checks every *Batch operation makes before it looks at any entry."""
    if not entries:
        raise sqs_error("EmptyBatchRequest",
                        "There should be at least one " f"{operation}RequestEntry in the request.")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise invalid("Entries must be a list of entries.")
    if len(entries) > MAX_BATCH:
        raise sqs_error("TooManyEntriesInBatchRequest",
                        f"Maximum number of entries per request are {MAX_BATCH}. You have sent "
                        f"{len(entries)}.")
    seen: set = set()
    for entry in entries:
        entry_id = entry.get("Id")
        if not isinstance(entry_id, str) or not _BATCH_ID.match(entry_id):
            raise sqs_error("InvalidBatchEntryId",
                            "A batch entry id can only contain alphanumeric characters, hyphens "
                            "and underscores. It can be at most 80 letters long.")
        if entry_id in seen:
            raise sqs_error("BatchEntryIdsNotDistinct", f"Id {entry_id} repeated.")
        seen.add(entry_id)
    return entries


def batch_error(entry_id: str, exc: AwsError) -> dict:
    return {"Id": entry_id, "SenderFault": exc.sender, "Code": exc.query_code,
            "Message": exc.message}


class SqsContext:
    """Per-listener state of the SQS API: the vhost, this process's epoch (receipt handles name
    it), recently deleted names, purge times, sequence numbers, move tasks, open long polls."""

    def __init__(self, broker: Any, settings: Any, move_tasks: Any):
        self.broker = broker
        self.settings = settings
        self.vhost = broker.vhosts[VHOST]
        self.epoch = os.urandom(6).hex()
        self.deleted_at: dict[str, float] = {}
        self.purged_at: dict[str, float] = {}
        self._last_sequence = 0
        self.move_tasks = move_tasks               # sqs_redrive.MoveTasks
        self.long_polls: set = set()               # futures of waiting ReceiveMessage calls
        self.closing = False
        self._blocked_sends: set = set()           # futures of sends held by a resource alarm
        broker.memory.subscribe(self._alarm_changed)

    @staticmethod
    def remember(times: dict[str, float], name: str, window_s: float) -> None:
        """Note ``name`` at the current time in ``times`` (deleted or purged queues), forgetting
        entries older than ``window_s``, so the dict stays as small as the last minute's work."""
        now = now_ms() / 1000
        for old in [k for k, t in times.items() if now - t >= window_s]:
            del times[old]
        times[name] = now

    def _alarm_changed(self, blocking: bool) -> None:
        if not blocking:
            for waiter in self._blocked_sends:
                if not waiter.done():
                    waiter.set_result(None)

    async def publish_allowed(self) -> None:
        """Hold a send while the memory or disk alarm blocks publishers (as AMQP connections are
        no longer read); past ``ALARM_WAIT_S`` answer RequestThrottled, which the SDKs retry with
        backoff."""
        memory = self.broker.memory
        if not memory.blocking:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(ALARM_WAIT_S, lambda: waiter.done() or waiter.set_result(None))
        self._blocked_sends.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._blocked_sends.discard(waiter)
        if memory.blocking:
            raise sqs_error("RequestThrottled", "The broker is short of memory or disk space; "
                            "retry later.", 403)

    def next_sequence_number(self) -> str:
        """Increasing across the process and across restarts (it starts from the clock)."""
        self._last_sequence = max(self._last_sequence + 1, time.time_ns())
        return f"{self._last_sequence:020d}"

    # -- queues --------------------------------------------------------------------------------
    def queue(self, name: str) -> Any:
        """The work queue behind SQS queue ``name`` or QueueDoesNotExist (streams, exclusive
        queues of other connections and names SQS cannot spell are not SQS queues)."""
        queue = self.vhost.queues.get(name)
        if (queue is None or getattr(queue, "kind", "classic") == "stream" or queue.deleted
                or queue.exclusive_owner is not None or not hasattr(queue, "receive")):
            raise no_queue()
        return queue

    def queue_name(self, request: AwsRequest, params: dict) -> str:
        """From ``QueueUrl`` (its last path segment), else the request path (the query protocol
        lets old SDKs post to the queue URL itself)."""
        url = params.get("QueueUrl")
        if url is None:
            path = request.http.path.strip("/").split("/")
            if len(path) == 2 and path[1]:
                return path[1]
            raise missing("QueueUrl")
        if not isinstance(url, str) or not url:
            raise missing("QueueUrl")
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise sqs_error("InvalidAddress", f"The address {url} is not valid for this endpoint.")
        return name

    def queue_url(self, request: AwsRequest, name: str) -> str:
        host = self.settings.http.advertised_host
        if host:
            port = request.http.url.port
            base = f"http://{host}:{port}" if port and ":" not in host else f"http://{host}"
        else:
            base = f"{request.http.scheme}://{request.http.host}"
        return f"{base}/{ACCOUNT_ID}/{name}"

    def sqs_attributes(self, queue: Any) -> dict:
        return queue.policy.get("sqs-attributes", {})

    def is_fifo(self, queue: Any) -> bool:
        return self.sqs_attributes(queue).get("FifoQueue") == "true"


def core_error(exc: Exception) -> AwsError:
    """A core error met while serving SQS, in SQS's words."""
    if isinstance(exc, NotFound):
        return no_queue()
    if isinstance(exc, PreconditionFailed):
        return invalid(str(exc))
    return sqs_error("InternalFailure", str(exc), 500)
