"""Amazon SQS on the shared AWS listener: both wire protocols, every operation of the 2012-11-05
API (see MAPPING.md for how queues and messages map onto the core).

``install(api)`` registers the JSON 1.0 target ``AmazonSQS`` and the query service ``sqs`` on the
dispatcher; both land in :func:`handle`, which normalises parameters (sqs_protocol.py), runs the
operation (sqs_queues.py, sqs_messages.py, sqs_redrive.py) and renders the result for the wire.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from . import sqs_messages, sqs_queues, sqs_redrive
from .http import AwsApi, AwsError, AwsRequest
from .sigv4 import require
from .sqs_common import SqsContext
from .sqs_protocol import check_shapes, decode_binaries, from_query, to_json, to_xml

OPERATIONS: dict[str, Any] = {**sqs_queues.OPERATIONS, **sqs_messages.OPERATIONS,
                              **sqs_redrive.OPERATIONS}


#: the permission (RabbitMQ's model) an operation needs on its queue; see sigv4.require
PERMISSIONS = {
    "CreateQueue": "configure", "DeleteQueue": "configure", "SetQueueAttributes": "configure",
    "TagQueue": "configure", "UntagQueue": "configure", "AddPermission": "configure",
    "RemovePermission": "configure",
    "SendMessage": "write", "SendMessageBatch": "write",
    "ReceiveMessage": "read", "PurgeQueue": "read", "DeleteMessage": "read",
    "DeleteMessageBatch": "read", "ChangeMessageVisibility": "read",
    "ChangeMessageVisibilityBatch": "read",
}


def check_permission(ctx: SqsContext, request: AwsRequest, params: dict) -> None:
    """AccessDenied unless the signing key's user has the permission the operation needs."""
    action = PERMISSIONS.get(request.operation)
    if action is None or request.grant is None:
        return
    if request.operation == "CreateQueue":
        name = params.get("QueueName")
    else:
        try:
            name = ctx.queue_name(request, params)
        except AwsError:
            return  # no queue named: the operation reports the missing parameter itself
    if isinstance(name, str):
        require(request, action, "queue", name)


def install(api: AwsApi) -> SqsContext:
    ctx = SqsContext(api.broker, api.settings, sqs_redrive.MoveTasks(api.broker.state_map))

    async def handle(request: AwsRequest) -> Any:
        operation = OPERATIONS.get(request.operation)
        if operation is None:
            raise AwsError("InvalidAction", f"The action {request.operation} is not valid for "
                           "this endpoint.", query_code="InvalidAction")
        if request.protocol == "query":
            params = decode_binaries(check_shapes(from_query(request.params)))
            check_permission(ctx, request, params)
            return to_xml(request.operation, await operation(ctx, request, params))
        params = decode_binaries(check_shapes(request.params))
        check_permission(ctx, request, params)
        return to_json(await operation(ctx, request, params))

    async def on_shutdown(_app: web.Application) -> None:
        # Long polls answer (empty) at once instead of holding the shutdown for up to 20 s.
        ctx.closing = True
        for woken in list(ctx.long_polls):
            if not woken.done():
                woken.set_result(None)
        await sqs_redrive.close(ctx)

    async def on_startup(_app: web.Application) -> None:
        sqs_redrive.resume(ctx)

    api.register_json("AmazonSQS", "sqs", handle)
    api.register_query("sqs", handle)
    api.app.on_startup.append(on_startup)
    api.app.on_shutdown.append(on_shutdown)
    return ctx
