"""Dead-letter queues: which queues send to a DLQ, and message move tasks (DLQ redrive).

Dead-lettering itself is the core's: a queue with a RedrivePolicy has ``x-delivery-limit``
``maxReceiveCount - 1`` and the DLQ as its dead-letter target, so a message received
``maxReceiveCount`` times whose visibility runs out again moves there, with an ``x-death`` record
naming its source queue.

A move task is one asyncio task per StartMessageMoveTask (never one per message): it receives
batches from the DLQ, publishes each message persistently to its destination (the given
DestinationArn, else the queue it died in, from ``x-first-death-queue``), waits for the fsync, and
only then deletes it from the DLQ. Messages with no known source stay in the DLQ and count as
failed. Tasks are kept in memory (a restart forgets them; the messages moved so far stay moved).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

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
    def __init__(self, source: str, destination: str | None, rate: int | None, to_move: int):
        self.handle = str(uuid.uuid4())
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


async def _run(ctx: SqsContext, task: MoveTask) -> None:
    vhost = ctx.vhost
    try:
        while task.status == "RUNNING" and task.moved + task.failed < task.to_move:
            started = asyncio.get_running_loop().time()
            wanted = min(BATCH, task.to_move - task.moved - task.failed, task.rate or BATCH)
            deliveries = vhost.receive(task.source, wanted, 60_000)
            if not deliveries:
                break
            waits, moved = [], []
            for delivery in deliveries:
                destination = task.destination or header(delivery.message, "x-first-death-queue")
                if not destination or destination not in vhost.queues:
                    task.failed += 1  # no source to go back to: it stays, visible again
                    vhost.change_deadline(delivery, 0)
                    continue
                published = vhost.publish("", str(destination),
                                          _moved_copy(delivery.message, str(destination)))
                if published.wait is not None:
                    waits.append(published.wait)
                moved.append(delivery)
            if waits:
                await asyncio.gather(*waits)
            for delivery in moved:  # deleted from the DLQ only once safe in the destination
                delivery.ack()
            task.moved += len(moved)
            if task.rate:
                spent = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, len(deliveries) / task.rate - spent))
            else:
                await asyncio.sleep(0)  # let the loop serve others between batches
        if task.status == "RUNNING":
            task.status = "COMPLETED"
    except asyncio.CancelledError:
        task.status = "CANCELLED"
        raise
    except Exception as exc:  # the queue went away, a write failed: the task failed, say why
        log.warning("message move task %s failed: %s", task.handle, exc)
        task.status = "FAILED"
        task.failure = str(exc) or type(exc).__name__


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
    ctx.move_tasks[task.handle] = task
    # Keep what ListMessageMoveTasks can show: the latest MAX_TASKS_LISTED per source queue.
    same = sorted((t for t in ctx.move_tasks.values() if t.source == source),
                  key=lambda t: t.started_ms, reverse=True)
    for old in same[MAX_TASKS_LISTED:]:
        if old.status != "RUNNING":
            del ctx.move_tasks[old.handle]
    task.task = asyncio.get_running_loop().create_task(_run(ctx, task))
    return {"TaskHandle": task.handle}


async def cancel_message_move_task(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    handle = str_param(params, "TaskHandle")
    task = ctx.move_tasks.get(handle)
    if task is None or task.status != "RUNNING":
        raise sqs_error("ResourceNotFoundException", "Task does not exist or is not running.",
                        404)
    task.status = "CANCELLING"
    if task.task is not None:
        task.task.cancel()
        try:
            await task.task
        except asyncio.CancelledError:
            pass
    task.status = "CANCELLED"
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
    for task in ctx.move_tasks.values():
        if task.task is not None and not task.task.done():
            task.task.cancel()
    pending = [t.task for t in ctx.move_tasks.values() if t.task is not None]
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


OPERATIONS = {
    "ListDeadLetterSourceQueues": list_dead_letter_source_queues,
    "StartMessageMoveTask": start_message_move_task,
    "CancelMessageMoveTask": cancel_message_move_task,
    "ListMessageMoveTasks": list_message_move_tasks,
}
