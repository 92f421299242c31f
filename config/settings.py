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
class UserSpec:
    """A ``[[users]]`` table. ``password_hash`` comes from ``manifold hash-password``; a plaintext
    ``password`` is accepted for local setups (the broker logs a warning)."""
    name: str
    password_hash: str = ""
    password: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class VhostSpec:
    """A ``[[vhosts]]`` table; limits as RabbitMQ's vhost limits (0 means no limit)."""
    name: str
    max_connections: int = 0
    max_queues: int = 0


@dataclass(frozen=True)
class PermissionSpec:
    """A ``[[permissions]]`` table: regular expressions over resource names, as in RabbitMQ."""
    user: str
    vhost: str = "/"
    configure: str = ""
    write: str = ""
    read: str = ""


@dataclass(frozen=True)
class TopicPermissionSpec:
    """A ``[[topic_permissions]]`` table: regular expressions over routing keys of one exchange."""
    user: str
    vhost: str = "/"
    exchange: str = "amq.topic"
    write: str = ""
    read: str = ""


@dataclass(frozen=True)
class AccessKeySpec:
    """An ``[[access_keys]]`` table: an AWS access key id and secret signing as ``user``."""
    user: str
    id: str
    secret: str


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
    # Users, as "name:password" entries (the older form of [[users]]; such users may use every
    # vhost). guest/guest is always loopback-only.
    users: tuple[str, ...] = ("guest:guest",)
    # false removes the default guest user (RabbitMQ's loopback-only guest/guest).
    guest_user: bool = True
    vhosts: tuple[str, ...] = ("/",)
    # Failed logins from one address before each further one is slowed down.
    login_failures_free: int = 10
    # Longest delay put on a failed login (the back-off grows up to this).
    login_backoff_max_s: float = 2.0
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
    # How often rates and the dashboard's 10-minute history are sampled.
    sample_interval_s: float = 5.0


@dataclass(frozen=True)
class TlsSettings:
    """PEM certificate and key; with them the TLS listeners open beside the plaintext ones."""
    cert_file: str = ""
    key_file: str = ""
    # CA bundle that client certificates are verified against.
    ca_file: str = ""
    min_version: str = "1.2"
    # none: no client certificate asked; optional: verified when sent; required: must be sent.
    verify: str = "optional"
    # A verified client certificate's CN logs in without a password (AMQP EXTERNAL, MQTT and
    # STOMP without a password), like Mosquitto's use_identity_as_username.
    identity_as_username: bool = False
    handshake_timeout_s: float = 10.0
    amqps_port: int = 5671
    mqtts_port: int = 8883
    stomps_port: int = 61614
    wss_port: int = 15676
    # The AWS API ([http]) and management listeners speak HTTPS on their own ports instead of HTTP.
    https: bool = False


@dataclass(frozen=True)
class WebSocketSettings:
    """MQTT and STOMP over WebSocket (``wss_port`` is in [tls])."""
    enabled: bool = True
    port: int = 15675
    # Origins a browser may connect from; empty accepts every origin.
    allowed_origins: tuple[str, ...] = ()
    max_message_bytes: int = 16 * 1024 * 1024 + 64 * 1024
    # Ping a silent client this often (0 disables).
    ping_interval_s: float = 30.0


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
class KinesisSettings:
    # A shard iterator expires this long after GetShardIterator/GetRecords issued it (AWS: 5 min).
    iterator_ttl_s: int = 300


@dataclass(frozen=True)
class SnsSettings:
    # SMTP relay for email/email-json subscriptions, "smtp://HOST:PORT"; empty: email is refused.
    smtp_url: str = ""
    smtp_from: str = "no-reply@sns.amazonaws.com"
    # How long one HTTP/HTTPS or lambda-url delivery attempt may take (AWS: 15 s).
    http_timeout_s: float = 15.0


