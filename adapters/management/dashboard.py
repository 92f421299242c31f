"""The web dashboard: static HTML, CSS and plain JavaScript modules, no build step.

``/`` is the page itself (charts and the queue table, no clicks needed); its scripts call the same
management API with the credentials the user typed into the sign-in form (kept in the tab's
sessionStorage). Charts are SVG drawn by ``static/chart.js``.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/index.html", index)
    app.router.add_static("/static/", STATIC, append_version=False)
