"""RabbitMQ management API: overview, whoami, vhosts, users, permissions, connections, channels,
consumers, health checks; and Manifold's own ``/api/manifold/...`` (MQTT sessions, retained
messages, streams)."""
from __future__ import annotations

import platform
import re
from typing import Any

from aiohttp import web

from manifold.broker import introspect

from . import listing
from .auth import require_admin, require_read
from .context import Context, body_json
from .errors import json_error

VERSION = "3.12.0"  # the RabbitMQ management API version whose shape we follow
PRODUCT_VERSION = "0.1.0"


def _rate(value: float) -> dict:
    return {"rate": round(value, 2)}


# ====================================================================== overview
async def overview(request: web.Request) -> web.Response:
    ctx = Context(request)
    # Queue figures come from the sampler's last pass (every [management] sample_interval_s),
    # as RabbitMQ's are: an overview costs nothing per queue, however many there are.
    point = ctx.sampler.latest()
    vhosts = ctx.visible_vhosts()
    totals = ctx.sampler.totals([v.name for v in vhosts])
    connections = ctx.connections()
    channels = sum(c.info()["channels"] for c in connections)
    service = ctx.service
    listeners = []
    if service is not None:
        bind = ctx.broker.settings.server.bind
        listeners = [{"node": "manifold", "protocol": _listener_name(p), "ip_address": bind,
                      "port": port} for p, port in service.ports.items()]
    return web.json_response({
        "management_version": VERSION, "rabbitmq_version": VERSION,
        "product_name": "Manifold", "product_version": PRODUCT_VERSION,
        "erlang_version": platform.python_version(), "cluster_name": "manifold",
        "node": "manifold", "rates_mode": "basic",
        "object_totals": {
            "connections": len(connections), "channels": channels,
            "exchanges": sum(len(v.exchanges) for v in vhosts), "queues": totals["queues"],
            "consumers": totals["consumers"]},
        "queue_totals": {k: totals[k] for k in ("messages", "messages_ready",
                                                 "messages_unacknowledged")},
        "message_stats": {
            "publish": totals["publish"], "publish_details": _rate(point["publish_rate"]),
            "deliver_get": totals["deliver_get"],
            "deliver_get_details": _rate(point["deliver_get_rate"]),
            "ack": totals["ack"], "ack_details": _rate(point["ack_rate"])},
        "listeners": listeners,
        "memory": {"used": point["memory"], "message_bodies": ctx.broker.memory.used_bytes,
                   "high_watermark": ctx.broker.memory.high_water_bytes,
                   "alarm": ctx.broker.memory.alarm},
    })


def _listener_name(port_name: str) -> str:
    return {"amqp": "amqp", "mqtt": "mqtt", "stomp": "stomp", "management": "http",
            "http": "aws-http"}.get(port_name, port_name)


async def history(request: web.Request) -> web.Response:
    """The sampler's last 10 minutes (the dashboard's charts)."""
    ctx = Context(request)
    return web.json_response({"interval_s": ctx.sampler.interval_s,
                              "samples": list(ctx.sampler.history)})


async def whoami(request: web.Request) -> web.Response:
    principal = Context(request).principal
    return web.json_response({"name": principal.name, "tags": list(principal.tags)})


async def ping(request: web.Request) -> web.Response:
    """No credentials: lets the dashboard tell "unreachable" from "not signed in"."""
    return web.json_response({"status": "ok"})


# ====================================================================== vhosts
async def list_vhosts(request: web.Request) -> web.Response:
    ctx = Context(request)
    rows = []
    for vhost in ctx.visible_vhosts():
        totals = ctx.sampler.totals([vhost.name])
        rows.append({"name": vhost.name, "tracing": False, "description": "",
                     "messages": totals["messages"], "messages_ready": totals["messages_ready"],
                     "messages_unacknowledged": totals["messages_unacknowledged"]})
    return await listing.respond(request, rows)


async def get_vhost(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhost = ctx.visible_vhosts(request.match_info["vhost"])[0]
    return web.json_response({"name": vhost.name, "tracing": False, "description": ""})


async def aliveness(request: web.Request) -> web.Response:
    ctx = Context(request)
    ctx.vhost_for_read()
    return web.json_response({"status": "ok"})


async def alarms(request: web.Request) -> web.Response:
    """503 while a resource alarm is in effect, as RabbitMQ's health check."""
    ctx = Context(request)
    if ctx.broker.memory.alarm:
        return web.json_response({"status": "failed", "reason": "resource alarm(s) in effect",
                                  "alarms": [{"node": "manifold", "resource": "memory"}]},
                                 status=503)
    return web.json_response({"status": "ok"})


# ====================================================================== users
def _tags(value: Any) -> tuple[str, ...]:
    """RabbitMQ takes tags as a list or as one comma-separated string."""
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list):
        return tuple(str(t) for t in value)
    return ()


