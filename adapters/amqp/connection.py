"""Connection class methods (channel 0): the handshake, Close, UpdateSecret.

Connection states (one session per TCP connection) [AMQP 0-9-1 2.2.4]::

    AWAIT_HEADER --protocol header--> (send Start) AWAIT_START_OK --StartOk, auth ok-->
    (send Tune) AWAIT_TUNE_OK --TuneOk--> AWAIT_OPEN --Open, vhost ok--> OPEN
    OPEN --Connection.Close from client--> (send CloseOk, close socket)
    any --connection exception--> (send Connection.Close) CLOSING --CloseOk / timeout--> closed

``ConnectionMethods`` is one part of ``AMQPSession`` (see session.py); it uses the session's
state, output list and channels.
"""
from __future__ import annotations

import logging
from typing import Any

from manifold.broker.errors import BrokerError

from . import codec, fields, replies
from .codec import u32
from .errors import AMQPError

log = logging.getLogger("manifold.amqp")

AWAIT_HEADER, AWAIT_START_OK, AWAIT_TUNE_OK, AWAIT_OPEN, OPEN, CLOSING, CLOSED = range(7)

HANDSHAKE_TIMEOUT_S = 10.0

SERVER_CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,  # x-priority consumer argument (broker/queue.py)
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value or b"")


class ConnectionMethods:
    """Connection.* handlers: authentication, tuning, vhost open and close."""

    def send_start(self) -> None:
        props = {
            "product": "Manifold",
            "version": "0.1.0",
            "platform": "Python",
            "copyright": "Manifold contributors",
            "information": "Manifold message broker, AMQP 0-9-1 (RabbitMQ dialect)",
            "cluster_name": "manifold",
            "capabilities": SERVER_CAPABILITIES,
        }
        # EXTERNAL (the verified TLS client certificate's CN is the user, as RabbitMQ's
        # rabbitmq-auth-mechanism-ssl) only when there is such a certificate.
        external = self.conn.tls_identity and self.broker.access.identity_as_username
        mechanisms = "PLAIN AMQPLAIN" + (" EXTERNAL" if external else "")
        payload = (b"\x00\x09" + fields.encode_table(props) + codec.longstr(mechanisms) +
                   codec.longstr("en_US"))
        self.send(replies.connection_start(payload))
        self.state = AWAIT_START_OK

    def _start_ok(self, m: Any) -> None:
        self.client_properties = m.client_properties or {}
        caps = self.client_properties.get("capabilities") or {}
        if not isinstance(caps, dict):
            caps = {}
        self.cancel_notify = bool(caps.get("consumer_cancel_notify"))
        self.blocked_notify = bool(caps.get("connection.blocked"))
        mechanism = m.mechanism or ""
        response = _as_bytes(m.response)
        if mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) != 3:
                raise AMQPError(403, "ACCESS_REFUSED - malformed PLAIN response", True)
            username, password = parts[1].decode("utf-8", "replace"), \
                parts[2].decode("utf-8", "replace")
        elif mechanism == "AMQPLAIN":
            try:
                table, _ = fields.decode_table(u32(len(response)) + response)
            except (ValueError, IndexError) as exc:
                raise AMQPError(403, f"ACCESS_REFUSED - malformed AMQPLAIN response: {exc}",
                                True) from None
            username, password = str(table.get("LOGIN", "")), str(table.get("PASSWORD", ""))
        elif mechanism == "EXTERNAL" and self.conn.tls_identity:
            username, password = None, None
        else:
            raise AMQPError(503, f"COMMAND_INVALID - unknown authentication mechanism "
                                 f"'{mechanism}'", True)
        try:
            self.user = self.broker.authenticate(username, password, self.conn.peer_host,
                                                 self.conn.tls_identity,
                                                 external=mechanism == "EXTERNAL")
        except BrokerError as exc:
            log.info("AMQP login refused from %s: %s", self.conn.peer_host, exc.text)
            # The failed-login back-off (per source address) holds the refusal back.
            self.conn.hold_output(getattr(exc, "delay_s", 0.0))
            if caps.get("authentication_failure_close"):
                raise AMQPError(403, f"ACCESS_REFUSED - Login was refused using authentication "
                                     f"mechanism {mechanism}. For details see the broker "
                                     "logfile.", True) from None
            # Without the capability RabbitMQ just drops the connection.
            self.state = CLOSED
            self.flush()
            self.conn.close(f"login refused: {exc.text}")
            return
        self.send(replies.connection_tune(self.channel_max, self.frame_max, self.heartbeat))
        self.state = AWAIT_TUNE_OK

    def _tune_ok(self, m: Any) -> None:
        frame_max = m.frame_max or self.frame_max
        if frame_max > self.frame_max:
            raise AMQPError(530, f"NOT_ALLOWED - frame_max={frame_max} > {self.frame_max} max "
                                 "size", True)
        if frame_max < codec.FRAME_MIN_SIZE:
            raise AMQPError(530, f"NOT_ALLOWED - frame_max={frame_max} < "
                                 f"{codec.FRAME_MIN_SIZE} min size", True)
        self.frame_max = frame_max
        self.decoder.frame_max = frame_max
        self.body_chunk = frame_max - codec.FRAME_OVERHEAD
        channel_max = m.channel_max or self.channel_max
        self.channel_max = min(channel_max, self.channel_max) if self.channel_max else channel_max
        self.heartbeat = m.heartbeat or 0
        conn = self.conn
        if self.heartbeat:
            hb = self.heartbeat
            # Two missed heartbeats and the peer is gone [AMQP 0-9-1 4.2.7].
            conn.set_keepalive(
                hb * 2, lambda: conn.abort(f"missed heartbeats from client, timeout: {hb}s"),
                hb / 2, lambda: self.send(codec.HEARTBEAT_FRAME))
        else:
            conn.set_keepalive(HANDSHAKE_TIMEOUT_S,
                               lambda: conn.abort("handshake timeout: no connection.open"))
        self.state = AWAIT_OPEN

    def _open(self, m: Any) -> None:
        name = m.virtual_host or "/"
        self.vhost = self.broker.open_vhost(name, self.user, self.conn)  # 530 NOT_ALLOWED
        self.grant = self.broker.grant(self.user, name)
        self.conn.opened(self.user.name, name)
        if not self.heartbeat:
            self.conn.set_keepalive(None, None, None, None)
        self.send(replies.connection_open_ok())
        self.state = OPEN

    def _connection_close(self, m: Any) -> None:
        for channel in self.channels.values():
            if not channel.closing:
                channel.flush_confirms()
        self.cleanup_all()
        self.send(replies.connection_close_ok())
        self.state = CLOSED
        self.flush()
        self.conn.close(f"client closed the connection ({m.reply_code} {m.reply_text})")

    def _connection_close_ok(self, m: Any) -> None:
        pass

    def _ignore(self, m: Any) -> None:
        pass

    def _update_secret(self, m: Any) -> None:
        self.send(replies.connection_update_secret_ok())
