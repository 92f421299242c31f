"""Dead-letter queues: which queues send to a DLQ, and message move tasks (DLQ redrive).

Dead-lettering itself is the core's: a queue with a RedrivePolicy has ``x-delivery-limit``
``maxReceiveCount - 1`` and the DLQ as its dead-letter target, so a message received
``maxReceiveCount`` times whose visibility runs out again moves there, with an ``x-death`` record
naming its source queue.

A move task is one asyncio task per StartMessageMoveTask (never one per message): it receives
batches from the DLQ, publishes each message persistently to its destination (the given
DestinationArn, else the queue it died in, from ``x-first-death-queue``), waits for the fsync, and
only then deletes it from the DLQ. Messages with no known source stay in the DLQ and count as
failed.

Tasks are kept in the store (state log ``sqs-move-tasks``, a DurableMap: handle -> task): a task
that was running when the broker stopped or crashed runs again after the restart with its counts,
as AWS's tasks outlive a host. Its record is written after each batch, so after a crash the counts
lag the queues by at most one batch, and messages of a batch that were copied but not yet deleted
from the DLQ are moved again (at least once, as AWS says). A cancel or a shutdown lets the batch
under way finish first, so neither duplicates anything.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Callable

from manifold.broker.durable_map import DurableMap
from manifold.broker.message import Message

from .attributes import header
from .http import AwsRequest
from .sqs_common import (SqsContext, int_param, invalid, name_from_arn, now_ms, queue_arn,
                         sqs_error, str_param)
from .sqs_queues import page, sqs_queue_names

log = logging.getLogger("manifold.aws.sqs")

_DEATH_HEADERS = ("x-death", "x-first-death-queue", "x-first-death-reason",
                  "x-first-death-exchange", "x-last-death-queue", "x-last-death-reason",
                  "x-last-death-exchange")
BATCH = 10
STOP_TIMEOUT_S = 10.0  # how long a cancel or shutdown waits for a batch to finish
MAX_TASKS_LISTED = 10


def dead_letter_sources(ctx: SqsContext, dlq_name: str) -> list[str]:
    sources = []
    for name in sqs_queue_names(ctx):
        policy = ctx.vhost.queues[name].policy
        if policy.get("x-dead-letter-exchange") == "" and \
                policy.get("x-dead-letter-routing-key") == dlq_name:
            sources.append(name)
    return sources


async def list_dead_letter_source_queues(ctx: SqsContext, request: AwsRequest,
                                         params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    chosen, token = page(dead_letter_sources(ctx, name), params)
    result: dict[str, Any] = {"queueUrls": [ctx.queue_url(request, n) for n in chosen]}
    if token:
        result["NextToken"] = token
    return result


class MoveTask:
    #: what the store keeps of a task, in this order
    STORED = ("source", "destination", "rate", "to_move", "moved", "failed", "status", "failure",
              "started_ms")

    def __init__(self, source: str, destination: str | None, rate: int | None, to_move: int,
                 handle: str | None = None):
        self.handle = handle or str(uuid.uuid4())
        self.source = source
        self.destination = destination
        self.rate = rate
        self.to_move = to_move
        self.moved = 0
        self.failed = 0
        self.status = "RUNNING"
        self.failure: str | None = None
        self.started_ms = now_ms()
        self.task: asyncio.Task | None = None
        self.in_batch = False

    def record(self) -> list:
        return [getattr(self, name) for name in self.STORED]

    @classmethod
    def from_record(cls, handle: str, record: list) -> MoveTask:
        fields = dict(zip(cls.STORED, record))
        task = cls(fields["source"], fields["destination"], fields["rate"], fields["to_move"],
                   handle)
        for name in ("moved", "failed", "status", "failure", "started_ms"):
            setattr(task, name, fields[name])
        return task

    def describe(self) -> dict:
        out: dict[str, Any] = {"Status": self.status, "SourceArn": queue_arn(self.source),
                               "ApproximateNumberOfMessagesMoved": self.moved,
                               "ApproximateNumberOfMessagesToMove": self.to_move,
                               "StartedTimestamp": self.started_ms}
        if self.status == "RUNNING":
            out["TaskHandle"] = self.handle
        if self.destination:
            out["DestinationArn"] = queue_arn(self.destination)
        if self.rate:
            out["MaxNumberOfMessagesPerSecond"] = self.rate
        if self.failure:
            out["FailureReason"] = self.failure
        return out


def _moved_copy(message: Message, destination: str) -> Message:
    props = message.properties.copy()
    if props.headers:
        for name in _DEATH_HEADERS:
            props.headers.pop(name, None)
    props.delivery_mode = 2
    return Message("", destination, message.body, props, timestamp_ms=message.timestamp_ms)


class MoveTasks:
    """The move tasks of this listener, by handle, kept in the store."""

    def __init__(self, state_map: Callable[[str], DurableMap]):
        self.by_handle: dict[str, MoveTask] = {}
        self._state = state_map("sqs-move-tasks")

    def load(self) -> list[MoveTask]:
        """Tasks stored by an earlier run; those that were running are returned to be resumed."""
        for handle, record in self._state.load().items():
            self.by_handle[handle] = MoveTask.from_record(handle, record)
        return [t for t in self.by_handle.values() if t.status == "RUNNING"]

    def save(self, task: MoveTask) -> Any:
        """Store the task's state; the result (None without a data dir) resolves once durable."""
        return self._state.put(task.handle, task.record())

    def forget(self, task: MoveTask) -> Any:
        del self.by_handle[task.handle]
        return self._state.delete(task.handle)

    def values(self):
        return self.by_handle.values()

    def get(self, handle: str) -> MoveTask | None:
        return self.by_handle.get(handle)


