"""Local endpoints for SNS delivery tests: an aiohttp HTTP server and an aiosmtpd SMTP server,
each on 127.0.0.1 with a kernel-chosen port, in its own thread."""
from __future__ import annotations

import asyncio
import email
import threading
from email import policy

from aiohttp import web
from aiosmtpd.smtp import SMTP


class HttpEndpoint:
    """Records every POST; answers ``status_for(n)`` to the n-th (1-based) request."""

    def __init__(self, status_for=lambda n: 200):
        self.status_for = status_for
        self.requests: list[tuple[dict, str]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def of_type(self, kind: str) -> list[tuple[dict, str]]:
        return [(h, b) for h, b in list(self.requests) if h.get("x-amz-sns-message-type") == kind]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def handler(request: web.Request) -> web.Response:
            body = (await request.read()).decode()
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append((headers, body))
            return web.Response(status=self.status_for(len(self.requests)))

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hook", handler)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            self.port = self.runner.addresses[0][1]

        self.loop.run_until_complete(start())
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _Collect:
    def __init__(self):
        self.mails: list = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.mails.append((envelope.rcpt_tos, email.message_from_bytes(
            envelope.content, policy=policy.default)))
        return "250 OK"


class SmtpServer:
    """aiosmtpd's SMTP protocol on a kernel-chosen port (its Controller needs a fixed port)."""

    def __init__(self):
        self.handler = _Collect()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(self.loop.create_server(
            lambda: SMTP(self.handler), "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def mails(self) -> list:
        return self.handler.mails

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
