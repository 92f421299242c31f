"""The one ``asyncio.Protocol`` every adapter's connections run on.

It owns what all three protocols need the same way: a bounded output buffer (above the high-water
mark the connection stops reading its client and its consumers stop getting deliveries, past a hard
limit it is dropped as a slow consumer), a keep-alive timer (read timeout and heartbeat sending),
and a close reason for every connection that ends (nats-server ``ClosedState``). Everything
protocol-specific lives in the adapter's session, which sees only this small surface.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from typing import Any, Callable, Protocol

from .tls import TlsLayer
from .websocket import WebSocketLayer

log = logging.getLogger("manifold.connection")

_ids = itertools.count(1)


class Session(Protocol):
    """What an adapter implements per connection."""

    def connection_made(self, conn: "Connection") -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def connection_lost(self) -> None: ...
    def going_away(self) -> None:
        """The server is shutting down: tell the client in the protocol's words, then close."""
    def resume_writing(self) -> None:
        """The output buffer drained below the low-water mark: deliveries may resume."""
    def force_close(self, reason: str) -> None:
        """An operator closed this connection (management API): tell the client ``reason`` in
        the protocol's words (AMQP 320 CONNECTION_FORCED, MQTT 5 DISCONNECT, STOMP ERROR)."""
    # Optional: ``blocked(on: bool)``, told when the memory alarm stops or resumes reading this
    # publishing connection (AMQP sends Connection.Blocked / Unblocked).
    # Optional: ``channels_info()`` (a list of plain dicts) and ``client_properties`` for the
    # management API's connection and channel lists. Sessions call ``conn.opened(user, vhost)``
    # once logged in.


class ProtocolServer(Protocol):
    """What an adapter module's ``make_server(broker, settings)`` returns."""
    name: str

    def new_session(self) -> Session: ...
    async def close(self) -> None: ...