async def _settled(*waits: Any) -> None:
    waits = tuple(w for w in waits if w is not None)
    if waits:
        await asyncio.gather(*waits)


async def _run(ctx: SqsContext, task: MoveTask) -> None:
    vhost = ctx.vhost
    tasks: MoveTasks = ctx.move_tasks
    try:
        while task.status == "RUNNING" and not ctx.closing and \
                task.moved + task.failed < task.to_move:
            started = asyncio.get_running_loop().time()
            wanted = min(BATCH, task.to_move - task.moved - task.failed, task.rate or BATCH)
            # (not kept: after a crash mid-batch, the resumed task finds them visible at once)
            deliveries = vhost.receive(task.source, wanted, 60_000, kept=False)
            if not deliveries:
                break
            # A batch is not cancelled half-way (see _stop): copies made and not deleted from the
            # DLQ would be moved twice.
            task.in_batch = True
            waits, moved = [], []
            for delivery in deliveries:
                destination = task.destination or header(delivery.message, "x-first-death-queue")
                if not destination or destination not in vhost.queues:
                    task.failed += 1  # no source to go back to: it stays, visible again
                    vhost.change_deadline(delivery, 0)
                    continue
                published = vhost.publish("", str(destination),
                                          _moved_copy(delivery.message, str(destination)))
                waits.append(published.wait)
                moved.append(delivery)
            await _settled(*waits)
            for delivery in moved:  # deleted from the DLQ only once safe in the destination
                delivery.ack()
            task.moved += len(moved)
            # The counts after the batch: a crash before this write makes them lag one batch.
            await _settled(tasks.save(task))
            task.in_batch = False
            if task.rate:
                spent = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, len(deliveries) / task.rate - spent))
            else:
                await asyncio.sleep(0)  # let the loop serve others between batches
        if task.status == "RUNNING" and not ctx.closing:  # at shutdown it stays RUNNING
            task.status = "COMPLETED"
            await _settled(tasks.save(task))
    except asyncio.CancelledError:
        if not ctx.closing:
            task.status = "CANCELLED"
        raise
    except Exception as exc:  # the queue went away, a write failed: the task failed, say why
        log.warning("message move task %s failed: %s", task.handle, exc)
        task.status = "FAILED"
        task.failure = str(exc) or type(exc).__name__
        try:
            await _settled(tasks.save(task))
        except Exception as again:  # the store is failing: the record stays RUNNING, resumed
            log.warning("message move task %s: state not saved: %s", task.handle, again)


def _launch(ctx: SqsContext, task: MoveTask) -> None:
    task.task = asyncio.get_running_loop().create_task(_run(ctx, task))


