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

from . import password_hash
from .clock import LoopClock
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
        #: management tags per user (RabbitMQ's administrator, monitoring, management...);
        #: users from the settings are administrators, as guest is in RabbitMQ
        self.user_tags: dict[str, tuple[str, ...]] = {n: ("administrator",) for n in self.users}
        #: user -> (RabbitMQ password_hash, hashing_algorithm), for users added at run time
        self._password_hashes: dict[str, tuple[str, str]] = {}
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
        if user is None or not self._password_ok(user, password or ""):
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

    # ---------------------------------------------------------------- users (management API)
    def _password_ok(self, user: User, password: str) -> bool:
        hashed = self._password_hashes.get(user.name)
        if hashed is not None:
            return password_hash.verify(hashed[0], hashed[1], password)
        return hmac.compare_digest(password.encode(), user.password.encode())

    def add_user(self, name: str, *, password: str | None = None, hashed: str | None = None,
                 hashing_algorithm: str = password_hash.DEFAULT_ALGORITHM,
                 tags: tuple[str, ...] = (), vhosts: tuple[str, ...] | None = None) -> None:
        """Create or replace a user from a password or a RabbitMQ ``password_hash`` (ValueError
        if the hash cannot be verified). Kept in memory: runtime users do not survive a restart."""
        if password is not None:
            hashed = password_hash.hash_password(password, hashing_algorithm)
        if hashed is None:
            raise ValueError(f"user '{name}' needs a password or a password_hash")
        password_hash.check_hash(hashed, hashing_algorithm)
        previous = self.users.get(name)
        if vhosts is None:
            vhosts = previous.vhosts if previous is not None else ()
        self.users[name] = User(name, "", loopback_only=name == "guest", vhosts=tuple(vhosts))
        self._password_hashes[name] = (hashed, hashing_algorithm)
        self.user_tags[name] = tuple(tags)

    def user_password_hash(self, name: str) -> tuple[str, str]:
        """(password_hash, hashing_algorithm) in RabbitMQ's format, for a definitions export."""
        hashed = self._password_hashes.get(name)
        if hashed is None:  # a settings user: hash its configured password
            hashed = (password_hash.hash_password(self.users[name].password),
                      password_hash.DEFAULT_ALGORITHM)
        return hashed

    def delete_user(self, name: str) -> bool:
        self._password_hashes.pop(name, None)
        self.user_tags.pop(name, None)
        return self.users.pop(name, None) is not None

    def set_user_vhosts(self, name: str, vhosts: tuple[str, ...]) -> None:
        """Which vhosts the user may open (the permission; patterns are not enforced yet)."""
        user = self.users[name]
        self.users[name] = User(user.name, user.password, user.loopback_only, tuple(vhosts))
