"""Who may log in, to which vhost, and what they may do there: once for every protocol.

RabbitMQ's model (https://www.rabbitmq.com/docs/access-control): a user needs a permission entry
on a vhost to connect to it; the entry holds three regular expressions over resource names:

| operation                            | needs                                            |
|--------------------------------------|--------------------------------------------------|
| declare / delete a queue or exchange | configure on it                                  |
| publish                              | write on the exchange (``amq.default`` for "")   |
| bind a queue (or exchange) to an x   | write on the queue (destination), read on the x  |
| consume, get, purge                  | read on the queue                                |

An empty expression matches nothing; matching is ``re.search`` as RabbitMQ's ``re:run``. Topic
permissions add expressions over routing keys per exchange (write for publish, read for binding
and subscribing); a user without topic permissions on an exchange may use every routing key.

Adapters call :meth:`AccessControl.authenticate`, then :meth:`AccessControl.grant` for a
:class:`Grant` they check operations with; denials are :class:`AccessRefused` (a wire-neutral
error each adapter maps to its protocol), vhost refusals :class:`NotAllowed`.

Passwords are kept as scrypt hashes (``hashlib.scrypt``, salted; PHC-style strings from
``manifold hash-password``), or as the RabbitMQ hash a user was imported with (definitions from
RabbitMQ: salted SHA-256, SHA-512 or MD5, see broker/password_hash.py), so a migrated user keeps
their password. Users, vhosts and permissions created at runtime (management API)
persist hashed in the store's ``access`` state log; plaintext never reaches the disk or the log.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from manifold.config.settings import ConfigError, Settings

from . import password_hash as rabbit_hash
from .durable_map import DurableMap
from .errors import AccessRefused, NotAllowed

log = logging.getLogger("manifold.access")

# scrypt cost: 2^14 x 8 x 1 is the interactive-login setting of the scrypt paper (16 MiB).
SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P = 14, 8, 1
_HASH_RE = re.compile(r"^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")
#: how long a failed login from an address is remembered by the back-off
BACKOFF_WINDOW_S = 600.0
#: addresses the back-off tracks at most (oldest forgotten first): memory stays bounded
BACKOFF_MAX_ADDRESSES = 10000
#: the failure count at which each failed login takes at least ``BACKOFF_TARGET_S``
BACKOFF_TARGET_FAILURES, BACKOFF_TARGET_S = 25, 0.5


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    """``$scrypt$ln=14,r=8,p=1$<salt>$<hash>`` (base64), salted with 16 random bytes."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << SCRYPT_LOG_N, r=SCRYPT_R,
                            p=SCRYPT_P, maxmem=256 * 1024 * 1024, dklen=32)
    return f"$scrypt$ln={SCRYPT_LOG_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"


#: the hashing_algorithm of Manifold's own scrypt hashes in a definitions export
SCRYPT_ALGORITHM = "manifold_scrypt"


def valid_hash(stored: str) -> bool:
    return bool(_HASH_RE.match(stored))


def check_hash(stored: str, algorithm: str) -> None:
    """ValueError naming the problem unless ``stored`` is a hash this broker verifies: scrypt
    (``manifold hash-password``) or one of RabbitMQ's (``rabbit_password_hashing_*``)."""
    if algorithm in ("", SCRYPT_ALGORITHM):
        if not valid_hash(stored):
            raise ValueError("password_hash is not a hash from 'manifold hash-password'")
    else:
        rabbit_hash.check_hash(stored, algorithm)


def verify_password(stored: str, password: str) -> bool:
    match = _HASH_RE.match(stored)
    if match is None:
        return False
    log_n, r, p = (int(g) for g in match.groups()[:3])
    salt, expected = base64.b64decode(match.group(4)), base64.b64decode(match.group(5))
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << log_n, r=r, p=p,
                            maxmem=256 * 1024 * 1024, dklen=len(expected))
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True)
class User:
    name: str
    tags: tuple[str, ...] = ()
    # RabbitMQ's rule for guest: allowed only from loopback addresses.
    loopback_only: bool = False


