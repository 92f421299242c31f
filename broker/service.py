"""The daemon's lifecycle: start the core and a listener per protocol, stop them on a signal.

Adapters are found by module name, so the core package never imports an adapter:
``manifold.adapters.<protocol>`` exposes ``make_server`` (a byte-stream protocol on the shared
transport), and an HTTP adapter (``aws``, ``management``) exposes ``make_http_app`` (an aiohttp
application). An adapter package that does not exist opens no port; one that fails to import
stops start-up with its error.
"""
from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import logging
import os
import resource
import shutil
import signal
import ssl
from typing import Any

from aiohttp import web

from manifold.config.settings import ConfigError, Settings
from manifold.persistence.filestore import FileStore

from .core import Broker
from .tls import server_context
from .transport import Connection, ProtocolServer

log = logging.getLogger("manifold")

#: CPython starts a young-generation collection every 700 net new container objects (its
#: default), and every so often an older one that traverses everything alive, start-up objects
#: included. A broker allocates a handful of objects per message (entry, delivery, effects,
#: futures) and frees nearly all of them by reference counting; the messages in flight (an
#: unconfirmed window, a prefetch) survive and are traversed again as they age. In the
#: persistent-confirm benchmark 11 % of the event loop's samples were in the collector
#: (py-spy --native); after ``gc.freeze()`` 3.4 %, with this threshold as well 1.5 %
#: (benchmarks/RESULTS.md). Collections only find reference cycles, which are rare here; this
#: many net new objects (a few MB at most) may wait for one.
GC_YOUNG_THRESHOLD = 10_000

PROTOCOLS = ("amqp", "mqtt", "stomp")
#: what the WebSocket listeners (ws, wss) carry
WEBSOCKET_PROTOCOLS = ("mqtt", "stomp")
#: settings section -> adapter package serving HTTP on that section's port
HTTP_LISTENERS = {"http": "aws", "management": "management"}
#: where an HTTP adapter's application finds the Service (its open connections, ports, servers)
SERVICE_KEY: web.AppKey = web.AppKey("manifold.service", object)


def load_adapter(name: str, entry_point: str = "make_server") -> Any | None:
    module_name = f"manifold.adapters.{name}"
    if importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    return module if hasattr(module, entry_point) else None


