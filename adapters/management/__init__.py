"""The management adapter: RabbitMQ's HTTP API, ``/metrics`` and the dashboard on one aiohttp app.

``broker/service.py`` finds this package by name and serves ``make_http_app(broker, settings)`` on
``[management] port`` (15672), putting the Service in ``app[SERVICE_KEY]`` (its open connections).
Modules: auth (basic auth, tags), api (queues, exchanges, bindings, publish, get), api_admin
(overview, users, connections...), definitions (import/export), metrics (Prometheus), stats (rates
and history), listing (paging, sorting, columns), dashboard (the web page), cli (``manifold``
subcommands that call this API).
"""
from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from manifold.broker.errors import BrokerError

from . import api, api_admin, dashboard, definitions, metrics
from .auth import PUBLIC_PATHS, PUBLIC_PREFIXES, authenticate
from .context import BROKER, PRINCIPAL, SAMPLER
from .errors import from_broker_error, json_error
from .stats import Sampler

log = logging.getLogger("manifold.management")


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Sign in every API request; turn core errors and bugs into JSON errors, never a bare 500
    page (the client gets a reason, the log gets the traceback)."""
    path = request.path
    public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
    try:
        if not public:
            request[PRINCIPAL] = await authenticate(request.app[BROKER], request)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404 and exc.content_type != "application/json":
            raise json_error(404, "Object Not Found", "Not Found")
        if exc.status == 405 and exc.content_type != "application/json":
            raise json_error(405, "method_not_allowed", f"{request.method} not allowed on "
                                                        f"{path}")
        raise
    except BrokerError as exc:
        raise from_broker_error(exc)
    except Exception:
        log.exception("management API error on %s %s", request.method, path)
        raise json_error(500, "internal_error", "internal error in the management API; see "
                                                "the broker log")


def make_http_app(broker: Any, settings: Any) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024 * 1024)
    app[BROKER] = broker
    app[SAMPLER] = Sampler(broker, interval_s=max(0.2, settings.management.sample_interval_s))
    api_admin.add_routes(app)
    api.add_routes(app)
    definitions.add_routes(app)
    metrics.add_routes(app)
    dashboard.add_routes(app)

    async def start_sampler(app: web.Application) -> None:
        app[SAMPLER].start()

    async def stop_sampler(app: web.Application) -> None:
        await app[SAMPLER].stop()

    app.on_startup.append(start_sampler)
    app.on_cleanup.append(stop_sampler)
    return app
