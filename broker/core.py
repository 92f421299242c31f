"""The broker facade: users, virtual hosts, lifecycle. One instance per daemon, passed explicitly.

Adapters authenticate a connection with :meth:`Broker.authenticate`, then work in the virtual host
from :meth:`Broker.open_vhost` (see broker/vhost.py for the operations), checking each operation
against the :class:`~broker.access.Grant` from :meth:`Broker.grant` (see broker/access.py).
"""
from __future__ import annotations

import logging
from typing import Any

from manifold.config.settings import Settings
from manifold.persistence.store import MemoryStore, Store

from .access import AccessControl, Grant, User, is_loopback
from .clock import LoopClock
from .durable_map import DurableMap
from .errors import NotAllowed
from .memory import MemoryBudget
from .outbox import Outbox
from .message_codec import decode_value, encode_value
from .vhost import VirtualHost
from .views import Views

log = logging.getLogger("manifold")


class Broker:
    def __init__(self, settings: Settings | None = None, store: Store | None = None,
                 clock: Any = None):
        self.settings = settings or Settings()
        self.store: Store = store or MemoryStore()
        self.clock = clock or LoopClock()
        #: users, permissions, vhost limits and access keys (broker/access.py)
        self.access = AccessControl(self.settings)
        self.memory = MemoryBudget(self.settings.server.memory_high_water_bytes)
        #: SNS sms/application deliveries (no carrier): the management API shows them
        self.outbox = Outbox()
        #: read-only views adapters offer the management API (broker/views.py)
        self.views = Views()
        self.vhosts: dict[str, VirtualHost] = {}
        for name in self.access.vhost_limits:
            self._make_vhost(name)
        self._restoring = False

    def _make_vhost(self, name: str) -> VirtualHost:
        vhost = self.vhosts[name] = VirtualHost(
            name, store=self.store, clock=self.clock,
            consumer_timeout_ms=self.settings.queues.consumer_timeout_ms,
            resident_bytes=self.settings.queues.resident_bytes_per_queue, memory=self.memory,
            max_queues=self.access.vhost_limits[name].max_queues)
        return vhost

    def add_vhost(self, name: str, max_connections: int = 0, max_queues: int = 0) -> Any:
        """Create a vhost at runtime (management API), or change its limits; persisted. Returns
        an awaitable that resolves once it is on disk (None without a durable store)."""
        wait = self.access.set_vhost_limits(name, max_connections, max_queues)
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self._make_vhost(name)
            vhost.on_definitions_changed = self.save_definitions
        vhost.max_queues = max_queues
        return wait

    async def start(self) -> None:
        """Open the store, recreate the durable definitions and reload unsettled messages."""
        await self.store.open()
        for name in self.access.load(self.store.state_log("access")):
            self._make_vhost(name)
        saved = self.store.load_definitions()
        self._restoring = True
        try:
            if saved:
                for name, definitions in decode_value(saved).items():
                    vhost = self.vhosts.get(name)
                    if vhost is None:
                        log.warning("definitions of unknown vhost '%s' ignored", name)
                        continue
                    recovered = vhost.restore(definitions)
                    log.info("vhost '%s': %d durable queues, %d messages recovered", name,
                             len(definitions.get("queues", [])), recovered)
        finally:
            self._restoring = False
        for vhost in self.vhosts.values():
            vhost.on_definitions_changed = self.save_definitions

    def state_map(self, name: str) -> DurableMap:
        """A durable key -> value map in the store (for adapters' own state, e.g. MQTT retained
        messages and sessions); memory-only when the store keeps nothing."""
        return DurableMap(self.store.state_log(name))

    def save_definitions(self) -> None:
        if not self._restoring:
            self.store.save_definitions(encode_value(
                {name: vhost.definitions() for name, vhost in self.vhosts.items()}))

    async def close(self) -> None:
        for vhost in self.vhosts.values():
            vhost.close()
        await self.store.close()

    def authenticate(self, username: str | None, password: str | None,
                     peer_host: str | None, identity: str | None = None,
                     external: bool = False) -> User:
        """The user, or LoginRefused (an AccessRefused with the back-off ``delay_s`` to hold the
        refusal for). ``guest`` is accepted only from loopback, as in RabbitMQ. See
        AccessControl.authenticate for ``identity`` (TLS client certificate CN)."""
        return self.access.authenticate(username, password, peer_host, identity, external)

    def open_vhost(self, name: str, user: User, conn: Any = None) -> VirtualHost:
        """The vhost, or NotAllowed (unknown, no permissions there, connection limit reached).
        With ``conn`` (the transport connection) it counts against ``max_connections`` until
        the connection closes."""
        vhost = self.vhosts.get(name)
        if vhost is None:
            raise NotAllowed(f"vhost '{name}' not found")
        self.access.check_vhost(name, user)
        if conn is not None and hasattr(conn, "on_close"):
            conn.on_close(self.access.connection_opened(name))
        return vhost

    def grant(self, user: User, vhost: str) -> Grant:
        """What ``user`` may do in ``vhost``: adapters check each operation with it."""
        return self.access.grant(user, vhost)


__all__ = ["Broker", "User", "is_loopback"]