@dataclass
class _Account:
    user: User
    #: scrypt hash (config or runtime), or "" when the password came in plaintext from the config
    password_hash: str
    #: HMAC of the accepted password under this process's key: set for plaintext config passwords
    #: and after the first successful scrypt check, so later logins cost microseconds, not 100 ms
    verified: bytes | None = None
    #: "" for scrypt; a RabbitMQ algorithm (rabbit_password_hashing_sha256...) for imported users
    hashing_algorithm: str = ""


@dataclass(frozen=True)
class Permission:
    configure: str
    write: str
    read: str

    def pattern(self, action: str) -> str:
        return getattr(self, action)


@dataclass(frozen=True)
class TopicPermission:
    write: str
    read: str


@dataclass(frozen=True)
class VhostLimits:
    max_connections: int = 0
    max_queues: int = 0


def _matches(pattern: str, name: str, user: str, vhost: str) -> bool:
    if not pattern:
        return False  # an empty expression grants nothing, as in RabbitMQ
    if "{" in pattern:  # RabbitMQ's variable expansion in topic permissions
        pattern = pattern.replace("{username}", re.escape(user)).replace("{vhost}",
                                                                          re.escape(vhost))
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


class LoginBackoff:
    """Slows repeated failed logins from one source address: the first ``free`` failures cost
    nothing, then each takes longer, reaching ``BACKOFF_TARGET_S`` by the 25th, up to ``max_s``.
    Per address, never per user, so nobody can lock a user out; capped, so a correct login from a
    busy address still gets through."""

    def __init__(self, free: int, max_s: float, clock: Callable[[], float] = time.monotonic):
        self.free = free
        self.max_s = max(max_s, 0.0)
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}

    def failed(self, address: str) -> float:
        """Record a failure; the delay to put on its refusal."""
        now = self.clock()
        count, last = self._failures.pop(address, (0, now))
        if now - last > BACKOFF_WINDOW_S:
            count = 0
        count += 1
        self._failures[address] = (count, now)  # re-inserted: dict order is recency
        while len(self._failures) > BACKOFF_MAX_ADDRESSES:
            del self._failures[next(iter(self._failures))]
        return self.delay(count)

    def delay(self, count: int) -> float:
        if count <= self.free:
            return 0.0
        steps = max(BACKOFF_TARGET_FAILURES - 1 - self.free, 1)
        return min(self.max_s, BACKOFF_TARGET_S * (count - self.free) / steps)


class HashBudget:
    """Bounds the event loop's CPU time spent in scrypt: at most ``share`` of each second. A
    password hash is checked on the loop (adapters log in synchronously) when the in-memory HMAC
    of a verified password does not answer (a user's first login since start, or a wrong
    password), so without a bound a flood of wrong passwords could stall every client. Past the
    budget such logins are refused at once; users who logged in before are not affected."""

    def __init__(self, share: float = 0.25, clock: Callable[[], float] = time.monotonic):
        self.share = share
        self.clock = clock
        self._window_start = 0.0
        self._spent = 0.0

    def allow(self) -> bool:
        now = self.clock()
        if now - self._window_start >= 1.0:
            self._window_start, self._spent = now, 0.0
        return self._spent < self.share

    def charge(self, seconds: float) -> None:
        self._spent += seconds


class LoginRefused(AccessRefused):
    """A failed login; ``delay_s`` is how long the adapter holds its refusal back (back-off)."""

    def __init__(self, text: str, delay_s: float = 0.0):
        super().__init__(text)
        self.delay_s = delay_s


