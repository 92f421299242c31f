"""The broker facade: users, virtual hosts, lifecycle. One instance per daemon, passed explicitly.

Adapters authenticate a connection with :meth:`Broker.authenticate`, then work in the virtual host
from :meth:`Broker.open_vhost` (see broker/vhost.py for the operations).
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any

from manifold.config.settings import Settings, User
from manifold.persistence.store import MemoryStore, Store

from .clock import LoopClock
from .durable_map import DurableMap
from .errors import AccessRefused, NotAllowed
from .memory import MemoryBudget
from .message_codec import decode_value, encode_value
from .vhost import VirtualHost

log = logging.getLogger("manifold")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


class Broker:
    def __init__(self, settings: Settings | None = None, store: Store | None = None,
                 clock: Any = None):
        self.settings = settings or Settings()
        self.store: Store = store or MemoryStore()
        self.clock = clock or LoopClock()
        self.users: dict[str, User] = self.settings.users()
        self.memory = MemoryBudget(self.settings.server.memory_high_water_bytes)
        self.vhosts: dict[str, VirtualHost] = {
            name: VirtualHost(name, store=self.store, clock=self.clock,
                              consumer_timeout_ms=self.settings.queues.consumer_timeout_ms,
                              resident_bytes=self.settings.queues.resident_bytes_per_queue,
                              memory=self.memory)
            for name in self.settings.server.vhosts}
        self._restoring = False

    async def start(self) -> None:
        """Open the store, recreate the durable definitions and reload unsettled messages."""
        await self.store.open()
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
        make = getattr(self.store, "state_log", None)
        return DurableMap(make(name) if make is not None else None)

    def save_definitions(self) -> None:
        if not self._restoring:
            self.store.save_definitions(encode_value(
                {name: vhost.definitions() for name, vhost in self.vhosts.items()}))

    async def close(self) -> None:
        for vhost in self.vhosts.values():
            vhost.close()
        await self.store.close()

    def authenticate(self, username: str | None, password: str | None,
                     peer_host: str | None) -> User:
        """The user, or AccessRefused. ``guest`` is accepted only from loopback, as in RabbitMQ."""
        user = self.users.get(username or "")
        if user is None or not hmac.compare_digest((password or "").encode(),
                                                   user.password.encode()):
            raise AccessRefused(f"login refused for user '{username}': wrong username or password")
        if user.loopback_only and not is_loopback(peer_host):
            raise AccessRefused(f"user '{username}' can only connect via localhost")
        return user

    def open_vhost(self, name: str, user: User) -> VirtualHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            raise NotAllowed(f"vhost '{name}' not found")
        if name not in user.vhosts:
            raise NotAllowed(f"access to vhost '{name}' refused for user '{user.name}'")
        return vhost
