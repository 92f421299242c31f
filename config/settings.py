"""One frozen settings tree, every default in one place, units in the names.

Loaded from TOML (``tomllib``) with ``MANIFOLD_<SECTION>_<KEY>`` environment overrides and
command-line flags on top. Unknown keys and bad values are errors that name the key and what is
accepted (unlike hypercorn's config, which ignores unknown keys).
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class User:
    name: str
    password: str
    # RabbitMQ's rule for guest: allowed only from loopback addresses.
    loopback_only: bool = False
    vhosts: tuple[str, ...] = ("/",)


@dataclass(frozen=True)
class ServerSettings:
    bind: str = "127.0.0.1"
    data_dir: str = "./manifold-data"
    # Pause reading from a connection whose output buffer holds more than this many bytes.
    output_high_water_bytes: int = 4 * 1024 * 1024
    output_low_water_bytes: int = 1024 * 1024
    # Largest message body any protocol accepts (SQS: 1 MiB; we allow more, like RabbitMQ).
    max_message_bytes: int = 16 * 1024 * 1024
    # Memory alarm: above this many bytes of message bodies in memory, connections that publish
    # are no longer read until consumers drain below 80% of it (0 disables).
    memory_high_water_bytes: int = 1024 * 1024 * 1024
    # Disk alarm: below this many free bytes on the data directory's file system, connections
    # that publish are no longer read until space comes back (0 disables).
    disk_free_limit_bytes: int = 256 * 1024 * 1024
    # ... or this fraction of the file system's size, if that is more (0 disables the fraction).
    disk_free_limit_ratio: float = 0.0
    disk_check_interval_ms: int = 1000
    # Raise the soft open-file limit to this (capped by the hard limit) at start; 0 leaves it.
    open_files_limit: int = 65536
    shutdown_grace_s: float = 3.0
    # Users, as "name:password" entries; guest/guest is always loopback-only.
    users: tuple[str, ...] = ("guest:guest",)
    vhosts: tuple[str, ...] = ("/",)
    log_level: str = "info"


@dataclass(frozen=True)
class AmqpSettings:
    enabled: bool = True
    port: int = 5672
    frame_max_bytes: int = 131072
    channel_max: int = 2047
    heartbeat_s: int = 60


@dataclass(frozen=True)
class MqttSettings:
    enabled: bool = True
    port: int = 1883
    max_packet_bytes: int = 16 * 1024 * 1024 + 1024
    receive_maximum: int = 1024
    # Upper bound on the keep-alive a client may ask for (0 means no bound); MQTT 5 server keep alive.
    max_keepalive_s: int = 0
    max_session_expiry_s: int = 7 * 24 * 3600
    # Topic aliases the server accepts from a client (MQTT 5 Topic Alias Maximum).
    topic_alias_maximum: int = 64


@dataclass(frozen=True)
class StompSettings:
    enabled: bool = True
    port: int = 61613
    max_frame_bytes: int = 16 * 1024 * 1024 + 64 * 1024
    max_headers: int = 1000
    # Smallest heart-beat interval the server offers or accepts, in milliseconds.
    heartbeat_ms: int = 10000
    # A connection that has not sent CONNECT this long after opening is dropped.
    handshake_timeout_s: float = 10.0


@dataclass(frozen=True)
class HttpSettings:
    """The AWS HTTP APIs (SQS, SNS, Kinesis, Firehose, S3) on one port, like LocalStack's 4566."""
    enabled: bool = True
    port: int = 4566
    # Host name put into queue URLs and SubscribeURLs; empty means the Host header of the request.
    advertised_host: str = ""


@dataclass(frozen=True)
class ManagementSettings:
    """The management HTTP API, /metrics and the dashboard, on RabbitMQ's 15672."""
    enabled: bool = True
    port: int = 15672