class AccessControl:
    """Users, passwords, permissions and access keys of one broker (no global state)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        server = settings.server
        self.backoff = LoginBackoff(server.login_failures_free, server.login_backoff_max_s, clock)
        self.identity_as_username = settings.tls.identity_as_username
        self._key = os.urandom(32)  # keys the in-memory password HMACs; never leaves the process
        self.hash_budget = HashBudget(clock=clock)
        self.accounts: dict[str, _Account] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}
        self.topic_permissions: dict[tuple[str, str], dict[str, TopicPermission]] = {}
        self.vhost_limits: dict[str, VhostLimits] = {
            spec.name: VhostLimits(spec.max_connections, spec.max_queues)
            for spec in settings.vhost_specs()}
        #: AWS access key id -> (user name, secret)
        self.access_keys: dict[str, tuple[str, str]] = {
            key.id: (key.user, key.secret) for key in settings.access_keys}
        #: bumped on every change, so cached grant decisions are dropped
        self.generation = 0
        self.connections: dict[str, int] = {}
        self._map: DurableMap | None = None
        self._load_config()

    # ------------------------------------------------------------------ configuration
    def _plain_account(self, user: User, password: str) -> _Account:
        return _Account(user, "", self._mac(user.name, password))

    def _mac(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\x00{password}".encode(), hashlib.sha256).digest()

    def _load_config(self) -> None:
        settings = self.settings
        all_vhosts = list(self.vhost_limits)
        legacy = []
        for entry in settings.server.users:
            name, _, password = entry.partition(":")
            if name == "guest" and not settings.server.guest_user:
                continue
            if name != "guest" or password != "guest":
                log.warning("user '%s' has a plaintext password in the configuration; use "
                            "password_hash from 'manifold hash-password'", name)
            # Like RabbitMQ's guest, the "name:password" users administer the broker (they
            # could do everything before tags existed).
            self.accounts[name] = self._plain_account(
                User(name, ("administrator",), loopback_only=name == "guest"), password)
            legacy.append(name)
        for spec in settings.users:
            if spec.name == "guest" and not settings.server.guest_user:
                continue
            user = User(spec.name, tuple(spec.tags), loopback_only=spec.name == "guest")
            if spec.password_hash:
                if not valid_hash(spec.password_hash):
                    raise ConfigError(f"[[users]] '{spec.name}': password_hash is not a hash from "
                                     "'manifold hash-password'")
                self.accounts[spec.name] = _Account(user, spec.password_hash)
            else:
                log.warning("user '%s' has a plaintext password in the configuration; use "
                            "password_hash from 'manifold hash-password'", spec.name)
                self.accounts[spec.name] = self._plain_account(user, spec.password)
        explicit = {p.user for p in settings.permissions}
        # The older "name:password" users (guest among them) may use every configured vhost,
        # as before permissions existed, unless [[permissions]] says otherwise.
        for name in legacy:
            if name not in explicit and name in self.accounts:
                for vhost in all_vhosts:
                    self.permissions[(name, vhost)] = Permission(".*", ".*", ".*")
        for p in settings.permissions:
            self.permissions[(p.user, p.vhost)] = Permission(p.configure, p.write, p.read)
        for t in settings.topic_permissions:
            self.topic_permissions.setdefault((t.user, t.vhost), {})[t.exchange] = \
                TopicPermission(t.write, t.read)
        for pattern in [p for perm in self.permissions.values()
                        for p in (perm.configure, perm.write, perm.read)]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"bad permission expression {pattern!r}: {exc}") from None

    # ------------------------------------------------------------------ runtime definitions
    def load(self, state_log: Any) -> list[str]:
        """Apply what the management API stored earlier; returns runtime vhost names to create."""
        self._map = DurableMap(state_log)
        created = []
        for key, value in sorted(self._map.load().items(), key=lambda kv: str(kv[0])):
            kind, rest = key[0], key[1:]
            if kind == "user":
                if value is None:
                    self.accounts.pop(rest[0], None)
                else:
                    self.accounts[rest[0]] = _Account(
                        User(rest[0], tuple(value["tags"]), loopback_only=rest[0] == "guest"),
                        value["password_hash"],
                        hashing_algorithm=value.get("hashing_algorithm", ""))
            elif kind == "permission":
                if value is None:
                    self.permissions.pop((rest[0], rest[1]), None)
                else:
                    self.permissions[(rest[0], rest[1])] = Permission(*value)
            elif kind == "topic_permission":
                perms = self.topic_permissions.setdefault((rest[0], rest[1]), {})
                if value is None:
                    perms.pop(rest[2], None)
                else:
                    perms[rest[2]] = TopicPermission(*value)
            elif kind == "vhost":
                if rest[0] not in self.vhost_limits:
                    created.append(rest[0])
                self.vhost_limits[rest[0]] = VhostLimits(*value)
        self.generation += 1
        return created

    def _persist(self, key: tuple, value: Any) -> Any:
        self.generation += 1
        return self._map.put(key, value) if self._map is not None else None

    def add_user(self, name: str, password: str | None = None, *, password_hash: str = "",
                 hashing_algorithm: str = "", tags: Iterable[str] = ()) -> Any:
        """Create or replace a user (management API); only a hash is stored: scrypt for a
        password, or the RabbitMQ ``password_hash`` of an imported user with its
        ``hashing_algorithm`` (ValueError if it cannot be verified). Returns an awaitable that
        resolves once it is on disk (or None without a store)."""
        if password is not None:
            password_hash, hashing_algorithm = hash_password(password), ""
        if hashing_algorithm == SCRYPT_ALGORITHM:
            hashing_algorithm = ""
        check_hash(password_hash, hashing_algorithm)
        tags = tuple(tags)
        user = User(name, tags, loopback_only=name == "guest")
        self.accounts[name] = _Account(user, password_hash, hashing_algorithm=hashing_algorithm)
        value = {"password_hash": password_hash, "tags": list(tags)}
        if hashing_algorithm:
            value["hashing_algorithm"] = hashing_algorithm
        return self._persist(("user", name), value)

    def password_hash_of(self, name: str) -> tuple[str, str]:
        """(password_hash, hashing_algorithm) for a definitions export: "" for a user whose
        password came in plaintext from the configuration (only its HMAC is in memory)."""
        account = self.accounts[name]
        if not account.password_hash:
            return "", rabbit_hash.DEFAULT_ALGORITHM
        return account.password_hash, account.hashing_algorithm or SCRYPT_ALGORITHM

    def delete_user(self, name: str) -> Any:
        """Remove a user with its permissions; open connections stay (as in RabbitMQ)."""
        self.accounts.pop(name, None)
        for key in [k for k in self.permissions if k[0] == name]:
            self.clear_permissions(*key)
        for key in [k for k in self.topic_permissions if k[0] == name]:
            self.clear_topic_permissions(*key)
        return self._persist(("user", name), None)

    def set_permissions(self, user: str, vhost: str, configure: str, write: str,
                        read: str) -> Any:
        for pattern in (configure, write, read):
            re.compile(pattern)  # re.error for a bad expression, before anything changes
        self.permissions[(user, vhost)] = Permission(configure, write, read)
        return self._persist(("permission", user, vhost), [configure, write, read])

    def clear_permissions(self, user: str, vhost: str) -> Any:
        self.permissions.pop((user, vhost), None)
        return self._persist(("permission", user, vhost), None)

    def set_topic_permissions(self, user: str, vhost: str, exchange: str, write: str,
                              read: str) -> Any:
        for pattern in (write, read):
            re.compile(pattern)
        self.topic_permissions.setdefault((user, vhost), {})[exchange] = \
            TopicPermission(write, read)
        return self._persist(("topic_permission", user, vhost, exchange), [write, read])

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> Any:
        perms = self.topic_permissions.get((user, vhost), {})
        exchanges = [exchange] if exchange is not None else list(perms)
        wait = None
        for name in exchanges:
            perms.pop(name, None)
            wait = self._persist(("topic_permission", user, vhost, name), None)
        return wait

    def set_vhost_limits(self, vhost: str, max_connections: int = 0, max_queues: int = 0) -> Any:
        """Record a runtime vhost (Broker.add_vhost creates its VirtualHost) and its limits."""
        self.vhost_limits[vhost] = VhostLimits(max_connections, max_queues)
        return self._persist(("vhost", vhost), [max_connections, max_queues])

    def list_users(self) -> list[User]:
        return [account.user for account in self.accounts.values()]

    # ------------------------------------------------------------------ login
    def authenticate(self, username: str | None, password: str | None, peer_host: str | None,
                     identity: str | None = None, external: bool = False) -> User:
        """The user, or :class:`LoginRefused` (carrying the back-off delay for its refusal).

        ``identity`` is the CN of a verified TLS client certificate. With ``external`` (AMQP's
        EXTERNAL mechanism) or ``[tls] identity_as_username`` and no password, it names the user
        and no password is checked."""
        address = peer_host or ""
        if identity is not None and self.identity_as_username and (external or not password):
            account = self.accounts.get(identity)
            if account is None:
                raise LoginRefused(f"certificate identity '{identity}' is not a user",
                                   self.backoff.failed(address))
            return self._check_loopback(account.user, peer_host)
        if external:
            raise LoginRefused("EXTERNAL login needs a verified client certificate and [tls] "
                               "identity_as_username",
                               self.backoff.failed(address))
        account = self.accounts.get(username or "")
        if account is None or password is None or not self._password_ok(account, password):
            raise LoginRefused(f"login refused for user '{username}': wrong username or password",
                               self.backoff.failed(address))
        return self._check_loopback(account.user, peer_host)

    def _check_loopback(self, user: User, peer_host: str | None) -> User:
        if user.loopback_only and not is_loopback(peer_host):
            raise LoginRefused(f"user '{user.name}' can only connect via localhost",
                               self.backoff.failed(peer_host or ""))
        return user

    def _password_ok(self, account: _Account, password: str) -> bool:
        mac = self._mac(account.user.name, password)
        if account.verified is not None and hmac.compare_digest(mac, account.verified):
            return True
        if not account.password_hash:
            return False
        if not self.hash_budget.allow():
            log.warning("login of '%s' refused unchecked: password hashing is over its share of "
                        "the event loop (a flood of failed logins?)", account.user.name)
            return False
        # Charged in this thread's CPU time, what the hash itself costs the loop: on a loaded
        # machine its wall time grows with everyone else's work, and a user's first login
        # after another's would be refused (seen in the test suite under load).
        start = time.thread_time()
        if account.hashing_algorithm:  # a hash imported from RabbitMQ's definitions
            ok = rabbit_hash.verify(account.password_hash, account.hashing_algorithm, password)
        else:
            ok = verify_password(account.password_hash, password)
        self.hash_budget.charge(time.thread_time() - start)
        if ok:
            account.verified = mac
        return ok

    def user(self, name: str) -> User | None:
        account = self.accounts.get(name)
        return account.user if account is not None else None

    # ------------------------------------------------------------------ read-only views
    def vhosts_of(self, name: str) -> set[str]:
        """The vhosts the user has a permission entry on (may connect to)."""
        return {vhost for user, vhost in self.permissions if user == name}

    def list_permissions(self) -> list[tuple[str, str, Permission]]:
        return [(user, vhost, perm) for (user, vhost), perm in self.permissions.items()]

    def list_topic_permissions(self) -> list[tuple[str, str, str, TopicPermission]]:
        return [(user, vhost, exchange, perm)
                for (user, vhost), perms in self.topic_permissions.items()
                for exchange, perm in perms.items()]

    # ------------------------------------------------------------------ vhosts
    def check_vhost(self, vhost: str, user: User) -> None:
        """NotAllowed unless the user has permissions on the vhost (RabbitMQ's rule)."""
        if (user.name, vhost) not in self.permissions:
            raise NotAllowed(f"access to vhost '{vhost}' refused for user '{user.name}'")

    def connection_opened(self, vhost: str) -> Callable[[], None]:
        """Count a connection against the vhost's max_connections; returns its release."""
        limit = self.vhost_limits.get(vhost, VhostLimits()).max_connections
        count = self.connections.get(vhost, 0)
        if limit and count >= limit:
            raise NotAllowed(f"access to vhost '{vhost}' refused: connection limit ({limit}) "
                             "is reached")
        self.connections[vhost] = count + 1
        released = []

        def release() -> None:
            if not released:
                released.append(True)
                self.connections[vhost] = self.connections.get(vhost, 1) - 1
        return release

    def grant(self, user: User, vhost: str) -> "Grant":
        return Grant(self, user.name, vhost)


def _checked() -> bool:
    return True


@dataclass
class Grant:
    """One connection's rights in one vhost. Decisions are cached per resource until the
    definitions change (``generation``), so the publish path costs a dict lookup."""
    access: AccessControl
    user: str
    vhost: str
    _cache: dict = field(default_factory=dict)
    _generation: int = -1

    def _decide(self, key: tuple, decide: Callable[[], bool]) -> bool:
        if self._generation != self.access.generation:
            self._cache.clear()
            self._generation = self.access.generation
        allowed = self._cache.get(key)
        if allowed is None:
            if len(self._cache) > 4096:  # bounded, whatever names a client makes up
                self._cache.clear()
            allowed = self._cache[key] = decide()
        return allowed

    def _cached(self, key: tuple) -> bool | None:
        """The cached decision, if the definitions have not changed since: the publish path
        ends here, without building the ``decide`` closure."""
        if self._generation == self.access.generation:
            return self._cache.get(key)
        return None

    def allowed(self, action: str, kind: str, name: str) -> bool:
        """``action`` is configure, write or read; ``kind`` queue or exchange."""
        if kind == "exchange" and name == "":
            name = "amq.default"
        key = (action, kind, name)
        hit = self._cached(key)
        if hit is not None:
            return hit

        def decide() -> bool:
            perm = self.access.permissions.get((self.user, self.vhost))
            return perm is not None and _matches(perm.pattern(action), name, self.user,
                                                 self.vhost)
        return self._decide(key, decide)

    def check(self, action: str, kind: str, name: str) -> None:
        if not self.allowed(action, kind, name):
            shown = "amq.default" if kind == "exchange" and name == "" else name
            raise AccessRefused(f"{action} access to {kind} '{shown}' in vhost '{self.vhost}' "
                                f"refused for user '{self.user}'")

    def configure(self, kind: str, name: str) -> None:
        self.check("configure", kind, name)

    def write(self, kind: str, name: str) -> None:
        self.check("write", kind, name)

    def read(self, kind: str, name: str) -> None:
        self.check("read", kind, name)

    def topic_allowed(self, action: str, exchange: str, routing_key: str) -> bool:
        """``action`` is write (publish) or read (bind, subscribe); no topic permissions on the
        exchange means every routing key is allowed."""
        key = ("topic", action, exchange, routing_key)
        hit = self._cached(key)
        if hit is not None:
            return hit

        def decide() -> bool:
            perms = self.access.topic_permissions.get((self.user, self.vhost))
            perm = perms.get(exchange) if perms else None
            if perm is None:
                return True
            return _matches(getattr(perm, action), routing_key, self.user, self.vhost)
        return self._decide(key, decide)

    def check_publish(self, exchange: str, routing_key: str) -> None:
        """What every publish needs: write on the exchange and topic write on the routing key
        (RabbitMQ's rules), as one cached lookup once allowed."""
        key = ("publish", exchange, routing_key)
        if self._cached(key):
            return
        self.write("exchange", exchange)
        self.check_topic("write", exchange, routing_key)
        self._decide(key, _checked)

    def check_topic(self, action: str, exchange: str, routing_key: str) -> None:
        if not self.topic_allowed(action, exchange, routing_key):
            raise AccessRefused(f"{action} access to topic '{routing_key}' in exchange "
                                f"'{exchange}' in vhost '{self.vhost}' refused for user "
                                f"'{self.user}'")

