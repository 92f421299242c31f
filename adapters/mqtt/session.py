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
``server.SessionState``; this object is the live connection attached to it. The packet handlers
are in its parts: ``connect.ConnectMethods`` (CONNECT, wills, DISCONNECT),
``inbound.InboundMethods`` (PUBLISH from the client and its acks), ``subscribe.SubscribeMethods``
(SUBSCRIBE, UNSUBSCRIBE), ``outbound.OutboundMethods`` (deliveries to the client and their acks);
the property mapping is in ``properties``. This module keeps the connection: dispatch, protocol
failures, output (the session engine's ``Output``) and credit (its ``Window``).
"""
from __future__ import annotations

import logging
from typing import Any

from manifold.broker.engine.credit import Window
from manifold.broker.engine.in_order import InOrderReplies
from manifold.broker.engine.output import Output

from . import codec as c
from .connect import AWAIT_CONNECT, CLOSED, CONNECTED, ConnectMethods
from .decoder import MqttDecoder
from .inbound import InboundMethods
from .outbound import OutboundMethods
from .server import MqttServer, SessionState
from .subscribe import SubscribeMethods

log = logging.getLogger("manifold.mqtt")

# Bytes pending in our own output list before it is handed to the transport.
_FLUSH_BYTES = 64 * 1024


class MqttSession(ConnectMethods, InboundMethods, SubscribeMethods, OutboundMethods):
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
        #: the in-flight window: the client's Receive Maximum, bounded by ours
        self.window = Window(self.settings.receive_maximum)
        self.client_max_packet = 268_435_460
        self.client_alias_max = 0
        self.out_aliases: dict[str, int] = {}
        self.in_aliases: dict[int, str] = {}
        self.request_problem_info = True
        #: output, one write per input chunk or loop tick (chunks handed over unjoined)
        self.output = Output(_FLUSH_BYTES, writelines=True)
        #: queue bytes for the client (every PUBLISH and ack goes through here: bound once)
        self._send = self.output.add
        #: acknowledgements waiting, in order, for the writes they promise
        self._acks = InOrderReplies(self._release_ack, self.output.flush)
        self._clean_disconnect = False
        self._closing = False
        #: topic -> routing key, for the topics this client publishes to (bounded)
        self._keys: dict[str, str] = {}

    # ================================================================ transport callbacks
    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        self.output.conn = conn
        # MQTT §3.1.4: a client that does not send CONNECT in reasonable time is dropped.
        conn.set_keepalive(read_timeout_s=10.0, on_read_timeout=lambda: self._close(
            "no CONNECT within 10 s"))

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.receive_data(data)
        self.output.hold()
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
        self.output.release()

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
    def _flush(self) -> None:
        self.output.flush()

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

    # ================================================================ deliveries
    def can_deliver(self) -> bool:
        # (Our own output never holds back credit: it goes to the transport at _FLUSH_BYTES,
        # where conn.writable sees it.)
        if self.state_name != CONNECTED or self._closing or not self.conn.writable:
            return False
        # An empty window is always open: QoS 0 traffic skips the call.
        outbound = self.state.outbound  # type: ignore[union-attr]
        return not outbound or self.window.open(len(outbound))