def user_row(broker: Any, user: Any) -> dict:
    password_hash, algorithm = broker.access.password_hash_of(user.name)
    return {"name": user.name, "password_hash": password_hash, "hashing_algorithm": algorithm,
            "tags": list(user.tags), "limits": {}}


async def stored(wait: Any) -> None:
    """Answer only once a change is on disk (the access state log), like a confirm."""
    if wait is not None:
        await wait


async def list_users(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    return await listing.respond(request, (user_row(ctx.broker, u)
                                           for u in ctx.broker.access.list_users()))


def _user(ctx: Context, name: str) -> Any:
    user = ctx.broker.access.user(name)
    if user is None:
        raise json_error(404, "Object Not Found", f"no user '{name}'")
    return user


async def get_user(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    return web.json_response(user_row(ctx.broker, _user(ctx, request.match_info["user"])))


async def put_user(request: web.Request) -> web.Response:
    """RabbitMQ's PUT /api/users/{name}: ``password``, or ``password_hash`` with
    ``hashing_algorithm``; ``tags`` as a list or a comma-separated string."""
    ctx = Context(request)
    require_admin(ctx.principal)
    name = request.match_info["user"]
    body = await body_json(request)
    existed = ctx.broker.access.user(name) is not None
    try:
        if "password" in body:
            wait = ctx.broker.access.add_user(name, str(body["password"]),
                                              tags=_tags(body.get("tags")))
        elif "password_hash" in body:
            wait = ctx.broker.access.add_user(
                name, password_hash=str(body["password_hash"]),
                hashing_algorithm=body.get("hashing_algorithm") or "rabbit_password_hashing_sha256",
                tags=_tags(body.get("tags")))
        else:
            raise json_error(400, "bad_request", "password or password_hash is required")
    except ValueError as exc:
        raise json_error(400, "bad_request", f"user '{name}': {exc}")
    await stored(wait)
    return web.Response(status=204 if existed else 201)


async def delete_user(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    name = _user(ctx, request.match_info["user"]).name
    await stored(ctx.broker.access.delete_user(name))
    return web.Response(status=204)


# ====================================================================== permissions
def permission_rows(broker: Any) -> list[dict]:
    return [{"user": user, "vhost": vhost, "configure": p.configure, "write": p.write,
             "read": p.read} for user, vhost, p in broker.access.list_permissions()]


def topic_permission_rows(broker: Any) -> list[dict]:
    return [{"user": user, "vhost": vhost, "exchange": exchange, "write": p.write,
             "read": p.read} for user, vhost, exchange, p in
            broker.access.list_topic_permissions()]


async def list_permissions(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    return await listing.respond(request, permission_rows(ctx.broker))


async def list_topic_permissions(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    return await listing.respond(request, topic_permission_rows(ctx.broker))


def _vhost_and_user(ctx: Context, request: web.Request) -> tuple[str, str]:
    vhost, user = request.match_info["vhost"], request.match_info["user"]
    if vhost not in ctx.broker.vhosts:
        raise json_error(404, "Object Not Found", f"vhost '{vhost}' not found")
    _user(ctx, user)
    return vhost, user


async def put_permission(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    vhost, user = _vhost_and_user(ctx, request)
    body = await body_json(request)
    existed = (user, vhost) in {(u, v) for u, v, _ in ctx.broker.access.list_permissions()}
    try:
        wait = ctx.broker.access.set_permissions(user, vhost, str(body.get("configure", "")),
                                                 str(body.get("write", "")),
                                                 str(body.get("read", "")))
    except re.error as exc:
        raise json_error(400, "bad_request", f"bad permission expression: {exc}")
    await stored(wait)
    return web.Response(status=204 if existed else 201)


async def delete_permission(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    vhost, user = _vhost_and_user(ctx, request)
    await stored(ctx.broker.access.clear_permissions(user, vhost))
    return web.Response(status=204)


async def put_topic_permission(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    vhost, user = _vhost_and_user(ctx, request)
    body = await body_json(request)
    if not body.get("exchange"):
        raise json_error(400, "bad_request", "exchange is required")
    try:
        wait = ctx.broker.access.set_topic_permissions(user, vhost, str(body["exchange"]),
                                                       str(body.get("write", "")),
                                                       str(body.get("read", "")))
    except re.error as exc:
        raise json_error(400, "bad_request", f"bad permission expression: {exc}")
    await stored(wait)
    return web.Response(status=201)


async def put_vhost(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    name = request.match_info["vhost"]
    existed = name in ctx.broker.vhosts
    if not existed:
        await stored(ctx.broker.add_vhost(name))
    return web.Response(status=204 if existed else 201)


# ====================================================================== connections
def _visible_connections(ctx: Context) -> list:
    return [c for c in ctx.connections()
            if ctx.principal.sees_everything or c.user_name == ctx.principal.name]


async def list_connections(request: web.Request) -> web.Response:
    ctx = Context(request)
    return await listing.respond(request, (c.info() for c in _visible_connections(ctx)))


def _connection(ctx: Context, name: str) -> Any:
    for conn in _visible_connections(ctx):
        if conn.name == name:
            return conn
    raise json_error(404, "Object Not Found", "Not Found")


async def get_connection(request: web.Request) -> web.Response:
    ctx = Context(request)
    return web.json_response(_connection(ctx, request.match_info["name"]).info())


async def close_connection(request: web.Request) -> web.Response:
    """DELETE /api/connections/{name}; the ``X-Reason`` header is the text the client gets."""
    ctx = Context(request)
    conn = _connection(ctx, request.match_info["name"])
    if not ctx.principal.is_admin and conn.user_name != ctx.principal.name:
        raise json_error(403, "not_authorised", "only administrators close others' connections")
    conn.force_close(request.headers.get("X-Reason") or "Closed via management plugin")
    return web.Response(status=204)


def _channels(ctx: Context) -> list[dict]:
    rows = []
    for conn in _visible_connections(ctx):
        describe = getattr(conn.session, "channels_info", None)
        for channel in describe() if describe is not None else []:
            rows.append({**channel, "name": f"{conn.name} ({channel['number']})",
                         "user": conn.user_name or "", "vhost": conn.vhost_name or "",
                         "connection_details": {"name": conn.name, "peer_host": conn.peer[0],
                                                "peer_port": conn.peer[1]}})
    return rows


async def list_channels(request: web.Request) -> web.Response:
    return await listing.respond(request, _channels(Context(request)))


async def list_consumers(request: web.Request) -> web.Response:
    ctx = Context(request)
    vhosts = ctx.visible_vhosts(request.match_info.get("vhost"))
    return await listing.respond(request, (c for v in vhosts for c in introspect.consumers(v)))


# ====================================================================== Manifold's own
def _mqtt_server(ctx: Context) -> Any:
    service = ctx.service
    return service.servers.get("mqtt") if service is not None else None


async def mqtt_sessions(request: web.Request) -> web.Response:
    ctx = Context(request)
    server = _mqtt_server(ctx)
    rows = server.sessions_info() if server is not None else []
    return await listing.respond(request, (r for r in rows if ctx.principal.can_see_vhost(r["vhost"])))


async def mqtt_retained(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_read(ctx.principal, "/")
    server = _mqtt_server(ctx)
    return await listing.respond(request, server.retained_info() if server is not None else [])


async def streams(request: web.Request) -> web.Response:
    ctx = Context(request)
    rows = []
    for vhost in ctx.visible_vhosts(request.match_info.get("vhost")):
        for queue in list(vhost.queues.values()):
            if getattr(queue, "kind", "") == "stream":
                info = introspect.queue_info(vhost.name, queue)
                rows.append({k: info[k] for k in ("name", "vhost", "messages", "message_bytes",
                                                   "first_offset", "last_offset", "readers",
                                                   "consumers")})
    return await listing.respond(request, rows)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/overview", overview)
    r.add_get("/api/whoami", whoami)
    r.add_get("/api/manifold/ping", ping)
    r.add_get("/api/manifold/history", history)
    r.add_get("/api/manifold/mqtt/sessions", mqtt_sessions)
    r.add_get("/api/manifold/mqtt/retained", mqtt_retained)
    r.add_get("/api/manifold/streams", streams)
    r.add_get("/api/manifold/streams/{vhost}", streams)
    r.add_get("/api/vhosts", list_vhosts)
    r.add_get("/api/vhosts/{vhost}", get_vhost)
    r.add_put("/api/vhosts/{vhost}", put_vhost)
    r.add_get("/api/aliveness-test/{vhost}", aliveness)
    r.add_get("/api/health/checks/alarms", alarms)
    r.add_get("/api/users", list_users)
    r.add_get("/api/users/{user}", get_user)
    r.add_put("/api/users/{user}", put_user)
    r.add_delete("/api/users/{user}", delete_user)
    r.add_get("/api/permissions", list_permissions)
    r.add_put("/api/permissions/{vhost}/{user}", put_permission)
    r.add_delete("/api/permissions/{vhost}/{user}", delete_permission)
    r.add_get("/api/topic-permissions", list_topic_permissions)
    r.add_put("/api/topic-permissions/{vhost}/{user}", put_topic_permission)
    r.add_get("/api/connections", list_connections)
    r.add_get("/api/connections/{name}", get_connection)
    r.add_delete("/api/connections/{name}", close_connection)
    r.add_get("/api/channels", list_channels)
    r.add_get("/api/consumers", list_consumers)
    r.add_get("/api/consumers/{vhost}", list_consumers)

