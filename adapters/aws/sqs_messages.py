"""SQS message operations: send, receive (with long polling), delete, change visibility.

A send publishes a persistent message to the default exchange with the queue name as routing key
(so the queue gets it exactly as an AMQP publish would) and answers only once the store has
fsynced it. A receive checks messages out of the core queue with a deadline (the visibility
timeout); the receipt handle names the message by its id in the queue. A long poll waits on a
core ready-listener (one future per waiting request, never a task per message).
"""
from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

from manifold.broker.errors import NotFound

from . import sqs_fifo
from .attributes import (DEDUP_HEADER, GROUP_HEADER, SEQUENCE_HEADER, TRACE_HEADER,
                         attributes_size, body_text, check_attributes, check_text, header,
                         md5_of_attributes, md5_of_body, message_attributes, message_id_of,
                         select_attributes, sent_timestamp_ms, to_message)
from .http import ACCOUNT_ID, AwsError, AwsRequest
from .sqs_common import (SqsContext, batch_error, check_batch, core_error, int_param, invalid,
                         no_queue, now_ms, queue_arn, sqs_error, str_param)

SYSTEM_ATTRIBUTES = ("SenderId", "SentTimestamp", "ApproximateReceiveCount",
                     "ApproximateFirstReceiveTimestamp", "SequenceNumber",
                     "MessageDeduplicationId", "MessageGroupId", "AWSTraceHeader",
                     "DeadLetterQueueSourceArn")


# ==================================================================== send
def _max_size(ctx: SqsContext, queue: Any) -> int:
    return int(ctx.sqs_attributes(queue).get("MaximumMessageSize", "1048576"))


def _prepare(ctx: SqsContext, request: AwsRequest, name: str, queue: Any,
             entry: dict) -> tuple[dict, Any]:
    """Check one send and enqueue it: (result, awaitable until it is on disk, or None)."""
    body = str_param(entry, "MessageBody")
    check_text(body, "body")
    attributes = entry.get("MessageAttributes") or {}
    check_attributes(attributes)
    system = entry.get("MessageSystemAttributes") or {}
    check_attributes(system, system=True)
    limit = _max_size(ctx, queue)
    if len(body.encode("utf-8")) + attributes_size(attributes) > limit:
        raise invalid(f"One or more parameters are invalid. Reason: Message must be shorter than "
                      f"{limit} bytes.")
    delay = int_param(entry, "DelaySeconds", 0, 900)
    group, dedup = sqs_fifo.check_ids(ctx, queue, entry)
    result: dict[str, Any] = {"MD5OfMessageBody": md5_of_body(body)}
    md5 = md5_of_attributes(attributes)
    if md5:
        result["MD5OfMessageAttributes"] = md5
    md5 = md5_of_attributes(system)
    if md5:
        result["MD5OfMessageSystemAttributes"] = md5
    window = key = None
    if dedup is not None:
        window = sqs_fifo.window(ctx, name)
        key = sqs_fifo.dedup_key(ctx, queue, group, dedup)
        first = window.seen(key)
        if first is not None:  # accepted before: answered the same, not enqueued again
            result["MessageId"], result["SequenceNumber"] = first
            return result, None
    message_id = str(uuid.uuid4())
    sequence = ctx.next_sequence_number() if dedup is not None else None
    message = to_message(body, attributes, message_id=message_id, sent_ms=now_ms(),
                         system_attributes=system, group_id=group, dedup_id=dedup,
                         sequence_number=sequence, delay_s=delay,
                         sender_id=request.access_key_id, routing_key=name)
    try:
        published = ctx.vhost.publish("", name, message)
    except Exception as exc:
        raise core_error(exc) from None
    if not published.routed:
        raise no_queue()
    waits = [published.wait] if published.wait is not None else []
    if window is not None:
        written = window.add(key, [message_id, sequence])
        if written is not None:
            waits.append(written)
        result["SequenceNumber"] = sequence
    result["MessageId"] = message_id
    return result, (asyncio.gather(*waits) if waits else None)