class Connection(asyncio.Protocol):
    def __init__(self, protocol: str, session: Session | None, registry: set, *,
                 high_water_bytes: int, low_water_bytes: int, memory: Any = None,
                 tls_context: ssl.SSLContext | None = None, handshake_timeout_s: float = 10.0,
                 websocket: Any = None,
                 open_session: Callable[[str], Session | None] | None = None):
        """``tls_context`` runs TLS under the session (broker/tls.py); ``websocket`` (the
        [websocket] settings) runs a WebSocket handshake and framing under it, and
        ``open_session(protocol)`` then makes the session for the protocol the handshake chose."""
        self.id = next(_ids)
        self.protocol = protocol
        self.session = session
        self.registry = registry
        self.high_water_bytes = high_water_bytes
        self.low_water_bytes = low_water_bytes
        # Past this the peer is not reading at all: drop it rather than grow without bound.
        self.hard_limit_bytes = max(high_water_bytes * 4, high_water_bytes + 1)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.writable = True
        self.closed = False
        self.close_reason: str | None = None
        self.last_read = 0.0
        self.last_write = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout_s: float | None = None
        self._on_read_timeout: Callable[[], None] | None = None
        self._send_interval_s: float | None = None
        self._send_heartbeat: Callable[[], None] | None = None
        self._reading_paused = False
        self._output_backlog = False
        #: the broker's MemoryBudget; its alarm stops reading connections that publish
        self.memory = memory
        self.publishing = False
        self.blocked = False
        #: called once when the connection ends (e.g. a vhost's connection-limit release)
        self._close_callbacks: list[Callable[[], None]] = []
        #: output held back by the login back-off (see hold_output), and a close waiting on it
        self._held: list | None = None
        self._held_close: str | None = None
        #: CN of the client's verified TLS certificate, None without one
        self.tls_identity: str | None = None
        # TLS / WebSocket layers under the session; the session starts once they are ready.
        self._tls = None
        self._tls_context = tls_context
        self._ws = None
        self._ws_settings = websocket
        self._open_session = open_session
        self._layered = tls_context is not None or websocket is not None
        self._handshake_timeout_s = handshake_timeout_s
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        #: the "open" line was logged (the session started): failed handshakes log one line
        self._announced = False
        #: where the client connected to (our address), and when (epoch milliseconds)
        self.local: tuple[str, int] = ("", 0)
        self.connected_at_ms = 0
        self.bytes_in = 0
        self.bytes_out = 0
        #: " over TLS 1.3", " over WebSocket": how the session's bytes arrive
        self.via = ""
        #: set by :meth:`opened` once the client logged in and chose a virtual host
        self.user_name: str | None = None
        self.vhost_name: str | None = None

    @property
    def name(self) -> str:
        """RabbitMQ's connection name: ``"peer_host:peer_port -> host:port"``."""
        return f"{self.peer[0]}:{self.peer[1]} -> {self.local[0]}:{self.local[1]}"

    def opened(self, user: str, vhost: str) -> None:
        """Sessions call this once the client is logged in to a virtual host: the "open" line
        (one per connection, with who and where; structured fields for --log-format json)."""
        self.user_name, self.vhost_name = user, vhost
        log.info("open %s#%d from %s:%d%s user '%s' vhost '%s'", self.protocol, self.id,
                 *self.peer, self.via, user, vhost,
                 extra={"event": "connection.open", **self._log_fields()})

    def _log_fields(self) -> dict:
        return {"connection": self.name, "protocol": self.protocol, "peer_host": self.peer[0],
                "peer_port": self.peer[1], "user": self.user_name, "vhost": self.vhost_name,
                "tls": self._tls is not None, "websocket": self._ws is not None}

    def info(self) -> dict:
        """A read-only description for the management API (RabbitMQ's field names)."""
        session = self.session
        channels = getattr(session, "channels_info", None)
        client_properties = getattr(session, "client_properties", None)
        return {
            "name": self.name, "protocol": self.protocol, "node": "manifold",
            "host": self.local[0], "port": self.local[1],
            "peer_host": self.peer[0], "peer_port": self.peer[1],
            "user": self.user_name or "", "vhost": self.vhost_name or "",
            "ssl": self._tls is not None, "peer_cert_subject": self.tls_identity,
            "state": "blocked" if self.blocked else ("running" if self.user_name else "starting"),
            "connected_at": self.connected_at_ms,
            "channels": len(channels()) if channels is not None else 0,
            "recv_oct": self.bytes_in, "send_oct": self.bytes_out,
            "client_properties": client_properties if isinstance(client_properties, dict) else {},
        }

    def force_close(self, reason: str) -> None:
        """Close on an operator's request, in the protocol's words where the session has them."""
        close = getattr(self.session, "force_close", None)
        if close is None:
            self.close(f"closed by an operator: {reason}")
        else:
            close(reason)

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self.last_read = self.last_write = self._loop.time()
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.local = (str(local[0]), int(local[1]))
        self.connected_at_ms = int(time.time() * 1000)
        transport.set_write_buffer_limits(high=self.high_water_bytes, low=self.low_water_bytes)
        self.registry.add(self)
        if not self._layered:
            self._start_session()
            return
        if self._tls_context is not None:
            self._tls = TlsLayer(self._tls_context, self._write_raw)
        if self._ws_settings is not None:
            self._ws = WebSocketLayer(self._ws_settings, self._write_below_ws, self._ws_opened,
                                      self._ws_settings_protocols())
        self._handshake_timer = self._loop.call_later(self._handshake_timeout_s,
                                                      self._handshake_timed_out)

    def _start_session(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._announced = True
        via = f" over TLS {self._tls.version}" if self._tls is not None else ""
        via += " over WebSocket" if self._ws is not None else ""
        self.via = via
        # The "open" line comes with the login (see opened); this one is for debugging.
        log.debug("accepted %s#%d from %s:%d%s", self.protocol, self.id, *self.peer, via)
        self.session.connection_made(self)  # type: ignore[union-attr]

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        if not self._announced and not self.closed:
            self.abort(f"{'TLS' if self._tls is not None else 'WebSocket'} handshake timeout "
                       f"({self._handshake_timeout_s:g} s)")

    def data_received(self, data: bytes) -> None:
        self.last_read = self._loop.time()  # type: ignore[union-attr]
        self.bytes_in += len(data)
        if self.closed:
            return
        if self._layered:
            data = self._unwrap(data)
            if not data or self.session is None or self.closed:
                return
        self.session.data_received(data)

    def _unwrap(self, data: bytes) -> bytes:
        """Raw bytes -> session bytes through TLS and/or WebSocket; starts the session."""
        tls = self._tls
        if tls is not None:
            ready = tls.handshake_done
            try:
                data = tls.receive(data)
            except ssl.SSLError as exc:
                what = "TLS error" if ready else "TLS handshake failed"
                self.abort(f"{what}: {exc.reason or exc}")
                return b""
            if not ready and tls.handshake_done:
                self.tls_identity = tls.identity
                if self._ws is None:
                    self._start_session()
            if not data:
                return b""
        ws = self._ws
        if ws is not None:
            data = ws.receive(data)
            if ws.error is not None:
                self.close(ws.error)
                return b""
            if ws.closed:
                self.close(ws.close_reason)
        return data

    def _ws_settings_protocols(self) -> list[str]:
        return list(getattr(self._ws_settings, "protocols", ("mqtt", "stomp")))

    def _ws_opened(self, protocol: str) -> bool:
        session = self._open_session(protocol) if self._open_session is not None else None
        if session is None:
            return False
        self.protocol = protocol
        self.session = session
        self._start_session()
        interval = getattr(self._ws_settings, "ping_interval_s", 0)
        if interval:
            self._ping_timer = self._loop.call_later(interval, self._ws_ping, interval)
        return True

    def _ws_ping(self, interval: float) -> None:
        """Ping a silent WebSocket client; drop one silent for two intervals."""
        self._ping_timer = None
        if self.closed or self._ws is None:
            return
        silent = self._loop.time() - self.last_read  # type: ignore[union-attr]
        if silent >= 2 * interval:
            self.abort(f"websocket ping timeout ({interval:g} s)")
            return
        if silent >= interval:
            self._ws.ping()
        self._ping_timer = self._loop.call_later(interval, self._ws_ping, interval)

    def _write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _write_below_ws(self, data: bytes) -> None:
        self._write_raw(self._tls.wrap(data) if self._tls is not None else data)

    def eof_received(self) -> bool | None:
        if self.close_reason is None:
            self.close_reason = "client closed the connection"
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_reason is None:
            self.close_reason = f"connection lost: {exc}" if exc else "client closed the connection"
        self.closed = True
        self.writable = False
        self._cancel_timer()
        for timer in (self._handshake_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        self.registry.discard(self)
        if not self._announced and self._layered:
            # One line for a connection that never got past TLS/WebSocket (a plaintext client
            # on a TLS port, an untrusted certificate, a port scan).
            log.warning("%s connection from %s:%d ended before its handshake: %s",
                        self.protocol, *self.peer, self.close_reason)
            return
        log.info("close %s#%d from %s:%d user '%s' vhost '%s': %s", self.protocol, self.id,
                 *self.peer, self.user_name or "-", self.vhost_name or "-", self.close_reason,
                 extra={"event": "connection.close", "reason": self.close_reason,
                        **self._log_fields()})
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            callback()
        self.session.connection_lost()  # type: ignore[union-attr]

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when the connection ends."""
        if self.closed:
            callback()
        else:
            self._close_callbacks.append(callback)

    def hold_output(self, delay_s: float) -> None:
        """Keep what is written next (a login refusal) and a following close back for
        ``delay_s``, reading nothing meanwhile: the failed-login back-off of broker/access.py.
        Only a refusal is written while held, so the held output stays small."""
        if delay_s <= 0 or self.closed or self._loop is None or self._held is not None:
            return
        self._held = []
        if self.transport is not None:
            self.transport.pause_reading()
        self._loop.call_later(delay_s, self._release_held)

    def _release_held(self) -> None:
        held, self._held = self._held or [], None
        if self.closed or self.transport is None:
            return
        if held:
            self.writelines(held)
        if self._held_close is not None:
            self.close(self._held_close)
        elif not self._reading_paused:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        # The client is not reading fast enough: stop reading its input and stop delivering to it.
        self.writable = False
        self._output_backlog = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writable = True
        self._output_backlog = False
        self._update_reading()
        if not self.closed:
            self.session.resume_writing()

    def _update_reading(self) -> None:
        """Read from the client unless its output is backed up or the memory alarm blocks it."""
        if self.transport is None or self.closed:
            return
        paused = self._output_backlog or self.blocked
        if paused and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        elif not paused and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    def mark_publishing(self) -> None:
        """Sessions call this when their client publishes: the memory alarm applies to it."""
        if not self.publishing:
            self.publishing = True
            if self.memory is not None and self.memory.blocking:
                self.set_blocked(True)

    def set_blocked(self, blocked: bool) -> None:
        if blocked == self.blocked or self.closed:
            return
        self.blocked = blocked
        log.warning("%s %s#%d from %s:%d: resource alarm", "blocking" if blocked else "unblocking",
                    self.protocol, self.id, *self.peer)
        notify = getattr(self.session, "blocked", None)
        if notify is not None:
            notify(blocked)
        self._update_reading()

    # ------------------------------------------------------------------ for sessions
    @property
    def peer_host(self) -> str:
        return self.peer[0]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        if self._held is not None:
            self._held.append(bytes(data))
            return
        if self._layered:
            self._write_layered(data)
        else:
            transport.write(data)
        self.bytes_out += len(data)
        self._wrote(transport)

    def writelines(self, chunks: list) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        if self._held is not None:
            self._held.extend(bytes(chunk) for chunk in chunks)
            return
        # One joined buffer: cheaper than handing the transport many small ones (uvloop
        # takes each separately), and the usual batch is many small frames.
        data = b"".join(chunks)
        if self._layered:
            self._write_layered(data)
        else:
            transport.write(data)
        self.bytes_out += len(data)
        self._wrote(transport)

    def _write_layered(self, data: bytes | bytearray | memoryview) -> None:
        try:
            if self._ws is not None:
                self._ws.wrap(data)
            else:
                self._write_raw(self._tls.wrap(bytes(data)))  # type: ignore[union-attr]
        except ssl.SSLError as exc:  # the TLS session broke: this connection ends, nothing else
            self.abort(f"TLS error: {exc.reason or exc}")

    def _wrote(self, transport: asyncio.Transport) -> None:
        self.last_write = self._loop.time()  # type: ignore[union-attr]
        if transport.get_write_buffer_size() > self.hard_limit_bytes:
            self.abort("slow consumer: output buffer over its limit")

    def close(self, reason: str) -> None:
        """Flush what was written, then close."""
        if self._held is not None:
            self._held_close = reason
            return
        if self.close_reason is None:
            self.close_reason = reason
        if self._ws is not None and self.transport is not None and not self.closed:
            self._ws.close()  # the WebSocket closing handshake before the TCP close
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self, reason: str) -> None:
        """Close at once, dropping unsent output."""
        if self.close_reason is None:
            self.close_reason = reason
        if self.transport is not None:
            self.transport.abort()

    def set_keepalive(self, read_timeout_s: float | None = None,
                      on_read_timeout: Callable[[], None] | None = None,
                      send_interval_s: float | None = None,
                      send_heartbeat: Callable[[], None] | None = None) -> None:
        """Call ``on_read_timeout`` when nothing arrived for ``read_timeout_s``; call
        ``send_heartbeat`` when nothing was written for ``send_interval_s``. None disables."""
        self._read_timeout_s = read_timeout_s or None
        self._on_read_timeout = on_read_timeout
        self._send_interval_s = send_interval_s or None
        self._send_heartbeat = send_heartbeat
        self._cancel_timer()
        self._arm()

    def _arm(self) -> None:
        if self.closed or self._loop is None:
            return
        periods = [p for p in (self._read_timeout_s, self._send_interval_s) if p]
        if periods:
            self._timer = self._loop.call_later(max(0.05, min(periods) / 2), self._tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self._loop.time()  # type: ignore[union-attr]
        if self._read_timeout_s and now - self.last_read >= self._read_timeout_s:
            if self._on_read_timeout is not None:
                self._on_read_timeout()
            else:
                self.abort("keep-alive timeout: nothing received from the client")
            if self.closed or self.close_reason is not None:
                return
        if (self._send_interval_s and self._send_heartbeat is not None and
                now - self.last_write >= self._send_interval_s):
            self._send_heartbeat()
        self._arm()