async def _stop(task: MoveTask) -> None:
    """Stop a task between batches: one in a batch sees its status or ``ctx.closing`` when the
    batch is done; one waiting between batches is cancelled at once."""
    if task.task is None:
        return
    if not task.in_batch:
        task.task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(task.task), STOP_TIMEOUT_S)
    except asyncio.TimeoutError:  # a batch stuck on a write: give up on it
        task.task.cancel()
    except asyncio.CancelledError:
        # Either the task ended cancelled (what a stop between batches does: _run recorded
        # it), or whoever awaits this stop is being cancelled, which must go on up.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        pass  # the task ended; _run recorded how


def resume(ctx: SqsContext) -> None:
    """At start: run again the tasks that were running when the broker stopped."""
    for task in ctx.move_tasks.load():
        if task.source not in ctx.vhost.queues:
            task.status, task.failure = "FAILED", "the source queue no longer exists"
            continue
        log.info("message move task %s from %s resumes (%d moved so far)", task.handle,
                 task.source, task.moved)
        _launch(ctx, task)


async def start_message_move_task(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    source_arn = str_param(params, "SourceArn")
    source = name_from_arn(source_arn)
    if source is None or source not in ctx.vhost.queues:
        raise sqs_error("ResourceNotFoundException", "The resource that you specified for the "
                        "SourceArn parameter doesn't exist.", 404)
    if not dead_letter_sources(ctx, source):
        raise invalid("Source queue must be configured as a Dead Letter Queue.")
    destination = None
    if params.get("DestinationArn"):
        destination = name_from_arn(params["DestinationArn"])
        if destination is None or destination not in ctx.vhost.queues:
            raise sqs_error("ResourceNotFoundException", "The resource that you specified for "
                            "the DestinationArn parameter doesn't exist.", 404)
    rate = int_param(params, "MaxNumberOfMessagesPerSecond", 1, 500)
    if any(t.source == source and t.status == "RUNNING" for t in ctx.move_tasks.values()):
        raise invalid("There is already a task running. Only one active task is allowed for a "
                      "source queue arn at a given time.")
    queue = ctx.queue(source)
    task = MoveTask(source, destination, rate, queue.ready_count)
    ctx.move_tasks.by_handle[task.handle] = task
    waits = [ctx.move_tasks.save(task)]
    # Keep what ListMessageMoveTasks can show: the latest MAX_TASKS_LISTED per source queue.
    same = sorted((t for t in ctx.move_tasks.values() if t.source == source),
                  key=lambda t: t.started_ms, reverse=True)
    for old in same[MAX_TASKS_LISTED:]:
        if old.status != "RUNNING":
            waits.append(ctx.move_tasks.forget(old))
    _launch(ctx, task)
    await _settled(*waits)  # the handle is answered once the task is on disk
    return {"TaskHandle": task.handle}


async def cancel_message_move_task(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    handle = str_param(params, "TaskHandle")
    task = ctx.move_tasks.get(handle)
    if task is None or task.status != "RUNNING":
        raise sqs_error("ResourceNotFoundException", "Task does not exist or is not running.",
                        404)
    task.status = "CANCELLING"
    await _stop(task)
    task.status = "CANCELLED"
    await _settled(ctx.move_tasks.save(task))
    return {"ApproximateNumberOfMessagesMoved": task.moved}


async def list_message_move_tasks(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    source_arn = str_param(params, "SourceArn")
    source = name_from_arn(source_arn)
    if source is None or source not in ctx.vhost.queues:
        raise sqs_error("ResourceNotFoundException", "The resource that you specified for the "
                        "SourceArn parameter doesn't exist.", 404)
    limit = int_param(params, "MaxResults", 1, MAX_TASKS_LISTED, 1)
    tasks = sorted((t for t in ctx.move_tasks.values() if t.source == source),
                   key=lambda t: t.started_ms, reverse=True)
    return {"Results": [t.describe() for t in tasks[:limit]]}


async def close(ctx: SqsContext) -> None:
    """At shutdown (``ctx.closing`` is set): stop the tasks; running ones stay RUNNING on disk."""
    await asyncio.gather(*(_stop(t) for t in ctx.move_tasks.values()))


OPERATIONS = {
    "ListDeadLetterSourceQueues": list_dead_letter_source_queues,
    "StartMessageMoveTask": start_message_move_task,
    "CancelMessageMoveTask": cancel_message_move_task,
    "ListMessageMoveTasks": list_message_move_tasks,
}
