"""RabbitMQ's error bodies: ``{"error": ..., "reason": ...}`` with the matching HTTP status."""
from __future__ import annotations

import json

from aiohttp import web

from manifold.broker.errors import BrokerError

_STATUS_ERROR = {400: "bad_request", 401: "not_authorised", 403: "not_authorised",
                 404: "Object Not Found", 405: "method_not_allowed", 406: "precondition_failed",
                 409: "conflict", 503: "service_unavailable"}

_EXCEPTIONS = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
               404: web.HTTPNotFound, 405: web.HTTPMethodNotAllowed, 409: web.HTTPConflict,
               503: web.HTTPServiceUnavailable}


class _PreconditionFailed(web.HTTPClientError):
    status_code = 406


def json_error(status: int, error: str | None, reason: str,
               headers: dict | None = None) -> web.HTTPException:
    """An HTTP exception carrying RabbitMQ's JSON error body (raise it from a handler)."""
    body = json.dumps({"error": error or _STATUS_ERROR.get(status, "error"), "reason": reason})
    cls = _EXCEPTIONS.get(status, _PreconditionFailed if status == 406 else web.HTTPBadRequest)
    if cls is web.HTTPMethodNotAllowed:
        return cls("", [], text=body, content_type="application/json", headers=headers)
    return cls(text=body, content_type="application/json", headers=headers)


def from_broker_error(exc: BrokerError) -> web.HTTPException:
    """Map a wire-neutral core error to the status RabbitMQ's API answers with."""
    status = {404: 404, 403: 403}.get(exc.amqp_code, 400)
    return json_error(status, exc.name.lower(), exc.text)