async def send_message(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    await ctx.publish_allowed()
    queue = ctx.queue(name)
    result, written = _prepare(ctx, request, name, queue, params)
    if written is not None:
        await written  # [issue 12] SendMessage answers once the message is fsynced
    return result


async def send_message_batch(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    entries = check_batch(params.get("Entries"), "SendMessageBatch")
    await ctx.publish_allowed()
    queue = ctx.queue(name)
    total = 0
    for entry in entries:
        body = entry.get("MessageBody")
        total += len(body.encode("utf-8")) if isinstance(body, str) else 0
        attributes = entry.get("MessageAttributes")
        if isinstance(attributes, dict):
            try:
                total += attributes_size(attributes)
            except (KeyError, TypeError, AttributeError):
                pass  # malformed: that entry fails on its own below
    limit = _max_size(ctx, queue)
    if total > limit:
        raise sqs_error("BatchRequestTooLong",
                        f"Batch requests cannot be longer than {limit} bytes. You have sent "
                        f"{total} bytes.")
    successful, failed, waits = [], [], []
    for entry in entries:
        try:
            result, written = _prepare(ctx, request, name, queue, entry)
        except AwsError as exc:
            failed.append(batch_error(entry["Id"], exc))
            continue
        result["Id"] = entry["Id"]
        successful.append(result)
        if written is not None:
            waits.append(written)
    if waits:
        await asyncio.gather(*waits)
    return {"Successful": successful, "Failed": failed}


# ==================================================================== receive
def receipt_handle(ctx: SqsContext, name: str, delivery: Any) -> str:
    raw = f"{ctx.epoch}/{delivery.msg_id}/{delivery.receive_count}/{name}"
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii")


def parse_handle(name: str, handle: Any) -> tuple[str, int, int]:
    """(epoch, message id, receive count) of a receipt handle for queue ``name``."""
    try:
        epoch, msg_id, count, queue = base64.urlsafe_b64decode(
            handle.encode("ascii")).decode("utf-8").split("/", 3)
        if queue != name:
            raise ValueError
        return epoch, int(msg_id), int(count)
    except (ValueError, AttributeError, UnicodeError, TypeError):
        raise sqs_error("ReceiptHandleIsInvalid",
                        f'The input receipt handle "{handle}" is not a valid receipt handle.'
                        ) from None


def _system_attributes(name: str, delivery: Any, wanted: set[str]) -> dict[str, str]:
    message = delivery.message
    sent = sent_timestamp_ms(message, now_ms())
    values = {
        "SenderId": message.properties.user_id or ACCOUNT_ID,
        "SentTimestamp": str(sent),
        "ApproximateReceiveCount": str(delivery.receive_count),
        "ApproximateFirstReceiveTimestamp": str(delivery.first_delivered_ms or now_ms()),
        "SequenceNumber": header(message, SEQUENCE_HEADER),
        "MessageDeduplicationId": header(message, DEDUP_HEADER),
        "MessageGroupId": header(message, GROUP_HEADER),
        "AWSTraceHeader": header(message, TRACE_HEADER),
    }
    source = header(message, "x-first-death-queue")
    if source:
        values["DeadLetterQueueSourceArn"] = queue_arn(str(source))
    keys = SYSTEM_ATTRIBUTES if "All" in wanted else wanted
    return {k: str(values[k]) for k in keys if values.get(k) is not None}


def render(ctx: SqsContext, name: str, delivery: Any, system_names: set[str],
           attribute_names: list[str]) -> dict:
    message = delivery.message
    body = body_text(message)
    out: dict[str, Any] = {"MessageId": message_id_of(message, name, delivery.msg_id),
                           "ReceiptHandle": receipt_handle(ctx, name, delivery),
                           "MD5OfBody": md5_of_body(body), "Body": body}
    if system_names:
        system = _system_attributes(name, delivery, system_names)
        if system:
            out["Attributes"] = system
    chosen = select_attributes(message_attributes(message), attribute_names)
    if chosen:
        out["MessageAttributes"] = chosen
        out["MD5OfMessageAttributes"] = md5_of_attributes(chosen)
    return out


async def receive_message(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    queue = ctx.queue(name)
    stored = ctx.sqs_attributes(queue)
    count = int_param(params, "MaxNumberOfMessages", 1, 10, 1,
                      "Must be between 1 and 10, if provided")
    visibility = int_param(params, "VisibilityTimeout", 0, 43200,
                           int(stored.get("VisibilityTimeout", "30")))
    wait = int_param(params, "WaitTimeSeconds", 0, 20,
                     int(stored.get("ReceiveMessageWaitTimeSeconds", "0")))
    system_names = set(params.get("AttributeNames") or []) | set(
        params.get("MessageSystemAttributeNames") or [])
    attribute_names = list(params.get("MessageAttributeNames") or [])
    deliveries = _receive(ctx, name, count, visibility)
    if not deliveries and wait:
        deliveries = await _long_poll(ctx, name, count, visibility, wait)
    if not deliveries:
        return {}
    return {"Messages": [render(ctx, name, d, system_names, attribute_names)
                         for d in deliveries]}


def _receive(ctx: SqsContext, name: str, count: int, visibility_s: int) -> list:
    try:
        return ctx.vhost.receive(name, count, visibility_s * 1000)
    except NotFound:
        raise no_queue() from None


async def _long_poll(ctx: SqsContext, name: str, count: int, visibility_s: int,
                     wait_s: int) -> list:
    """Wait up to ``wait_s`` for a message: sleep on the queue's ready listener, wake on a new
    message (or at the deadline, or at shutdown), try again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not ctx.closing:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return []
        woken = loop.create_future()

        def wake(woken: asyncio.Future = woken) -> None:
            if not woken.done():
                woken.set_result(None)

        try:
            ctx.vhost.wait_ready(name, wake)
        except NotFound:
            raise no_queue() from None
        timer = loop.call_later(remaining, wake)
        ctx.long_polls.add(woken)
        try:
            await woken
        finally:
            timer.cancel()
            ctx.long_polls.discard(woken)
            ctx.vhost.stop_waiting(name, wake)
        deliveries = _receive(ctx, name, count, visibility_s)
        if deliveries:
            return deliveries
    return []


# ==================================================================== delete / visibility
def _same_receive(ctx: SqsContext, epoch: str, count: int, lease: Any) -> bool:
    """Whether a receipt handle names ``lease``'s receive: one of this run, or of an earlier run
    for a message on disk (its id and receive count outlive a restart, and a message still in
    flight then is leased again: AWS's handles stay valid while the message is in flight)."""
    return lease.receive_count == count and (epoch == ctx.epoch or lease.on_disk)


def _delete(ctx: SqsContext, name: str, handle: Any) -> None:
    epoch, msg_id, count = parse_handle(name, handle)
    lease = ctx.vhost.lease(name, msg_id)
    if lease is not None:
        if _same_receive(ctx, epoch, count, lease):
            lease.ack()
        # else: a stale handle of a message received again since: like SQS, the call succeeds
        # and the newer receiver keeps the message.
        return
    if epoch != ctx.epoch:
        # Received before a broker restart: the lease is gone but the message id is the same.
        ctx.vhost.withdraw(name, msg_id)


async def delete_message(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    _delete(ctx, name, str_param(params, "ReceiptHandle"))
    return {}


async def delete_message_batch(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    successful, failed = [], []
    for entry in check_batch(params.get("Entries"), "DeleteMessageBatch"):
        try:
            _delete(ctx, name, str_param(entry, "ReceiptHandle"))
        except AwsError as exc:
            failed.append(batch_error(entry["Id"], exc))
        else:
            successful.append({"Id": entry["Id"]})
    return {"Successful": successful, "Failed": failed}


def _change(ctx: SqsContext, name: str, handle: Any, timeout: Any) -> None:
    seconds = int_param({"VisibilityTimeout": timeout}, "VisibilityTimeout", 0, 43200)
    if seconds is None:
        raise sqs_error("MissingParameter",
                        "The request must contain the parameter VisibilityTimeout.")
    epoch, msg_id, count = parse_handle(name, handle)
    lease = ctx.vhost.lease(name, msg_id)
    if lease is None or not _same_receive(ctx, epoch, count, lease):
        raise sqs_error("MessageNotInflight", "Message does not exist or is not available for "
                        "visibility timeout change.")
    ctx.vhost.change_deadline(lease, seconds * 1000)


async def change_message_visibility(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    _change(ctx, name, str_param(params, "ReceiptHandle"), params.get("VisibilityTimeout"))
    return {}


async def change_message_visibility_batch(ctx: SqsContext, request: AwsRequest,
                                          params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    successful, failed = [], []
    for entry in check_batch(params.get("Entries"), "ChangeMessageVisibilityBatch"):
        try:
            _change(ctx, name, str_param(entry, "ReceiptHandle"), entry.get("VisibilityTimeout"))
        except AwsError as exc:
            failed.append(batch_error(entry["Id"], exc))
        else:
            successful.append({"Id": entry["Id"]})
    return {"Successful": successful, "Failed": failed}


OPERATIONS = {
    "SendMessage": send_message, "SendMessageBatch": send_message_batch,
    "ReceiveMessage": receive_message, "DeleteMessage": delete_message,
    "DeleteMessageBatch": delete_message_batch,
    "ChangeMessageVisibility": change_message_visibility,
    "ChangeMessageVisibilityBatch": change_message_visibility_batch,
}
