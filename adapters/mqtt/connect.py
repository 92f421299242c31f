"""CONNECT (limits, will, login, client identifier, session present or new, takeover, keep
alive, the resend of what was in flight [MQTT-4.4.0-1]), wills, and DISCONNECT.

``ConnectMethods`` is one part of ``MqttSession`` (session.py).
"""
from __future__ import annotations

import base64
import logging
import os
from typing import Any

from manifold.broker.errors import AccessRefused, BrokerError, NotAllowed

from . import codec as c
from . import topics
from .properties import topic_of
from .server import NEVER_EXPIRES, SessionState

log = logging.getLogger("manifold.mqtt")

AWAIT_CONNECT, CONNECTED, CLOSED = "AWAIT_CONNECT", "CONNECTED", "CLOSED"


class ConnectMethods:
    """CONNECT, wills and DISCONNECT."""

    # ================================================================ CONNECT
    def _refuse(self, code311: int, code5: int, reason: str, text: str | None = None) -> None:
        if self.v5:
            props = {"reason_string": text} if text else None
            self._send(c.serialize(c.Connack(False, code5, props), c.MQTT_5))
        else:
            self._send(c.serialize(c.Connack(False, code311), self.version))
        self.state_name = CLOSED
        self._close(reason)

    def on_connect(self, p: c.Connect) -> None:
        self.version = p.protocol_level
        self.v5 = v5 = p.protocol_level == c.MQTT_5
        props = p.properties
        server = self.server
        settings = self.settings
        if v5:
            # The in-flight window: the client's Receive Maximum, bounded by ours so that one
            # session never holds more than [mqtt] receive_maximum unacknowledged messages.
            self.window.limit = min(props.get("receive_maximum", 65535),
                                    settings.receive_maximum)
            self.client_max_packet = props.get("maximum_packet_size", 268_435_460)
            self.client_alias_max = props.get("topic_alias_maximum", 0)
            self.request_problem_info = bool(props.get("request_problem_information", 1))
            if "authentication_method" in props:
                self._refuse(0, c.BAD_AUTHENTICATION_METHOD, "unsupported authentication method",
                             "enhanced authentication is not supported")
                return
        else:
            self.window.limit = settings.receive_maximum
        # The will topic must be a valid topic name (MQTT §3.1.3.3)
        if p.will is not None:
            if not topics.valid_topic_name(p.will.topic):
                if v5:
                    self._refuse(0, c.TOPIC_NAME_INVALID, "invalid will topic")
                else:
                    self._close("invalid will topic")
                return
            if v5 and p.will.properties.get("payload_format_indicator") == 1:
                try:
                    p.will.payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._refuse(0, c.PAYLOAD_FORMAT_INVALID, "will payload is not UTF-8")
                    return
        # Authentication with the users AMQP uses. No user name: RabbitMQ's default MQTT user.
        username, password = p.username, p.password
        vhost_name = "/"
        # A verified client certificate's CN may stand in for user name and password ([tls]
        # identity_as_username, as Mosquitto's use_identity_as_username); broker/access.py decides.
        identity = self.conn.tls_identity
        if username is None and identity is None:
            username, password = "guest", b"guest"
        elif username is not None and ":" in username:
            # RabbitMQ's "vhost:user" form
            maybe_vhost, _, rest = username.partition(":")
            if maybe_vhost in server.broker.vhosts:
                vhost_name, username = maybe_vhost, rest
        try:
            pw = password.decode("utf-8") if password is not None else None
        except UnicodeDecodeError:
            pw = None
        try:
            user = server.broker.authenticate(username, pw, self.conn.peer_host, identity)
        except AccessRefused as exc:
            # The failed-login back-off holds the CONNACK back (per source address).
            self.conn.hold_output(getattr(exc, "delay_s", 0.0))
            self._refuse(c.CONNACK_BAD_CREDENTIALS, c.BAD_USER_NAME_OR_PASSWORD, exc.text,
                         "bad user name or password")
            return
        try:
            self.vhost = server.broker.open_vhost(vhost_name, user, self.conn)
        except NotAllowed as exc:
            self._refuse(c.CONNACK_NOT_AUTHORIZED, c.NOT_AUTHORIZED, exc.text, exc.text)
            return
        self.user = user
        self.grant = server.broker.grant(user, vhost_name)
        self.conn.opened(user.name, self.vhost.name)
        # Client identifier [MQTT-3.1.3-6/7/8]
        client_id = p.client_id
        assigned = None
        if not client_id:
            if not v5 and not p.clean_start:
                self._refuse(c.CONNACK_IDENTIFIER_REJECTED, c.CLIENT_IDENTIFIER_NOT_VALID,
                             "empty client id with clean session 0")
                return
            client_id = assigned = "manifold-" + base64.urlsafe_b64encode(
                os.urandom(12)).decode()
        self.client_id = client_id
        # Session expiry: 3.1.1 clean session 0 = keep until the (configured) maximum.
        max_expiry = settings.max_session_expiry_s
        if v5:
            expiry = props.get("session_expiry_interval", 0)
        else:
            expiry = 0 if p.clean_start else NEVER_EXPIRES
        granted_expiry = expiry
        if max_expiry and expiry > max_expiry:
            # also for 3.1.1 persistent sessions: an abandoned client id must not keep its
            # queue forever (RabbitMQ's mqtt.max_session_expiry_interval_seconds)
            granted_expiry = max_expiry
        # Takeover [MQTT-3.1.4-3]: the existing connection with this client id is closed.
        state = server.sessions.get(client_id)
        if state is not None and state.conn is not None:
            old = state.conn
            old._disconnect(c.SESSION_TAKEN_OVER, "session taken over by a new connection")
            # Run its end now, so the session is free for this connection (its will follows the
            # normal rules: sent now without a delay, else cancelled just below).
            old.connection_lost_early()
            state = server.sessions.get(client_id)
        # [MQTT-3.1.3-9] a delayed will is not sent if the client id connects again in time.
        server.cancel_will(client_id)
        session_present = False
        if state is not None and (p.clean_start or state.vhost is not self.vhost):
            server.end_session(state)
            state = None
        if state is None:
            state = SessionState(server, client_id, self.vhost)
            state.durable = granted_expiry != 0
            server.sessions[client_id] = state
        else:
            session_present = True  # [MQTT-3.2.2-2]
        state.expiry_s = granted_expiry
        server.save_session(state)  # the CONNACK need not wait: nothing was promised yet
        self.state = state
        self.will = p.will
        self.state_name = CONNECTED
        # Keep alive: the client is dropped after 1.5 times its keep alive [MQTT-3.1.2-24].
        keep_alive = p.keep_alive
        server_keep_alive = None
        if v5 and settings.max_keepalive_s and (keep_alive == 0 or
                                                keep_alive > settings.max_keepalive_s):
            keep_alive = server_keep_alive = settings.max_keepalive_s
        self.keep_alive = keep_alive
        if keep_alive:
            self.conn.set_keepalive(read_timeout_s=keep_alive * 1.5,
                                    on_read_timeout=self._keepalive_timeout)
        else:
            self.conn.set_keepalive(None)
        ack_props: dict = {}
        if v5:
            ack_props["receive_maximum"] = settings.receive_maximum
            ack_props["topic_alias_maximum"] = settings.topic_alias_maximum
            ack_props["maximum_packet_size"] = settings.max_packet_bytes
            ack_props["retain_available"] = 1
            ack_props["wildcard_subscription_available"] = 1
            ack_props["subscription_identifier_available"] = 1
            ack_props["shared_subscription_available"] = 1
            if assigned is not None:
                ack_props["assigned_client_identifier"] = assigned
            if server_keep_alive is not None:
                ack_props["server_keep_alive"] = server_keep_alive
            if granted_expiry != expiry:
                ack_props["session_expiry_interval"] = granted_expiry  # [MQTT-3.2.2.3.2]
        self._send(c.serialize(c.Connack(session_present, 0, ack_props), self.version))
        # [MQTT-4.4.0-1] resend unacknowledged PUBLISH (DUP=1) and PUBREL with their original
        # packet identifiers, in order, before anything new.
        for pid, out in list(state.outbound.items()):
            if out.released:
                self._send(c.serialize(c.Pubrel(pid), self.version))
            else:
                self._send_publish(out.message, topic_of(out.message), out.qos, out.retain,
                                   out.sub_ids, pid, True)
        state.attach(self)
        self._resume_consumers()

    def connection_lost_early(self) -> None:
        """Takeover: end this connection's hold on the session at once (the socket closes
        later); its will follows the normal rules."""
        if self.state_name != CONNECTED:
            return
        self.connection_lost()

    def server_ended(self, reason: str) -> None:
        """The session was ended by the server (its queue deleted): DISCONNECT 0x80 and close."""
        self._disconnect(c.UNSPECIFIED_ERROR, f"session ended: {reason}", reason)
        self._flush()

    def _keepalive_timeout(self) -> None:
        self._disconnect(c.KEEP_ALIVE_TIMEOUT, "keep-alive timeout: nothing received for 1.5 "
                         "times the keep alive", "keep alive timeout")

    # ================================================================ wills
    def _publish_will(self) -> None:
        will = self.will
        state = self.state
        if will is None or state is None:
            return
        server = self.server
        vhost = self.vhost
        delay = will.properties.get("will_delay_interval", 0) if self.v5 else 0
        if delay and state.expiry_s != 0:
            # [MQTT-3.1.3-9] sent after the delay, or when the session ends, if no new connection
            # with this client id comes first (on_connect cancels it).
            delay = min(delay, state.expiry_s)
            origin = state

            def fire() -> None:
                self._route_will(vhost, will, origin)
            server.schedule_will(self.client_id, delay, fire)
        else:
            self._route_will(vhost, will, state)

    def _route_will(self, vhost: Any, will: c.Will, origin: Any) -> None:
        try:
            self._route(vhost, will.topic, will.payload, will.qos, will.retain,
                        will.properties if self.v5 else {}, origin)
        except BrokerError as exc:  # pragma: no cover
            log.warning("will of %s not published: %s", self.client_id, exc.text)

    # ================================================================ DISCONNECT
    def on_disconnect(self, p: c.Disconnect) -> None:
        state = self.state
        if self.v5:
            expiry = p.properties.get("session_expiry_interval")
            if expiry is not None:
                if state.expiry_s == 0 and expiry != 0:  # type: ignore[union-attr]
                    raise c.ProtocolError("session expiry set on DISCONNECT after 0 on CONNECT")
                cap = self.settings.max_session_expiry_s
                state.expiry_s = min(expiry, cap) if cap else expiry  # type: ignore[union-attr]
            if p.reason_code != c.SUCCESS:
                # [MQTT-3.14.4-3] only reason 0x00 discards the will: 0x04 (Disconnect with
                # Will Message) and error codes leave it to be published.
                self._close(f"client disconnected with reason 0x{p.reason_code:02X}")
                return
        # [MQTT-3.14.4-3] a DISCONNECT (3.1.1, or 5.0 with reason 0x00) discards the will.
        self._clean_disconnect = True
        self.will = None
        self._close("client sent DISCONNECT")