@dataclass(frozen=True)
class QueueSettings:
    # Default consumer (visibility) timeout: 30 min as in RabbitMQ; 0 disables.
    consumer_timeout_ms: int = 30 * 60 * 1000
    # Bytes of ready message bodies a durable queue keeps in memory; persistent messages past
    # this live only on disk until delivered, so a backlog can be larger than memory.
    # (x-queue-mode: lazy on a queue sets its limit to 0.)
    resident_bytes_per_queue: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class PersistenceSettings:
    # "always": fsync before confirming (group commit); "interval": every fsync_interval_ms; "never".
    fsync: str = "always"
    fsync_interval_ms: int = 200
    segment_bytes: int = 64 * 1024 * 1024
    # Segment files kept open for writing, and as many for reading: never one per queue (capped
    # at an eighth of the open-file limit, so connections keep the rest).
    max_open_files: int = 256


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    amqp: AmqpSettings = field(default_factory=AmqpSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    stomp: StompSettings = field(default_factory=StompSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    management: ManagementSettings = field(default_factory=ManagementSettings)
    queues: QueueSettings = field(default_factory=QueueSettings)
    persistence: PersistenceSettings = field(default_factory=PersistenceSettings)

    def replace(self, section: str, **values: Any) -> "Settings":
        """A copy with some keys of one section changed (values are validated)."""
        current = getattr(self, section)
        checked = {k: _coerce(section, current, k, v) for k, v in values.items()}
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **checked)})

    def users(self) -> dict[str, User]:
        out = {}
        for entry in self.server.users:
            name, _, password = entry.partition(":")
            out[name] = User(name, password, loopback_only=(name == "guest"), vhosts=self.server.vhosts)
        return out


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("persistence", "fsync"): ("always", "interval", "never"),
    ("server", "log_level"): ("debug", "info", "warning", "error"),
}


def _coerce(section: str, current: Any, key: str, value: Any) -> Any:
    names = {f.name: f for f in dataclasses.fields(current)}
    if key not in names:
        raise ConfigError(
            f"unknown key '{section}.{key}'; accepted keys: {', '.join(sorted(names))}")
    expected = type(getattr(current, key))
    where = f"'{section}.{key}'"
    if expected is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                value = True
            elif lowered in ("0", "false", "no", "off"):
                value = False
        if not isinstance(value, bool):
            raise ConfigError(f"bad value {value!r} for {where}; accepted: true or false")
    elif expected is int:
        try:
            if isinstance(value, bool):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"bad value {value!r} for {where}; accepted: an integer") from None
        if value < 0 or (key == "port" and value > 65535):
            raise ConfigError(f"bad value {value!r} for {where}; accepted: 0 to "
                              f"{65535 if key == 'port' else 'any positive integer'}")
    elif expected is float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"bad value {value!r} for {where}; accepted: a number") from None
    elif expected is tuple:
        if isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        elif isinstance(value, (list, tuple)):
            value = tuple(str(v) for v in value)
        else:
            raise ConfigError(f"bad value {value!r} for {where}; accepted: a list of strings")
    elif expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"bad value {value!r} for {where}; accepted: a string")
        choices = _CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(f"bad value {value!r} for {where}; accepted: {', '.join(choices)}")
    return value


def _sections() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(Settings)}


def from_mapping(data: Mapping[str, Any], base: Settings | None = None) -> Settings:
    settings = base or Settings()
    sections = _sections()
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(
                f"unknown section '{section}'; accepted sections: {', '.join(sorted(sections))}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"section '{section}' must be a table")
        settings = settings.replace(section, **dict(values))
    return settings


def from_env(environ: Mapping[str, str], base: Settings) -> Settings:
    """Apply ``MANIFOLD_<SECTION>_<KEY>`` overrides, e.g. ``MANIFOLD_AMQP_PORT=5673``."""
    sections = _sections()
    for name, value in sorted(environ.items()):
        if not name.startswith("MANIFOLD_"):
            continue
        rest = name[len("MANIFOLD_"):].lower()
        section, _, key = rest.partition("_")
        if section not in sections:
            raise ConfigError(f"unknown section in environment variable {name}; accepted "
                              f"sections: {', '.join(sorted(sections))}")
        base = base.replace(section, **{key: value})
    return base


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Embedded defaults, then the TOML file (if any), then the environment."""
    settings = Settings()
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        settings = from_mapping(data, settings)
    return from_env(os.environ if environ is None else environ, settings)