class Service:
    def __init__(self, settings: Settings, broker: Broker | None = None):
        self.settings = settings
        persistence = settings.persistence
        self.broker = broker or Broker(settings, store=FileStore(
            settings.server.data_dir, fsync=persistence.fsync,
            fsync_interval_ms=persistence.fsync_interval_ms,
            segment_bytes=persistence.segment_bytes, max_open_files=persistence.max_open_files))
        self.connections: set[Connection] = set()
        self.listeners: dict[str, asyncio.base_events.Server] = {}
        self.servers: dict[str, ProtocolServer] = {}
        self.http_runners: dict[str, web.AppRunner] = {}
        #: protocol -> port actually bound (useful with port 0)
        self.ports: dict[str, int] = {}
        self.tls_context: ssl.SSLContext | None = None
        #: the HTTP listeners' context with [tls] https
        self.https_context: ssl.SSLContext | None = None
        self._stopped = asyncio.Event()
        self._disk_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        raise_open_files_limit(self.settings.server.open_files_limit)
        os.makedirs(self.settings.server.data_dir, exist_ok=True)
        await self.broker.start()
        self.broker.memory.subscribe(self._memory_alarm)
        self._check_disk()
        server_settings = self.settings.server
        tls = self.settings.tls
        if tls.cert_file:
            self.tls_context = server_context(tls)
        for protocol in PROTOCOLS:
            section = getattr(self.settings, protocol)
            adapter = load_adapter(protocol)
            if not section.enabled or adapter is None:
                continue
            server = adapter.make_server(self.broker, self.settings)
            self.servers[protocol] = server
            await self._listen(protocol, section.port, server)
            tls_port = getattr(tls, f"{protocol}s_port")
            if self.tls_context is not None and tls_port:
                await self._listen(f"{protocol}s", tls_port, server, tls=True)
        ws = self.settings.websocket
        if ws.enabled and any(p in self.servers for p in WEBSOCKET_PROTOCOLS):
            await self._listen("ws", ws.port, None)
            if self.tls_context is not None and tls.wss_port:
                await self._listen("wss", tls.wss_port, None, tls=True)
        for section_name, adapter_name in HTTP_LISTENERS.items():
            await self._start_http(section_name, adapter_name)
        listening = ", ".join(f"{p} {server_settings.bind}:{port}" for p, port in self.ports.items())
        log.info("manifold listening: %s; data dir %s", listening or "no protocols",
                 os.path.abspath(server_settings.data_dir))

    async def _listen(self, name: str, port: int, server: ProtocolServer | None,
                      tls: bool = False) -> None:
        """A listener named ``name`` (amqp, amqps, ws, wss...). ``server`` None: WebSocket, whose
        handshake picks the MQTT or STOMP server."""
        server_settings = self.settings.server
        websocket = self.settings.websocket if server is None else None

        def factory() -> Connection:
            return Connection(name, server.new_session() if server is not None else None,
                              self.connections,
                              high_water_bytes=server_settings.output_high_water_bytes,
                              low_water_bytes=server_settings.output_low_water_bytes,
                              memory=self.broker.memory,
                              # read per connection: a SIGHUP reload applies to new ones
                              tls_context=self.tls_context if tls else None,
                              handshake_timeout_s=self.settings.tls.handshake_timeout_s,
                              websocket=websocket, open_session=self._websocket_session)

        listener = await asyncio.get_running_loop().create_server(
            factory, server_settings.bind, port, reuse_address=True, backlog=1024)
        self.listeners[name] = listener
        self.ports[name] = listener.sockets[0].getsockname()[1]

    def _websocket_session(self, protocol: str) -> Any:
        server = self.servers.get(protocol)
        return server.new_session() if server is not None else None

    def reload_tls(self) -> bool:
        """Load the certificate and key again (SIGHUP): new connections use them, open ones keep
        theirs. A file that cannot be loaded keeps the old certificate and logs why."""
        if self.tls_context is None:
            return False
        try:
            self.tls_context = server_context(self.settings.tls)
            if self.https_context is not None:
                tls = self.settings.tls
                self.https_context.load_cert_chain(tls.cert_file, tls.key_file or None)
        except (ConfigError, OSError) as exc:  # ssl.SSLError is an OSError
            log.error("TLS reload failed, keeping the old certificate: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.settings.tls.cert_file)
        return True

    async def _start_http(self, section_name: str, adapter_name: str) -> None:
        section = getattr(self.settings, section_name)
        adapter = load_adapter(adapter_name, "make_http_app")
        if not section.enabled or adapter is None:
            return
        app = adapter.make_http_app(self.broker, self.settings)
        app[SERVICE_KEY] = self
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        https = self.tls_context is not None and self.settings.tls.https
        if https and self.https_context is None:
            # One context for the HTTP listeners, reloaded in place on SIGHUP (aiohttp keeps the
            # object it was given; new handshakes see the new certificate).
            self.https_context = server_context(self.settings.tls)
        site = web.TCPSite(runner, self.settings.server.bind, section.port, reuse_address=True,
                           backlog=1024, ssl_context=self.https_context if https else None)
        await site.start()
        self.http_runners[section_name] = runner
        self.ports[section_name] = runner.addresses[0][1]

    def _memory_alarm(self, blocking: bool) -> None:
        memory = self.broker.memory
        log.warning("resource alarm %s: memory %s (%d bytes of message bodies, high water %d), "
                    "disk %s", "set" if blocking else "cleared",
                    "over" if memory.alarm else "ok", memory.used_bytes,
                    memory.high_water_bytes, "low" if memory.disk_alarm else "ok")
        for conn in list(self.connections):
            if conn.publishing:
                conn.set_blocked(blocking)

    def _check_disk(self) -> None:
        """The disk alarm: publishers wait while the data directory's file system has less free
        space than ``disk_free_limit_bytes`` (RabbitMQ's disk_free_limit)."""
        server = self.settings.server
        if not server.disk_free_limit_bytes and not server.disk_free_limit_ratio:
            return
        try:
            usage = shutil.disk_usage(server.data_dir)
        except OSError as exc:
            log.error("cannot read free disk space of %s: %s", server.data_dir, exc)
        else:
            limit = max(server.disk_free_limit_bytes,
                        int(usage.total * server.disk_free_limit_ratio))
            low = usage.free < limit
            if low != self.broker.memory.disk_alarm:
                log.warning("disk alarm %s: %d bytes free on %s (limit %d)",
                            "set" if low else "cleared", usage.free, server.data_dir, limit)
            self.broker.memory.set_disk_alarm(low)
        self._disk_timer = asyncio.get_running_loop().call_later(
            server.disk_check_interval_ms / 1000, self._check_disk)

    async def stop(self) -> None:
        """Stop accepting, say goodbye in each protocol's words, flush, close."""
        if self._disk_timer is not None:
            self._disk_timer.cancel()
        for listener in self.listeners.values():
            listener.close()
        for conn in list(self.connections):
            if conn.session is None:  # still in its TLS or WebSocket handshake
                conn.abort("server shutdown")
                continue
            try:
                conn.session.going_away()
            except Exception:  # a broken session must not stop the shutdown of the others
                log.exception("error while closing %s#%d", conn.protocol, conn.id)
                conn.abort("server shutdown")
        deadline = asyncio.get_running_loop().time() + self.settings.server.shutdown_grace_s
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort("server shutdown")
        for runner in self.http_runners.values():
            await runner.cleanup()
        for server in self.servers.values():
            await server.close()
        await self.broker.close()
        self._stopped.set()

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
        await self.start()
        tune_garbage_collector()
        await stop.wait()
        log.info("manifold shutting down")
        await self.stop()


def tune_garbage_collector() -> None:
    """Once the daemon has started (modules imported, definitions and messages recovered):
    collect, then freeze what exists (``gc.freeze``: the collector no longer traverses the
    start-up objects; reference counting still frees them), and make young collections rarer
    (GC_YOUNG_THRESHOLD). The process's collector is the daemon's to set, so only
    ``run_until_signal`` calls this; a Service embedded in tests leaves it alone."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def raise_open_files_limit(wanted: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit): every client
    connection is a descriptor. The store itself needs only a bounded few."""
    if not wanted:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", target, exc)
