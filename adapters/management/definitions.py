"""RabbitMQ's definitions format, both ways: ``GET /api/definitions`` exports, ``POST`` imports.

Users travel with ``password_hash`` and ``hashing_algorithm`` (rabbit_password_hashing_sha256,
sha512 and md5 are verified at login, so a migrated user keeps their password; Manifold's own
scrypt hashes export as ``manifold_scrypt``, which RabbitMQ does not know). Vhosts, vhost limits
(``vhost-limits`` parameters), permissions and topic permissions are applied through
broker/access.py. What Manifold cannot honour (global parameters, other parameters, user limits,
policy keys without an equivalent, policies for queues declared later) is listed in the import's
answer and logged, never silently dropped.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from manifold.broker import introspect
from manifold.broker.errors import BrokerError
from manifold.broker.vhost import STANDARD_EXCHANGES

from . import listing
from .api_admin import (PRODUCT_VERSION, VERSION, _tags, permission_rows, stored,
                        topic_permission_rows, user_row)
from .auth import require_admin
from .context import Context, body_json
from .errors import json_error

log = logging.getLogger("manifold.management")

_STANDARD = {"", *(name for name, _ in STANDARD_EXCHANGES)}
#: RabbitMQ policy keys -> the queue argument Manifold applies as the queue's policy
POLICY_KEYS = {"message-ttl": "x-message-ttl", "expires": "x-expires",
               "max-length": "x-max-length", "max-length-bytes": "x-max-length-bytes",
               "overflow": "x-overflow", "dead-letter-exchange": "x-dead-letter-exchange",
               "dead-letter-routing-key": "x-dead-letter-routing-key",
               "delivery-limit": "x-delivery-limit", "queue-mode": "x-queue-mode",
               "consumer-timeout": "x-consumer-timeout"}


def export(ctx: Context, vhost_name: str | None = None) -> dict:
    broker = ctx.broker
    vhosts = ctx.visible_vhosts(vhost_name)
    queues, exchanges, bindings = [], [], []
    for vhost in vhosts:
        for queue in list(vhost.queues.values()):
            if queue.durable and queue.exclusive_owner is None:
                queues.append({"name": queue.name, "vhost": vhost.name, "durable": True,
                               "auto_delete": bool(queue.auto_delete),
                               "arguments": dict(queue.arguments)})
        for exchange in list(vhost.exchanges.values()):
            if exchange.name not in _STANDARD and exchange.durable:
                info = introspect.exchange_info(vhost.name, exchange)
                info.pop("user_who_performed_action", None)
                exchanges.append(info)
        for b in introspect.bindings(vhost):
            if b["source"] != "":
                bindings.append({k: b[k] for k in ("source", "vhost", "destination",
                                                    "destination_type", "routing_key",
                                                    "arguments")})
    if vhost_name is not None:  # a single vhost's export carries no users or vhosts
        return {"rabbit_version": VERSION, "rabbitmq_version": VERSION,
                "product_name": "Manifold", "product_version": PRODUCT_VERSION,
                "parameters": [], "policies": [], "queues": _strip_vhost(queues),
                "exchanges": _strip_vhost(exchanges), "bindings": _strip_vhost(bindings)}
    return {
        "rabbit_version": VERSION, "rabbitmq_version": VERSION, "product_name": "Manifold",
        "product_version": PRODUCT_VERSION,
        "users": [user_row(broker, u) for u in broker.access.list_users()],
        "vhosts": [{"name": v.name, "limits": [], "metadata": {"description": "", "tags": []}}
                   for v in vhosts],
        "permissions": permission_rows(broker),
        "topic_permissions": topic_permission_rows(broker),
        "parameters": _limit_parameters(broker, vhosts),
        "global_parameters": [], "policies": [], "queues": queues, "exchanges": exchanges,
        "bindings": bindings,
    }


def _limit_parameters(broker: Any, vhosts: list) -> list[dict]:
    """Vhost limits as RabbitMQ exports them: a ``vhost-limits`` parameter per vhost."""
    out = []
    for vhost in vhosts:
        limits = broker.access.vhost_limits.get(vhost.name)
        value = {k: v for k, v in (("max-connections", getattr(limits, "max_connections", 0)),
                                   ("max-queues", getattr(limits, "max_queues", 0))) if v}
        if value:
            out.append({"value": value, "vhost": vhost.name, "component": "vhost-limits",
                        "name": "limits"})
    return out


def _strip_vhost(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "vhost"} for row in rows]


class Importer:
    """Applies one definitions document; collects what was done and what was not."""

    def __init__(self, broker: Any, default_vhost: str | None = None):
        self.broker = broker
        self.default_vhost = default_vhost
        self.counts: dict[str, int] = {}
        self.not_honoured: list[str] = []
        #: awaitables of the changes written to the access state log
        self.waits: list = []

    def skip(self, what: str) -> None:
        self.not_honoured.append(what)
        log.warning("definitions import: not honoured: %s", what)

    def done(self, section: str) -> None:
        self.counts[section] = self.counts.get(section, 0) + 1

    def _vhost(self, row: dict, section: str, label: str) -> Any:
        name = self.default_vhost or row.get("vhost", "/")
        vhost = self.broker.vhosts.get(name)
        if vhost is None:
            self.skip(f"{section} {label}: vhost '{name}' does not exist (list it in the "
                      "file's vhosts, or create it with PUT /api/vhosts/{name})")
        return vhost

    def run(self, doc: dict) -> None:
        for row in doc.get("vhosts") or []:
            name = row.get("name")
            if not isinstance(name, str) or not name:
                self.skip(f"vhost {name!r}: no name")
                continue
            if name not in self.broker.vhosts:
                self.wait(self.broker.add_vhost(name))
            self.done("vhosts")
        for row in doc.get("parameters") or []:
            self._parameter(row)
        for row in doc.get("global_parameters") or []:
            self.skip(f"global parameter '{row.get('name', '?')}': not supported")
        for row in doc.get("users") or []:
            self._user(row)
        for row in doc.get("permissions") or []:
            self._permission(row)
        for row in doc.get("topic_permissions") or []:
            self._topic_permission(row)
        for row in doc.get("exchanges") or []:
            self._exchange(row)
        for row in doc.get("queues") or []:
            self._queue(row)
        for row in doc.get("bindings") or []:
            self._binding(row)
        for row in doc.get("policies") or []:
            self._policy(row)

    def wait(self, awaitable: Any) -> None:
        if awaitable is not None:
            self.waits.append(awaitable)

    def _parameter(self, row: dict) -> None:
        vhost, component = row.get("vhost", "/"), row.get("component")
        value = row.get("value") or {}
        if component != "vhost-limits" or not isinstance(value, dict):
            self.skip(f"parameter '{row.get('name', '?')}' ({component}): not supported")
            return
        unknown = sorted(set(value) - {"max-connections", "max-queues"})
        if unknown:
            self.skip(f"vhost '{vhost}' limits {', '.join(unknown)}: not supported")
        try:
            self.wait(self.broker.add_vhost(vhost, int(value.get("max-connections", 0) or 0),
                                            int(value.get("max-queues", 0) or 0)))
        except (TypeError, ValueError):
            self.skip(f"vhost '{vhost}' limits {value!r}: not integers")
            return
        self.done("parameters")

    def _user(self, row: dict) -> None:
        access = self.broker.access
        name = row.get("name", "")
        tags = _tags(row.get("tags"))
        if row.get("limits"):
            self.skip(f"user '{name}': limits {sorted(row['limits'])} not supported")
        try:
            if row.get("password") is not None:
                self.wait(access.add_user(name, str(row["password"]), tags=tags))
            elif not row.get("password_hash"):
                self.skip(f"user '{name}': no password_hash"
                          + (" (the existing user is kept)" if access.user(name) else ""))
                return
            else:
                self.wait(access.add_user(name, password_hash=row["password_hash"],
                                          hashing_algorithm=row.get("hashing_algorithm")
                                          or "rabbit_password_hashing_sha256", tags=tags))
        except ValueError as exc:
            self.skip(f"user '{name}': {exc}")
            return
        self.done("users")

    def _permission(self, row: dict) -> None:
        user, vhost = row.get("user", ""), row.get("vhost", "/")
        if self.broker.access.user(user) is None or vhost not in self.broker.vhosts:
            self.skip(f"permission of '{user}' on vhost '{vhost}': unknown user or vhost")
            return
        try:
            self.wait(self.broker.access.set_permissions(
                user, vhost, str(row.get("configure", "")), str(row.get("write", "")),
                str(row.get("read", ""))))
        except re.error as exc:
            self.skip(f"permission of '{user}' on vhost '{vhost}': bad expression: {exc}")
            return
        self.done("permissions")

    def _topic_permission(self, row: dict) -> None:
        user, vhost = row.get("user", ""), row.get("vhost", "/")
        if self.broker.access.user(user) is None or vhost not in self.broker.vhosts:
            self.skip(f"topic permission of '{user}' on vhost '{vhost}': unknown user or vhost")
            return
        try:
            self.wait(self.broker.access.set_topic_permissions(
                user, vhost, str(row.get("exchange", "")), str(row.get("write", "")),
                str(row.get("read", ""))))
        except re.error as exc:
            self.skip(f"topic permission of '{user}' on vhost '{vhost}': bad expression: {exc}")
            return
        self.done("topic_permissions")

    def _exchange(self, row: dict) -> None:
        name = row.get("name", "")
        vhost = self._vhost(row, "exchange", f"'{name}'")
        if vhost is None:
            return
        try:
            vhost.declare_exchange(name, row.get("type", "direct"),
                                   durable=listing.truthy(row.get("durable", True)),
                                   auto_delete=listing.truthy(row.get("auto_delete", False)),
                                   internal=listing.truthy(row.get("internal", False)),
                                   arguments=row.get("arguments") or {})
        except BrokerError as exc:
            self.skip(f"exchange '{name}': {exc.text}")
            return
        self.done("exchanges")

    def _queue(self, row: dict) -> None:
        name = row.get("name", "")
        vhost = self._vhost(row, "queue", f"'{name}'")
        if vhost is None:
            return
        arguments = dict(row.get("arguments") or {})
        if row.get("type") and "x-queue-type" not in arguments:
            arguments["x-queue-type"] = row["type"]
        try:
            vhost.declare_queue(name, durable=listing.truthy(row.get("durable", True)),
                                auto_delete=listing.truthy(row.get("auto_delete", False)),
                                arguments=arguments)
        except BrokerError as exc:
            self.skip(f"queue '{name}': {exc.text}")
            return
        self.done("queues")

    def _binding(self, row: dict) -> None:
        source, dest = row.get("source", ""), row.get("destination", "")
        label = f"'{source}' -> '{dest}'"
        vhost = self._vhost(row, "binding", label)
        if vhost is None:
            return
        try:
            if row.get("destination_type", "queue") == "queue":
                vhost.bind_queue(dest, source, row.get("routing_key", ""),
                                 row.get("arguments") or {})
            else:
                vhost.bind_exchange(dest, source, row.get("routing_key", ""),
                                    row.get("arguments") or {})
        except BrokerError as exc:
            self.skip(f"binding {label}: {exc.text}")
            return
        self.done("bindings")

    def _policy(self, row: dict) -> None:
        """Applied once, as each matching existing queue's policy; queues declared later do
        not pick it up (reported)."""
        name = row.get("name", "?")
        vhost = self._vhost(row, "policy", f"'{name}'")
        if vhost is None:
            return
        definition = row.get("definition") or {}
        unknown = sorted(k for k in definition if k not in POLICY_KEYS)
        if unknown:
            self.skip(f"policy '{name}': keys {', '.join(unknown)} have no equivalent")
        policy = {POLICY_KEYS[k]: v for k, v in definition.items() if k in POLICY_KEYS}
        try:
            pattern = re.compile(row.get("pattern", ""))
        except re.error as exc:
            self.skip(f"policy '{name}': bad pattern: {exc}")
            return
        applied = 0
        if policy and row.get("apply-to", "all") in ("all", "queues"):
            for queue in list(vhost.queues.values()):
                if pattern.search(queue.name) and hasattr(queue, "set_policy"):
                    try:
                        vhost.set_queue_policy(queue.name, policy)
                        applied += 1
                    except BrokerError as exc:
                        self.skip(f"policy '{name}' on queue '{queue.name}': {exc.text}")
        self.skip(f"policy '{name}': applied to {applied} existing queue(s) only; queues "
                  "declared later do not get it")
        self.done("policies")


async def get_definitions(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    vhost = request.match_info.get("vhost")
    headers = {}
    if "download" in request.query:
        headers["Content-Disposition"] = f'attachment; filename="{request.query["download"]}"'
    return web.json_response(export(ctx, vhost), headers=headers)


async def post_definitions(request: web.Request) -> web.Response:
    ctx = Context(request)
    require_admin(ctx.principal)
    vhost = request.match_info.get("vhost")
    if vhost is not None and vhost not in ctx.broker.vhosts:
        raise json_error(404, "Object Not Found", f"vhost '{vhost}' not found")
    doc = await body_json(request)
    importer = Importer(ctx.broker, vhost)
    importer.run(doc)
    for wait in importer.waits:  # answered once the users and permissions are on disk
        await stored(wait)
    return web.json_response({"imported": importer.counts,
                              "not_honoured": importer.not_honoured})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/definitions", get_definitions)
    r.add_post("/api/definitions", post_definitions)
    r.add_get("/api/definitions/{vhost}", get_definitions)
    r.add_post("/api/definitions/{vhost}", post_definitions)
