"""One MQTT connection: packets in -> core calls, deliveries -> PUBLISH packets out.

States (h11 style):

    state        packet from the client        next state / effect
    ----------   ---------------------------   -------------------------------------------------
    AWAIT_CONN   CONNECT                       CONNECTED (CONNACK 0) or CLOSED (refusing CONNACK)
    AWAIT_CONN   anything else                 CLOSED, no reply             [MQTT-3.1.0-1]
    CONNECTED    PUBLISH/PUB*/SUB*/UNSUB*/PING CONNECTED
    CONNECTED    CONNECT                       CLOSED (protocol error)      [MQTT-3.1.0-2]
    CONNECTED    DISCONNECT                    CLOSED, will discarded (5.0: only with reason 0x00)
    any          malformed / protocol error    CLOSED (5.0: DISCONNECT 0x81/0x82 first), will sent
    any          connection lost               CLOSED, will sent (after its delay)

The session state that outlives the connection (subscriptions, queue, in-flight messages) is a
``server.SessionState``; this object is the live connection attached to it. Deliveries to the
client and their acknowledgements are in ``outbound.OutboundMethods``, the property mapping in
``properties``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import base64
from typing import Any

from manifold.broker.errors import AccessRefused, BrokerError, NotAllowed
from manifold.broker.in_order import InOrderReplies

from . import codec as c
from . import topics
from .decoder import MqttDecoder
from .outbound import OutboundMethods
from .properties import properties_from_mqtt, topic_of
from .server import (NEVER_EXPIRES, TOPIC_EXCHANGE, MqttMessage, MqttServer, SessionState,
                     Subscription)

log = logging.getLogger("manifold.mqtt")

AWAIT_CONNECT, CONNECTED, CLOSED = "AWAIT_CONNECT", "CONNECTED", "CLOSED"

# Bytes pending in our own output list before it is handed to the transport.
_FLUSH_BYTES = 64 * 1024


class MqttSession(OutboundMethods):
    """The transport's Session for one MQTT connection."""

    def __init__(self, server: MqttServer):
        self.server = server
        self.settings = server.mqtt
        self.decoder = MqttDecoder("server", max_packet_size=self.settings.max_packet_bytes)
        self.conn: Any = None
        self.state_name = AWAIT_CONNECT
        self.version = c.MQTT_3_1_1
        self.v5 = False
        self.state: SessionState | None = None
        self.client_id = ""
        self.vhost: Any = None
        self.user: Any = None
        #: what the user may do in the vhost (broker/access.py Grant), set at CONNECT
        self.grant: Any = None
        self.will: c.Will | None = None
        self.keep_alive = 0
        # Client limits (MQTT 5 CONNECT properties) and our own
        self.client_receive_max = self.settings.receive_maximum
        self.client_max_packet = 268_435_460
        self.client_alias_max = 0
        self.out_aliases: dict[str, int] = {}
        self.in_aliases: dict[int, str] = {}
        self.request_problem_info = True
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        #: acknowledgements waiting, in order, for the writes they promise
        self._acks = InOrderReplies(self._release_ack, self._flush)
        self._clean_disconnect = False
        self._closing = False
        #: topic -> routing key, for the topics this client publishes to (bounded)
        self._keys: dict[str, str] = {}

    # ================================================================ transport callbacks
    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        # MQTT §3.1.4: a client that does not send CONNECT in reasonable time is dropped.
        conn.set_keepalive(read_timeout_s=10.0, on_read_timeout=lambda: self._close(
            "no CONNECT within 10 s"))

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.receive_data(data)
        try:
            while not self._closing:
                packet = decoder.next_event()
                if packet is c.NEED_DATA:
                    break
                self.handle(packet)
        except c.UnsupportedProtocolVersion as exc:
            # [MQTT-3.1.2-2] CONNACK 0x01 (3.1.1) or 0x84 (5.0), then close.
            code = c.UNSUPPORTED_PROTOCOL_VERSION if exc.level == 5 else \
                c.CONNACK_UNACCEPTABLE_PROTOCOL
            self._send(c.serialize(c.Connack(False, code),
                                   c.MQTT_5 if code == c.UNSUPPORTED_PROTOCOL_VERSION else 4))
            self._close(f"unsupported protocol level {exc.level}")
        except c.MqttError as exc:
            self._protocol_failure(exc)
        except Exception as exc:  # a bug must cost this connection only, never the broker
            log.exception("MQTT connection %s: internal error", self.client_id)
            self._protocol_failure(c.MqttError(f"internal error: {exc}",
                                               c.IMPLEMENTATION_SPECIFIC_ERROR))
        self._flush()

    def _protocol_failure(self, exc: c.MqttError) -> None:
        """Bad input closes this connection only; 5.0 clients hear why first [MQTT-4.13.1-1]."""
        if self.state_name == CONNECTED and self.v5:
            props = {"reason_string": exc.text[:200]} if self.request_problem_info else None
            self._send(c.serialize(c.Disconnect(exc.reason_code, props), c.MQTT_5))
        self._close(f"{type(exc).__name__}: {exc.text}")

    def connection_lost(self) -> None:
        was = self.state_name
        self.state_name = CLOSED
        state = self.state
        if was != CONNECTED or state is None:
            return
        if not self._clean_disconnect and self.will is not None:
            self._publish_will()
        self.will = None
        if state.conn is self:
            state.conn = None
            if state.expiry_s == 0:
                self.server.end_session(state)
            else:
                state.detach()

    def going_away(self) -> None:
        if self.state_name == CONNECTED and self.v5:
            self._send(c.serialize(c.Disconnect(c.SERVER_SHUTTING_DOWN), c.MQTT_5))
            self._flush()
        self._clean_disconnect = True  # a shutdown is not the client's failure: no will
        self._close("server shutdown")

    def force_close(self, reason: str) -> None:
        """Closed by an operator: MQTT 5 DISCONNECT 0x98 Administrative action with the reason
        as reason string; 3.1.1 has no server DISCONNECT and just closes. The will is sent."""
        if self.v5 and self.state_name == CONNECTED:
            self._send(c.serialize(c.Disconnect(c.ADMINISTRATIVE_ACTION,
                                                {"reason_string": reason}), c.MQTT_5))
        self._close(f"closed by an operator: {reason}")

    def resume_writing(self) -> None:
        self._resume_consumers()

    # ================================================================ output
    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes >= _FLUSH_BYTES:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._flush()
        if self._out_bytes == 0 and self.state_name == CONNECTED:
            # credit held back by our own buffer came back
            self._resume_consumers()

    def _flush(self) -> None:
        if self._out:
            out = self._out
            self._out = []
            self._out_bytes = 0
            if len(out) == 1:
                self.conn.write(out[0])
            else:
                self.conn.writelines(out)

    def _close(self, reason: str) -> None:
        self._flush()
        self._closing = True
        if self.state_name == AWAIT_CONNECT:
            self.state_name = CLOSED
        self.conn.close(reason)

    def _disconnect(self, code: int, reason: str, text: str | None = None) -> None:
        """Server-initiated DISCONNECT (5.0) with a reason code; 3.1.1 just closes."""
        if self.v5 and self.state_name == CONNECTED:
            props = {"reason_string": text} if text and self.request_problem_info else None
            self._send(c.serialize(c.Disconnect(code, props), c.MQTT_5))
        self._close(reason)

    # ================================================================ dispatch
    def handle(self, p: c.Packet) -> None:
        t = p.type
        if self.state_name == AWAIT_CONNECT:
            if t != c.CONNECT:  # pragma: no cover - the decoder refuses this already
                raise c.ProtocolError("the first packet must be CONNECT")
            self.on_connect(p)  # type: ignore[arg-type]
            return
        if t == c.PUBLISH:
            self.on_publish(p)  # type: ignore[arg-type]
        elif t == c.PUBACK:
            self.on_puback(p)  # type: ignore[arg-type]
        elif t == c.PUBREC:
            self.on_pubrec(p)  # type: ignore[arg-type]
        elif t == c.PUBREL:
            self.on_pubrel(p)  # type: ignore[arg-type]
        elif t == c.PUBCOMP:
            self.on_pubcomp(p)  # type: ignore[arg-type]
        elif t == c.SUBSCRIBE:
            self.on_subscribe(p)  # type: ignore[arg-type]
        elif t == c.UNSUBSCRIBE:
            self.on_unsubscribe(p)  # type: ignore[arg-type]
        elif t == c.PINGREQ:
            self._send(b"\xd0\x00")  # [MQTT-3.12.4-1]
        elif t == c.DISCONNECT:
            self.on_disconnect(p)  # type: ignore[arg-type]
        elif t == c.AUTH:
            # Enhanced authentication is not offered, so AUTH is unexpected (MQTT 5 §4.12)
            raise c.ProtocolError("AUTH without an authentication method")
        else:  # pragma: no cover
            raise c.ProtocolError(f"unexpected {c.PACKET_NAMES.get(t)}")

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
            self.client_receive_max = min(props.get("receive_maximum", 65535),
                                          settings.receive_maximum)
            self.client_max_packet = props.get("maximum_packet_size", 268_435_460)
            self.client_alias_max = props.get("topic_alias_maximum", 0)
            self.request_problem_info = bool(props.get("request_problem_information", 1))
            if "authentication_method" in props:
                self._refuse(0, c.BAD_AUTHENTICATION_METHOD, "unsupported authentication method",
                             "enhanced authentication is not supported")
                return
        else:
            self.client_receive_max = settings.receive_maximum
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

    # ================================================================ inbound PUBLISH
    def _route(self, vhost: Any, topic: str, payload: bytes, qos: int, retain: bool,
               props: dict, origin: Any) -> Any:
        if props:
            props = {k: v for k, v in props.items()
                     if k not in ("topic_alias", "subscription_identifier", "will_delay_interval")}
        key = self._keys.get(topic)
        if key is None:
            key = topics.topic_to_key(topic)
            if len(self._keys) >= 256:
                self._keys.clear()
            self._keys[topic] = key
        # Publishing needs write on amq.topic and topic write on the routing key (RabbitMQ).
        self.grant.check_publish(TOPIC_EXCHANGE, key)
        message = MqttMessage(TOPIC_EXCHANGE, key, payload,
                              properties_from_mqtt(props, qos), origin=origin, retain=retain,
                              qos=qos, mqtt_properties=props or None,
                              timestamp_ms=self.server.now_ms(), topic=topic)
        stored = None
        if retain:
            stored = self.server.retain(topic, message, props.get("message_expiry_interval")
                                        if props else None)
        if self.conn is not None:
            self.conn.mark_publishing()
        result = vhost.publish(TOPIC_EXCHANGE, message.routing_key, message)
        if stored is not None:
            # A PUBACK for a retained message means the retained copy is durable too.
            result.wait = stored if result.wait is None else asyncio.gather(result.wait, stored)
        return result

    def on_publish(self, p: c.Publish) -> None:
        topic = p.topic
        props = p.properties
        qos = p.qos
        if props:
            alias = props.get("topic_alias")
            if alias is not None:
                # [MQTT-3.3.2-8/9] alias within 1..our Topic Alias Maximum
                if alias == 0 or alias > self.settings.topic_alias_maximum:
                    self._disconnect(c.TOPIC_ALIAS_INVALID, f"topic alias {alias} out of range",
                                     "topic alias out of range")
                    return
                if topic:
                    self.in_aliases[alias] = topic
                else:
                    known = self.in_aliases.get(alias)
                    if known is None:
                        raise c.ProtocolError(f"unknown topic alias {alias}")
                    topic = known
            if props.get("payload_format_indicator") == 1:
                try:
                    p.payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._ack_publish_error(p, c.PAYLOAD_FORMAT_INVALID,
                                            "payload is not valid UTF-8")
                    return
            if "subscription_identifier" in props:
                raise c.ProtocolError("subscription identifier in a PUBLISH from a client")
        if not topic or "+" in topic or "#" in topic:
            # [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-1] not empty
            if self.v5:
                self._disconnect(c.TOPIC_NAME_INVALID, "invalid topic name", "invalid topic name")
            else:
                self._close(f"invalid topic name {topic!r}")
            return
        if qos == 2:
            state = self.state
            pid = p.packet_id
            if pid in state.inbound_qos2:  # type: ignore[union-attr]
                # MQTT §4.3.3: a resend before PUBREL is acknowledged, not delivered twice.
                self._send(c.serialize(c.Pubrec(pid), self.version))  # type: ignore[arg-type]
                return
            if len(state.inbound_qos2) >= self.settings.receive_maximum:  # type: ignore[union-attr]
                self._disconnect(c.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded",
                                 "receive maximum exceeded")
                return
        try:
            result = self._route(self.vhost, topic, p.payload, qos, p.retain, props, self.state)
        except AccessRefused as exc:
            self._publish_denied(p, exc.text)
            return
        except BrokerError as exc:
            self._ack_publish_error(p, c.IMPLEMENTATION_SPECIFIC_ERROR, exc.text)
            return
        if qos == 0:
            return
        code = 0
        if result.rejected:
            code = c.QUOTA_EXCEEDED
        elif result.routed == 0 and self.v5:
            code = c.NO_MATCHING_SUBSCRIBERS
        wait = result.wait
        if qos == 1:
            if code:
                packet = c.serialize(c.Puback(p.packet_id, code), self.version)  # type: ignore[arg-type]
            else:
                packet = b"\x40\x02" + p.packet_id.to_bytes(2, "big")  # type: ignore[union-attr]
        else:
            if code < 0x80:
                stored = self.server.qos2_received(self.state, p.packet_id)  # type: ignore[arg-type]
                if stored is not None:
                    wait = stored if wait is None else asyncio.gather(wait, stored)
            packet = c.serialize(c.Pubrec(p.packet_id, code), self.version)  # type: ignore[arg-type]
        if wait is None:
            self._ack_after(None, packet)
            return
        # A write that failed is never acknowledged: MQTT 5 gets reason 0x80 (the client may
        # resend), MQTT 3.1.1 cannot refuse a PUBLISH, so the connection is closed and the
        # client resends on reconnect [MQTT-4.4.0-1].
        pid = p.packet_id
        cls = c.Puback if qos == 1 else c.Pubrec

        def refused() -> bytes | None:
            if qos == 2:
                self.server.qos2_released(self.state, pid)  # not stored: a resend is new
            if not self.v5:
                return None
            return c.serialize(cls(pid, c.UNSPECIFIED_ERROR), c.MQTT_5)  # type: ignore[arg-type]

        self._ack_after(wait, packet, refused)

    def _publish_denied(self, p: c.Publish, text: str) -> None:
        """MQTT 5: PUBACK/PUBREC 0x87 (not authorized). 3.1.1 has no negative ack: the message
        is dropped and logged, and acknowledged so the client does not resend it; the connection
        stays (as in Mosquitto)."""
        log.warning("MQTT %s: PUBLISH to %r dropped: %s", self.client_id, p.topic, text)
        if p.qos == 0:
            return
        pid = p.packet_id
        if self.v5:
            props = {"reason_string": text} if self.request_problem_info else None
            cls = c.Puback if p.qos == 1 else c.Pubrec
            packet = c.serialize(cls(pid, c.NOT_AUTHORIZED, props), c.MQTT_5)  # type: ignore
        elif p.qos == 1:
            packet = c.serialize(c.Puback(pid), self.version)  # type: ignore[arg-type]
        else:
            self.state.inbound_qos2.add(pid)  # type: ignore[union-attr,arg-type]
            packet = c.serialize(c.Pubrec(pid), self.version)  # type: ignore[arg-type]
        self._ack_after(None, packet)  # in order behind acks still waiting for an fsync

    def _ack_publish_error(self, p: c.Publish, code: int, text: str) -> None:
        if p.qos == 0:
            if self.v5 and code == c.PAYLOAD_FORMAT_INVALID:
                self._disconnect(code, text, text)
            return
        if not self.v5:
            self._close(text)  # 3.1.1 has no way to refuse a PUBLISH
            return
        props = {"reason_string": text} if self.request_problem_info else None
        cls = c.Puback if p.qos == 1 else c.Pubrec
        self._send(c.serialize(cls(p.packet_id, code, props), c.MQTT_5))  # type: ignore[arg-type]

    def _ack_after(self, wait: Any, packet: bytes, refused: Any = None, then: Any = None) -> None:
        """PUBACK/PUBREC/PUBCOMP/SUBACK once what it acknowledges is safe; acknowledgements
        stay in order [MQTT-4.6.0-2]. If the write fails, ``refused()`` gives the packet to send
        instead, or None: then the connection is closed. ``then()`` runs after the packet went."""
        self._acks.add((packet, refused, then), wait)

    def _release_ack(self, ack: tuple, error: Any) -> bool:
        packet, refused, then = ack
        if error is not None:
            packet = refused() if refused is not None else None
            if packet is None:
                self._close(f"could not store a message: {error}")
                return False
            self._send(packet)
            return True
        self._send(packet)
        if then is not None:
            then()
        return True

    def on_pubrel(self, p: c.Pubrel) -> None:
        # MQTT §4.3.3: discard the packet id state, then PUBCOMP; an unknown id gets 0x92 (5.0).
        state = self.state
        wait = None
        if p.packet_id in state.inbound_qos2:  # type: ignore[union-attr]
            # PUBCOMP waits until the packet id is gone from the store too: a new PUBLISH that
            # reuses it after a restart must not be taken for a resend.
            wait = self.server.qos2_released(state, p.packet_id)  # type: ignore[arg-type]
            code = 0
        else:
            code = c.PACKET_IDENTIFIER_NOT_FOUND
        self._ack_after(wait, c.serialize(c.Pubcomp(p.packet_id, code), self.version))

    # ================================================================ deliveries
    def can_deliver(self) -> bool:
        return (self.state_name == CONNECTED and not self._closing and self.conn.writable and
                self._out_bytes < _FLUSH_BYTES and
                len(self.state.outbound) < self.client_receive_max)  # type: ignore[union-attr]

    # ================================================================ SUBSCRIBE
    def on_subscribe(self, p: c.Subscribe) -> None:
        state = self.state
        sub_id = None
        ids = p.properties.get("subscription_identifier")
        if ids:
            if len(ids) > 1:
                raise c.ProtocolError("more than one subscription identifier")
            sub_id = ids[0]
        codes = []
        new_subs = []
        for topic_filter, opts in p.subscriptions:
            try:
                group, inner = topics.parse_shared(topic_filter)
            except ValueError:
                codes.append(c.TOPIC_FILTER_INVALID if self.v5 else 0x80)
                continue
            if not topics.valid_topic_filter(inner):
                codes.append(c.TOPIC_FILTER_INVALID if self.v5 else 0x80)
                continue
            if group is not None and opts.no_local:
                raise c.ProtocolError("No Local on a shared subscription")  # [MQTT-3.8.3-4]
            # Read on amq.topic and topic read on the filter; never rights on the subscription
            # queue the broker makes for the client (unlike RabbitMQ).
            grant = self.grant
            if not (grant.allowed("read", "exchange", TOPIC_EXCHANGE) and grant.topic_allowed(
                    "read", TOPIC_EXCHANGE, topics.filter_to_key(inner))):
                log.warning("MQTT %s: SUBSCRIBE to %r refused for user '%s'", self.client_id,
                            topic_filter, grant.user)
                codes.append(c.NOT_AUTHORIZED if self.v5 else 0x80)
                continue
            sub = Subscription(topic_filter, inner, group, opts.qos, opts.no_local,
                               opts.retain_as_published, opts.retain_handling, sub_id)
            try:
                is_new = state.add_subscription(sub)  # type: ignore[union-attr]
            except BrokerError as exc:
                log.warning("subscribe %s failed: %s", topic_filter, exc.text)
                codes.append(c.UNSPECIFIED_ERROR if self.v5 else 0x80)
                continue
            codes.append(opts.qos)  # MQTT §3.9.3: granted QoS = requested (QoS 2 is supported)
            new_subs.append((sub, is_new))
        def send_retained() -> None:
            # Retained messages after the SUBACK [MQTT-3.3.1-9], not for shared subscriptions.
            for sub, is_new in new_subs:
                if sub.group is not None or sub.retain_handling == 2 or (
                        sub.retain_handling == 1 and not is_new):
                    continue
                self._send_retained(sub)

        # In a persistent session the SUBACK means the subscription is durable: it waits for
        # the session's write (if that fails, no SUBACK: the connection closes).
        stored = self.server.save_session(state) if new_subs else None
        self._ack_after(stored, c.serialize(c.Suback(p.packet_id, codes), self.version),
                        then=send_retained)

    def _send_retained(self, sub: Subscription) -> None:
        """Retained messages matching the filter go through the session queue, so they obey the
        in-flight window like any other message, marked as retained copies (RETAIN=1)."""
        state = self.state
        now = self.server.now_ms()
        for topic, entry in self.server.retained_for(sub.filter):
            m = entry.message
            props = m.properties
            mprops = m.mqtt_properties
            if entry.expires_at_ms is not None:
                left_s = max(1, -(-(entry.expires_at_ms - now) // 1000))
                props = props.copy()
                props.expiration = str(left_s * 1000)
                mprops = dict(mprops or {})
                mprops["message_expiry_interval"] = left_s
            copy = MqttMessage(TOPIC_EXCHANGE, m.routing_key, m.body, props, origin=m.origin,
                               retain=True, qos=m.qos, mqtt_properties=mprops, timestamp_ms=now,
                               retained_copy=True, topic=topic)
            self.vhost.publish("", state.queue_name, copy)  # type: ignore[union-attr]

    def on_unsubscribe(self, p: c.Unsubscribe) -> None:
        codes = []
        for topic_filter in p.filters:
            existed = self.state.remove_subscription(topic_filter)  # type: ignore[union-attr]
            codes.append(c.SUCCESS if existed else c.NO_SUBSCRIPTION_EXISTED)
        stored = self.server.save_session(self.state)  # type: ignore[arg-type]
        self._ack_after(stored, c.serialize(c.Unsuback(p.packet_id, codes), self.version))

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
