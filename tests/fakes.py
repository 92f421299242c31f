"""Test doubles shared by the session tests."""
from __future__ import annotations

from typing import Any


class FakeConnection:
    """Stands in for ``broker.transport.Connection`` when a session is driven without sockets:
    it records what the session wrote, how often, and how it closed."""

    id = 1
    peer_host = "127.0.0.1"

    def __init__(self) -> None:
        self.out = bytearray()
        self.writes = 0
        self.writable = True
        self.closed = False
        self.close_reason: str | None = None
        self.keepalive: tuple = ()
        self.publishing = False
        #: CN of a verified TLS client certificate (none here)
        self.tls_identity: str | None = None
        #: login back-off delays the session asked for, and close callbacks (vhost limits)
        self.held: list[float] = []
        self.close_callbacks: list = []

    def hold_output(self, delay_s: float) -> None:
        self.held.append(delay_s)

    def on_close(self, callback: Any) -> None:
        self.close_callbacks.append(callback)

    def opened(self, user: str, vhost: str) -> None:
        """The session logged its client in (the transport logs the "open" line)."""
        self.login = (user, vhost)

    def write(self, data: Any) -> None:
        self.writes += 1
        self.out += data

    def writelines(self, chunks: list) -> None:
        self.writes += 1
        for chunk in chunks:
            self.out += chunk

    def close(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason

    abort = close

    def set_keepalive(self, read_timeout_s=None, on_read_timeout=None, send_interval_s=None,
                      send_heartbeat=None) -> None:
        self.keepalive = (read_timeout_s, on_read_timeout, send_interval_s, send_heartbeat)

    def mark_publishing(self) -> None:
        self.publishing = True

    def take(self) -> bytes:
        """Everything written since the last take."""
        data = bytes(self.out)
        self.out.clear()
        return data
