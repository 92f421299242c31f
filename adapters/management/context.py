"""What every handler needs: the broker, the signed-in principal, the sampler, JSON helpers."""
from __future__ import annotations

import base64
import datetime
import decimal
import json
from typing import Any

from aiohttp import web

from manifold.broker.service import SERVICE_KEY

from .auth import Principal, require_read, require_write
from .errors import json_error

BROKER = web.AppKey("broker", object)
SAMPLER = web.AppKey("sampler", object)
PRINCIPAL = web.RequestKey("principal", Principal)


class Context:
    def __init__(self, request: web.Request):
        app = request.app
        self.request = request
        self.broker = app[BROKER]
        self.sampler = app[SAMPLER]
        self.principal: Principal = request[PRINCIPAL]

    @property
    def service(self) -> Any:
        return self.request.app.get(SERVICE_KEY)

    def connections(self) -> list:
        service = self.service
        return list(service.connections) if service is not None else []

    def visible_vhosts(self, name: str | None = None) -> list:
        """The vhosts this principal may see; only ``name`` when given (404 if it is unknown)."""
        if name is not None:
            vhost = self.broker.vhosts.get(name)
            if vhost is None:
                raise json_error(404, "Object Not Found", f"vhost '{name}' not found")
            require_read(self.principal, name)
            return [vhost]
        return [v for v in self.broker.vhosts.values() if self.principal.can_see_vhost(v.name)]

    def _vhost(self) -> Any:
        name = self.request.match_info["vhost"]
        vhost = self.broker.vhosts.get(name)
        if vhost is None:
            raise json_error(404, "Object Not Found", f"vhost '{name}' not found")
        return vhost

    def vhost_for_read(self) -> Any:
        vhost = self._vhost()
        require_read(self.principal, vhost.name)
        return vhost

    def vhost_for_write(self) -> Any:
        vhost = self._vhost()
        require_write(self.principal, vhost.name)
        return vhost

    def grant(self, vhost: Any) -> Any:
        """The user's configure/write/read rights in ``vhost`` (broker/access.py Grant): each
        operation is checked as the same operation over AMQP would be."""
        return self.broker.grant(self.principal.user, vhost.name)


async def body_json(request: web.Request) -> dict:
    """The request's JSON object ({} for an empty body); 400 with a reason otherwise."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise json_error(400, "bad_request", f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        raise json_error(400, "bad_request", "body must be a JSON object")
    return body


def jsonable(value: Any) -> Any:
    """AMQP field-table values (bytes, timestamps, decimals) as JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value