@dataclass(frozen=True)
class FunctionSettings:
    """A ``[[functions]]`` entry: what an SNS ``lambda`` subscription to
    ``arn:aws:lambda:REGION:ACCOUNT:function:NAME`` runs. Exactly one of ``command`` (a program
    given the event JSON on stdin; exit status 0 is success) and ``url`` (POSTed the event)."""
    name: str
    command: str = ""
    url: str = ""
    timeout_s: float = 30.0


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
    kinesis: KinesisSettings = field(default_factory=KinesisSettings)
    sns: SnsSettings = field(default_factory=SnsSettings)
    #: ``[[functions]]`` tables (SNS lambda subscriptions), by name
    functions: tuple[FunctionSettings, ...] = ()
    tls: TlsSettings = field(default_factory=TlsSettings)
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings)
    # Arrays of tables ([[users]] ...): who may log in and what they may touch.
    users: tuple[UserSpec, ...] = ()
    vhosts: tuple[VhostSpec, ...] = ()
    permissions: tuple[PermissionSpec, ...] = ()
    topic_permissions: tuple[TopicPermissionSpec, ...] = ()
    access_keys: tuple[AccessKeySpec, ...] = ()

    def replace(self, section: str, **values: Any) -> "Settings":
        """A copy with some keys of one section changed (values are validated)."""
        current = getattr(self, section)
        checked = {k: _coerce(section, current, k, v) for k, v in values.items()}
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **checked)})

    def with_tables(self, name: str, tables: Any) -> "Settings":
        """A copy with one array of tables (``users``, ``permissions``...) replaced."""
        parsed = _tables(name, tables)
        if name == "functions":
            for i, function in enumerate(parsed):
                if bool(function.command) == bool(function.url):
                    raise ConfigError(f"[[functions]] entry {i + 1} needs exactly one of "
                                      "'command' and 'url'")
        return dataclasses.replace(self, **{name: parsed})

    def vhost_specs(self) -> tuple[VhostSpec, ...]:
        """``[server] vhosts`` names plus ``[[vhosts]]`` tables, each name once."""
        specs = {name: VhostSpec(name) for name in self.server.vhosts}
        for spec in self.vhosts:
            specs[spec.name] = spec
        return tuple(specs.values())


#: array-of-tables name -> the dataclass of one table
_TABLES: dict[str, type] = {"users": UserSpec, "vhosts": VhostSpec, "permissions": PermissionSpec,
                            "topic_permissions": TopicPermissionSpec, "access_keys": AccessKeySpec,
                            "functions": FunctionSettings}


def _tables(name: str, tables: Any) -> tuple:
    kind = _TABLES[name]
    if isinstance(tables, Mapping) or not isinstance(tables, (list, tuple)):
        raise ConfigError(f"'{name}' must be an array of tables ([[{name}]])")
    out = []
    for i, table in enumerate(tables):
        if isinstance(table, kind):
            out.append(table)
            continue
        if not isinstance(table, Mapping):
            raise ConfigError(f"[[{name}]] entry {i + 1} must be a table")
        fields = {f.name: f for f in dataclasses.fields(kind)}
        required = [f for f, spec in fields.items()
                    if spec.default is dataclasses.MISSING]
        missing = [f for f in required if f not in table]
        if missing:
            raise ConfigError(f"[[{name}]] entry {i + 1} lacks '{missing[0]}'")
        sample = kind(**{f: "" for f in required})
        values = {key: _coerce(name, sample, key, value) for key, value in table.items()}
        out.append(kind(**values))
    return tuple(out)


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("persistence", "fsync"): ("always", "interval", "never"),
    ("server", "log_level"): ("debug", "info", "warning", "error"),
    ("tls", "min_version"): ("1.2", "1.3"),
    ("tls", "verify"): ("none", "optional", "required"),
}


def _coerce(section: str, current: Any, key: str, value: Any) -> Any:
    names = {f.name: f for f in dataclasses.fields(current)}
    if key not in names:
        if section in _TABLES:
            raise ConfigError(f"unknown key '{key}' in [[{section}]]; accepted keys: "
                              f"{', '.join(sorted(names))}")
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
        if value < 0 or (key.endswith("port") and value > 65535):
            raise ConfigError(f"bad value {value!r} for {where}; accepted: 0 to "
                              f"{65535 if key.endswith('port') else 'any positive integer'}")
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
        if section in _TABLES:
            settings = settings.with_tables(section, values)
            continue
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
        if section not in sections or section in _TABLES:
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
