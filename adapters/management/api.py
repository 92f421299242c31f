"""RabbitMQ management API: queues, exchanges, bindings, publish and get.

Paths, methods, JSON field names and status codes follow RabbitMQ's HTTP API reference, so that
``rabbitmqadmin`` and scripts written against RabbitMQ work unchanged: PUT answers 201 when it
created and 204 when the object existed, DELETE answers 204, errors carry ``{"error", "reason"}``.
Booleans and numbers are accepted as strings, as rabbitmqadmin sends them.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable

from aiohttp import web

from manifold.broker import introspect
from manifold.broker.errors import BrokerError
from manifold.broker.message import PROPERTY_NAMES, Message, Properties

from . import listing
from .context import Context, body_json, jsonable
from .errors import from_broker_error, json_error

def not_found(kind: str, name: str, vhost: str) -> web.HTTPException:
    return json_error(404, "Object Not Found", f"no {kind} '{name}' in vhost '{vhost}'")


ACKMODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
            "reject_requeue_false")


def _queue_row(ctx: Context, vhost_name: str, queue: Any) -> dict:
    row = introspect.queue_info(vhost_name, queue)
    publish, deliver, ack = ctx.sampler.queue_rate(vhost_name, queue.name)
    row["message_stats"] = {
        "publish": row.pop("publish_total"), "publish_details": {"rate": round(publish, 2)},
        "deliver_get": row.pop("deliver_get_total"),
        "deliver_get_details": {"rate": round(deliver, 2)},
        "ack": row.pop("ack_total"), "ack_details": {"rate": round(ack, 2)}}
    return row


# ====================================================================== queues
async def list_queues(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhosts = ctx.visible_vhosts(request.match_info.get("vhost"))
    return await listing.respond(request, (_queue_row(ctx, v.name, q)
                                     for v in vhosts for q in list(v.queues.values())))


async def get_queue(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_read()
    queue = vhost.queues.get(request.match_info["name"])
    if queue is None:
        raise not_found("queue", request.match_info["name"], vhost.name)
    return web.json_response(_queue_row(ctx, vhost.name, queue))


def _arguments(body: dict) -> dict:
    arguments = body.get("arguments") or {}
    if isinstance(arguments, str):  # rabbitmqadmin passes JSON arguments as text when untyped
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise json_error(400, "bad_request", "arguments must be a JSON object")
    if not isinstance(arguments, dict):
        raise json_error(400, "bad_request", "arguments must be a JSON object")
    return arguments


async def put_queue(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    name = request.match_info["name"]
    body = await body_json(request)
    ctx.grant(vhost).configure("queue", name)
    existed = name in vhost.queues
    arguments = _arguments(body)
    if body.get("type") and "x-queue-type" not in arguments:  # the 3.x UI sends "type"
        arguments["x-queue-type"] = body["type"]
    return _declared(existed, lambda: vhost.declare_queue(
        name, durable=listing.truthy(body.get("durable", True)),
        auto_delete=listing.truthy(body.get("auto_delete", False)), arguments=arguments))


def _declared(existed: bool, declare: Callable[[], Any]) -> web.Response:
    """Run a PUT's declare: 201 Created for a new queue or exchange, 204 No Content for one that
    was there (RabbitMQ's answers); a broker error becomes its HTTP error."""
    try:
        declare()
    except BrokerError as exc:
        raise from_broker_error(exc)
    return web.Response(status=204 if existed else 201)


async def delete_queue(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    name = request.match_info["name"]
    if name not in vhost.queues:
        raise not_found("queue", name, vhost.name)
    ctx.grant(vhost).configure("queue", name)
    query = request.query
    try:
        vhost.delete_queue(name, if_unused=listing.truthy(query.get("if-unused", "false")),
                           if_empty=listing.truthy(query.get("if-empty", "false")),
                           owner=vhost.queues[name].exclusive_owner)
    except BrokerError as exc:
        raise from_broker_error(exc)
    return web.Response(status=204)


async def purge_queue(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    name = request.match_info["name"]
    queue = vhost.queues.get(name)
    if queue is None:
        raise not_found("queue", name, vhost.name)
    ctx.grant(vhost).read("queue", name)
    try:
        vhost.purge_queue(name, owner=queue.exclusive_owner)
    except BrokerError as exc:
        raise from_broker_error(exc)
    return web.Response(status=204)


def _payload(body: bytes, encoding: str, truncate: int | None) -> tuple[str, str]:
    if truncate is not None:
        body = body[:truncate]
    if encoding == "auto":
        try:
            return body.decode("utf-8"), "string"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode(), "base64"


def properties_json(properties: Properties) -> dict:
    return {k: jsonable(v) for k, v in properties.as_dict().items()}


async def get_messages(request: web.Request) -> web.Response:
    """POST /api/queues/{vhost}/{name}/get: ``count``, ``ackmode``, ``encoding``, ``truncate``."""
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    name = request.match_info["name"]
    queue = vhost.queues.get(name)
    if queue is None:
        raise not_found("queue", name, vhost.name)
    ctx.grant(vhost).read("queue", name)
    body = await body_json(request)
    ackmode = body.get("ackmode", "ack_requeue_true")
    if ackmode not in ACKMODES:
        raise json_error(400, "bad_request", f"ackmode must be one of {', '.join(ACKMODES)}")
    encoding = body.get("encoding", "auto")
    if encoding not in ("auto", "base64"):
        raise json_error(400, "bad_request", "encoding must be auto or base64")
    try:
        count = int(body.get("count", 1))
        truncate = int(body["truncate"]) if body.get("truncate") not in (None, "") else None
    except (TypeError, ValueError):
        raise json_error(400, "bad_request", "count and truncate must be integers")
    requeue = ackmode.endswith("_true")
    out, taken = [], []
    try:
        for _ in range(max(0, count)):
            delivery, remaining = vhost.get(name, no_ack=False, owner=queue.exclusive_owner)
            if delivery is None:
                break
            taken.append(delivery)
            message = delivery.message
            payload, payload_encoding = _payload(message.body, encoding, truncate)
            out.append({"payload_bytes": len(message.body), "redelivered": delivery.redelivered,
                        "exchange": message.exchange, "routing_key": message.routing_key,
                        "message_count": remaining,
                        "properties": properties_json(message.properties),
                        "payload": payload, "payload_encoding": payload_encoding})
    except BrokerError as exc:
        raise from_broker_error(exc)
    finally:
        # Requeued ones go back together, after the loop, so a count > 1 does not see the
        # same message again (RabbitMQ's behaviour).
        if requeue:
            vhost.requeue(taken)
        else:
            for delivery in taken:
                if ackmode.startswith("ack"):
                    delivery.ack()
                else:
                    delivery.reject(False)
    return web.json_response(out)


# ====================================================================== exchanges
async def list_exchanges(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhosts = ctx.visible_vhosts(request.match_info.get("vhost"))
    return await listing.respond(request, (introspect.exchange_info(v.name, e)
                                     for v in vhosts for e in list(v.exchanges.values())))


def _exchange_name(request: web.Request) -> str:
    name = request.match_info["name"]
    return "" if name == "amq.default" else name


async def get_exchange(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_read()
    exchange = vhost.exchanges.get(_exchange_name(request))
    if exchange is None:
        raise not_found("exchange", request.match_info["name"], vhost.name)
    return web.json_response(introspect.exchange_info(vhost.name, exchange))


async def put_exchange(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    name = _exchange_name(request)
    body = await body_json(request)
    kind = body.get("type")
    if not kind:
        raise json_error(400, "bad_request", "exchange type is required (direct, fanout, "
                                             "topic, headers)")
    ctx.grant(vhost).configure("exchange", name)
    existed = name in vhost.exchanges
    arguments = _arguments(body)
    return _declared(existed, lambda: vhost.declare_exchange(
        name, kind, durable=listing.truthy(body.get("durable", True)),
        auto_delete=listing.truthy(body.get("auto_delete", False)),
        internal=listing.truthy(body.get("internal", False)), arguments=arguments))


async def delete_exchange(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    name = _exchange_name(request)
    if name not in vhost.exchanges:
        raise not_found("exchange", name, vhost.name)
    ctx.grant(vhost).configure("exchange", name)
    try:
        vhost.delete_exchange(name, if_unused=listing.truthy(request.query.get("if-unused",
                                                                               "false")))
    except BrokerError as exc:
        raise from_broker_error(exc)
    return web.Response(status=204)


def message_from_json(body: dict, exchange: str) -> Message:
    """A Message from RabbitMQ's publish body: ``payload`` with ``payload_encoding``
    (string or base64), ``routing_key`` and ``properties``."""
    encoding = body.get("payload_encoding", "string")
    payload = body.get("payload", "")
    if not isinstance(payload, str):
        raise json_error(400, "bad_request", "payload must be a string")
    if encoding == "string":
        data = payload.encode()
    elif encoding == "base64":
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise json_error(400, "bad_request", "payload is not valid base64")
    else:
        raise json_error(400, "bad_request", "payload_encoding must be string or base64")
    props = body.get("properties") or {}
    if not isinstance(props, dict):
        raise json_error(400, "bad_request", "properties must be a JSON object")
    unknown = sorted(set(props) - set(PROPERTY_NAMES))
    if unknown:
        raise json_error(400, "bad_request", f"unknown properties {', '.join(unknown)}; "
                                             f"accepted: {', '.join(PROPERTY_NAMES)}")
    values: dict[str, Any] = dict(props)
    try:
        for key in ("delivery_mode", "priority", "timestamp"):
            if values.get(key) not in (None, ""):
                values[key] = int(values[key])
        if values.get("expiration") is not None:
            values["expiration"] = str(values["expiration"])
    except (TypeError, ValueError):
        raise json_error(400, "bad_request", "delivery_mode, priority and timestamp must be "
                                             "integers")
    if values.get("headers") is not None and not isinstance(values["headers"], dict):
        raise json_error(400, "bad_request", "properties.headers must be a JSON object")
    return Message(exchange, str(body.get("routing_key", "")), data, Properties(**values))


async def publish(request: web.Request) -> web.Response:
    """POST /api/exchanges/{vhost}/{name}/publish -> ``{"routed": bool}``; answers once every
    durable copy is on disk (the same promise as a publisher confirm)."""
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    name = _exchange_name(request)
    body = await body_json(request)
    message = message_from_json(body, name)
    grant = ctx.grant(vhost)
    grant.write("exchange", name)
    grant.check_topic("write", name or "amq.default", message.routing_key)
    try:
        result = vhost.publish(name, message.routing_key, message)
    except BrokerError as exc:
        raise from_broker_error(exc)
    if result.wait is not None:
        try:
            await result.wait
        except Exception as exc:  # a failed write is not a success
            raise json_error(503, "service_unavailable", f"message not stored: {exc}")
    return web.json_response({"routed": result.routed > 0})


# ====================================================================== bindings
def _bindings(ctx: Context, vhost_name: str | None) -> list[dict]:
    return [b for v in ctx.visible_vhosts(vhost_name) for b in introspect.bindings(v)]


async def list_bindings(request: web.Request) -> web.Response:
    ctx = Context(request)
    return await listing.respond(request, _bindings(ctx, request.match_info.get("vhost")))


async def bindings_between(request: web.Request) -> web.Response:
    """GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}."""
    ctx = Context(request)
    m = request.match_info
    ctx.vhost_for_read()
    kind = "queue" if m["kind"] == "q" else "exchange"
    source = "" if m["source"] == "amq.default" else m["source"]
    rows = [b for b in _bindings(ctx, m["vhost"]) if b["source"] == source
            and b["destination"] == m["destination"] and b["destination_type"] == kind]
    return await listing.respond(request, rows)


async def bindings_of(request: web.Request) -> web.Response:
    """GET /api/queues/{vhost}/{name}/bindings and /api/exchanges/{vhost}/{name}/bindings/
    source|destination."""
    ctx = Context(request)
    m = request.match_info
    ctx.vhost_for_read()
    name = m["name"]
    side = m.get("side")
    rows = _bindings(ctx, m["vhost"])
    if side is None:
        rows = [b for b in rows if b["destination_type"] == "queue" and b["destination"] == name]
    elif side == "source":
        rows = [b for b in rows if b["source"] == name]
    else:
        rows = [b for b in rows if b["destination_type"] == "exchange"
                and b["destination"] == name]
    return await listing.respond(request, rows)


def _check_binding(ctx: Context, vhost: Any, m: Any) -> None:
    """RabbitMQ's rule: write on the destination, read on the source exchange."""
    grant = ctx.grant(vhost)
    grant.write("queue" if m["kind"] == "q" else "exchange", m["destination"])
    grant.read("exchange", m["source"])


async def post_binding(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    m = request.match_info
    body = await body_json(request)
    routing_key = str(body.get("routing_key", ""))
    arguments = _arguments(body)
    _check_binding(ctx, vhost, m)
    try:
        if m["kind"] == "q":
            vhost.bind_queue(m["destination"], m["source"], routing_key, arguments)
        else:
            vhost.bind_exchange(m["destination"], m["source"], routing_key, arguments)
    except BrokerError as exc:
        raise from_broker_error(exc)
    props_key = routing_key.replace("%", "%25").replace("/", "%2F") or "~"
    return web.Response(status=201, headers={"Location": props_key})


async def delete_binding(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.vhost_for_write()
    m = request.match_info
    kind = "queue" if m["kind"] == "q" else "exchange"
    match = [b for b in introspect.bindings(vhost) if b["source"] == m["source"]
             and b["destination"] == m["destination"] and b["destination_type"] == kind
             and b["properties_key"] == m["props"]]
    if not match:
        raise json_error(404, "Object Not Found", f"no binding from '{m['source']}' to "
                                                  f"'{m['destination']}' with properties key "
                                                  f"'{m['props']}' in vhost '{vhost.name}'")
    binding = match[0]
    _check_binding(ctx, vhost, m)
    try:
        if kind == "queue":
            vhost.unbind_queue(m["destination"], m["source"], binding["routing_key"],
                               binding["arguments"])
        else:
            vhost.unbind_exchange(m["destination"], m["source"], binding["routing_key"],
                                  binding["arguments"])
    except BrokerError as exc:
        raise from_broker_error(exc)
    return web.Response(status=204)


async def get_outbox(request: web.Request) -> web.Response:
    """GET /api/outbox: SNS sms/application deliveries (no carrier), oldest first."""
    ctx = Context(request)
    ctx.visible_vhosts("/")  # SNS topics live in vhost "/": reading them needs read on it
    return web.json_response(ctx.broker.outbox.entries())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/outbox", get_outbox)
    r.add_get("/api/queues", list_queues)
    r.add_get("/api/queues/{vhost}", list_queues)
    r.add_get("/api/queues/{vhost}/{name}", get_queue)
    r.add_put("/api/queues/{vhost}/{name}", put_queue)
    r.add_delete("/api/queues/{vhost}/{name}", delete_queue)
    r.add_delete("/api/queues/{vhost}/{name}/contents", purge_queue)
    r.add_post("/api/queues/{vhost}/{name}/get", get_messages)
    r.add_get("/api/queues/{vhost}/{name}/bindings", bindings_of)
    r.add_get("/api/exchanges", list_exchanges)
    r.add_get("/api/exchanges/{vhost}", list_exchanges)
    r.add_get("/api/exchanges/{vhost}/{name}", get_exchange)
    r.add_put("/api/exchanges/{vhost}/{name}", put_exchange)
    r.add_delete("/api/exchanges/{vhost}/{name}", delete_exchange)
    r.add_post("/api/exchanges/{vhost}/{name}/publish", publish)
    r.add_get("/api/exchanges/{vhost}/{name}/bindings/{side:source|destination}", bindings_of)
    r.add_get("/api/bindings", list_bindings)
    r.add_get("/api/bindings/{vhost}", list_bindings)
    r.add_get("/api/bindings/{vhost}/e/{source}/{kind:q|e}/{destination}", bindings_between)
    r.add_post("/api/bindings/{vhost}/e/{source}/{kind:q|e}/{destination}", post_binding)
    r.add_delete("/api/bindings/{vhost}/e/{source}/{kind:q|e}/{destination}/{props}",
                 delete_binding)
