"""AMQP 0-9-1 server session: the connection and channel state machines over the core.

Connection states (one session per TCP connection) [AMQP 0-9-1 2.2.4]::

    AWAIT_HEADER --protocol header--> (send Start) AWAIT_START_OK --StartOk, auth ok-->
    (send Tune) AWAIT_TUNE_OK --TuneOk--> AWAIT_OPEN --Open, vhost ok--> OPEN
    OPEN --Connection.Close from client--> (send CloseOk, close socket)
    any --connection exception--> (send Connection.Close) CLOSING --CloseOk / timeout--> closed

Channel states: absent --Channel.Open--> open --Channel.Close--> absent;
open --channel exception--> (send Channel.Close) closing --Channel.CloseOk--> absent.
While closing, every frame on that channel is discarded [AMQP 0-9-1 4.2.2, channel.close].

Output goes into one list per session and is written with one ``conn.write`` per batch: at the
end of each ``data_received`` pass, for deliveries caused by another AMQP connection's read at
the end of that read, otherwise (timers, disk confirms, other protocols) from one ``call_soon``.
No task or future per message on the transient no-confirm path.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections import deque
from typing import Any

from pamqp import commands as C

from manifold.broker.consumer import Consumer, Delivery
from manifold.broker.errors import AccessRefused, BrokerError, NotFound, PreconditionFailed
from manifold.broker.message import Message
from manifold.broker.vhost import PublishResult

from . import codec
from .codec import (Ack, FrameError, Heartbeat, Method, ProtocolHeaderMismatch,
                    ProtocolHeaderReceived, Publish, method_frame, shortstr, u16, u32, u64)

log = logging.getLogger("manifold.amqp")

AWAIT_HEADER, AWAIT_START_OK, AWAIT_TUNE_OK, AWAIT_OPEN, OPEN, CLOSING, CLOSED = range(7)

HANDSHAKE_TIMEOUT_S = 10.0
CLOSE_OK_TIMEOUT_S = 2.0
# Write out buffered frames once this much has piled up within one batch.
FLUSH_BYTES = 256 * 1024

SERVER_CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": False,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}

# RabbitMQ direct reply-to: a pseudo-queue consumed in no-ack mode; replies skip the core.
REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_PREFIX = REPLY_TO + "."


class _DirectDelivery:
    """A reply delivered straight to a direct reply-to consumer (no queue, nothing to settle)."""
    __slots__ = ("message",)
    redelivered = False
    offset = None
    settled = True

    def __init__(self, message: Message):
        self.message = message


class AMQPError(Exception):
    """A protocol error raised by the session itself (reply text already prefixed)."""

    def __init__(self, code: int, text: str, connection_level: bool = False):
        super().__init__(text)
        self.amqp_code = code
        self.text = text
        self.connection_level = connection_level

    def reply_text(self) -> str:
        return self.text


def _truncate(text: str) -> bytes:
    raw = text.encode("utf-8")[:255]
    return bytes((len(raw),)) + raw


def _close_payload(code: int, text: str, class_id: int, method_id: int) -> bytes:
    return u16(code) + _truncate(text) + u16(class_id) + u16(method_id)


def _gen_ctag() -> str:
    return "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value or b"")


# ====================================================================== consumer
class AMQPConsumer(Consumer):
    def __init__(self, channel: "Channel", tag: str, *, no_ack: bool, prefetch: int,
                 exclusive: bool, arguments: dict, owner: Any):
        super().__init__(tag, no_ack=no_ack, prefetch=prefetch, exclusive=exclusive,
                         arguments=arguments, owner=owner)
        self.channel = channel
        self.ctag = shortstr(tag)
        # Basic.Deliver frame start for this consumer, by length of exchange + routing key
        self.prefixes: dict[int, bytes] = {}

    def has_credit(self) -> bool:
        if self.prefetch and self.in_flight >= self.prefetch:
            return False
        ch = self.channel
        if ch.global_prefetch and not self.no_ack and len(ch.unacked) >= ch.global_prefetch:
            return False
        return ch.active and ch.session.conn.writable

    def deliver(self, delivery: Delivery) -> None:
        self.channel.deliver(self, delivery)

    def cancelled(self, reason: str) -> None:
        self.channel.server_cancel(self)

    def delivery_timed_out(self, delivery: Delivery) -> None:
        self.channel.delivery_timed_out(delivery)


# ====================================================================== channel
class Channel:
    def __init__(self, session: "AMQPSession", number: int):
        self.session = session
        self.number = number
        self.closing = False
        self.closed = False
        self.active = True  # Channel.Flow
        self.consumers: dict[str, AMQPConsumer] = {}
        self.unacked: dict[int, Delivery] = {}
        self.next_tag = 0
        self.prefetch = 0         # Basic.Qos global=false: for consumers created afterwards
        self.global_prefetch = 0  # Basic.Qos global=true: shared by the channel's consumers
        self.last_queue = ""      # [AMQP 0-9-1 queue.bind/consume/get] empty name = last declared
        # publisher confirms
        self.confirm = False
        self.publish_seq = 0
        self.ack_upto = 0      # highest seq confirmed but not yet sent (sent as multiple=True)
        self.ack_sent = 0
        self.outstanding: set[int] = set()  # seqs waiting for disk
        self.outstanding_order: deque[int] = deque()  # the same, oldest first (lazy deletion)
        # transactions: None, or held publishes and settlements
        self.tx: list | None = None
        self.tx_settles: list = []
        self.commit_wait: asyncio.Future | None = None  # the last Tx.Commit waiting for disk
        # direct reply-to: this channel's token in the server's registry, if consuming it
        self.reply_token: str | None = None

    # ------------------------------------------------------------------ deliveries out
    def deliver(self, consumer: AMQPConsumer, delivery: Delivery) -> None:
        self.next_tag = tag = self.next_tag + 1
        if not consumer.no_ack:
            self.unacked[tag] = delivery
        session = self.session
        message = delivery.message
        encoded = message.encoded
        if type(encoded) is not Encoded:
            encoded = message.encoded = Encoded.of(message)
        body = message.body
        size = len(body)
        if delivery.offset is None and size <= session.body_chunk:
            # Hot path: per-consumer prefix, the tag, and the per-header tail (exchange,
            # routing key, content header frame, body frame header), shared by every delivery
            # of equal-headed messages on the same channel number; then the body.
            exrk_len = len(encoded.exchange_and_key)
            prefix = consumer.prefixes.get(exrk_len)
            if prefix is None:
                prefix = consumer.prefixes[exrk_len] = codec.deliver_prefix(
                    self.number, consumer.ctag, exrk_len)
            session.out.append(b"".join((prefix, _pack_tag(tag, delivery.redelivered),
                                         encoded.tail_for(self.number, size), body, b"\xce")))
        else:
            header = encoded.header
            if delivery.offset is not None:
                header = _stream_header(message, delivery.offset)
            codec.deliver_frames(self.number, consumer.ctag, tag, delivery.redelivered,
                                 encoded.exchange_and_key, header, body, session.frame_max,
                                 session.out)
        session.out_bytes += size + 64
        if session.out_bytes >= FLUSH_BYTES:
            session.flush()  # may pause us via conn.writable: that is the backpressure
        elif not session._in_receive and not session._flush_scheduled:
            session.schedule_flush()

    def server_cancel(self, consumer: AMQPConsumer) -> None:
        """The queue went away under a consumer: Basic.Cancel to clients that support it."""
        if self.consumers.get(consumer.tag) is not consumer:
            return
        del self.consumers[consumer.tag]
        session = self.session
        if session.cancel_notify and not self.closing:
            session.send(method_frame(self.number, 60, 30, consumer.ctag + b"\x01"))

    def delivery_timed_out(self, delivery: Delivery) -> None:
        for tag, d in self.unacked.items():
            if d is delivery:
                del self.unacked[tag]
                break
        if not self.closing:
            timeout = getattr(delivery.queue, "consumer_timeout_ms", 0)
            self.session.channel_error(
                self, 406, f"PRECONDITION_FAILED - delivery acknowledgement on channel "
                           f"{self.number} timed out. Timeout value used: {timeout} ms. This "
                           "timeout value can be configured, see consumers doc guide to learn more",
                0, 0)

    # ------------------------------------------------------------------ settlement
    def take(self, tag: int, multiple: bool) -> list[tuple[int, Delivery]]:
        """Remove and return the deliveries an ack/nack names (RabbitMQ collect_acks rules:
        the tag must be outstanding, except 0 with multiple = everything)."""
        unacked = self.unacked
        if multiple:
            if tag == 0:
                out = list(unacked.items())
                unacked.clear()
                return out
            if tag not in unacked:
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            keys = []
            for key in unacked:
                if key > tag:
                    break
                keys.append(key)
            return [(k, unacked.pop(k)) for k in keys]
        delivery = unacked.pop(tag, None)
        if delivery is None:
            raise PreconditionFailed(f"unknown delivery tag {tag}")
        return [(tag, delivery)]

    def settle(self, pairs: list[tuple[int, Delivery]], ack: bool, requeue: bool) -> None:
        if self.tx is not None:
            self.tx_settles.append((pairs, ack, requeue))
            return
        if ack:
            for _, d in pairs:
                d.ack()
        else:
            for _, d in pairs:
                d.reject(requeue)
        if self.global_prefetch:
            self.resume_consumers()

    def resume_consumers(self) -> None:
        for consumer in list(self.consumers.values()):
            consumer.resume()

    # ------------------------------------------------------------------ confirms
    def confirmed(self, seq: int) -> None:
        if self.outstanding:
            self.session.send(method_frame(self.number, 60, 80, u64(seq) + b"\x00"))
        else:
            self.ack_upto = seq
            self.session.confirm_dirty.add(self)

    def flush_confirms(self) -> None:
        if self.ack_upto > self.ack_sent:
            self.session.out.append(method_frame(self.number, 60, 80, u64(self.ack_upto) +
                                                 b"\x01"))
            self.ack_sent = self.ack_upto

    def wait_done(self, seq: int, future: asyncio.Future) -> None:
        outstanding = self.outstanding
        outstanding.discard(seq)
        order = self.outstanding_order
        while order and order[0] not in outstanding:
            order.popleft()
        if self.closed or self.closing:
            return
        session = self.session
        if future.cancelled() or future.exception() is not None:
            session.send(method_frame(self.number, 60, 120, u64(seq) + b"\x00"))
        elif order and order[0] < seq:
            # an older publish is still on its way to disk: a multiple ack would cover it
            session.send(method_frame(self.number, 60, 80, u64(seq) + b"\x00"))
        else:
            # everything up to seq is settled: fold into one multiple ack per batch
            if seq > self.ack_upto:
                self.ack_upto = seq
            session.confirm_dirty.add(self)
            if not session._flush_scheduled and not session._in_receive:
                session.schedule_flush()

    # ------------------------------------------------------------------ teardown
    def cleanup(self) -> None:
        """Channel closed or connection gone: cancel consumers, return unacked deliveries."""
        self.cancel_consumers()
        self.release()

    def cancel_consumers(self) -> None:
        vhost = self.session.vhost
        consumers = list(self.consumers.values())
        self.consumers.clear()
        if vhost is not None:
            for consumer in consumers:
                vhost.cancel(consumer)
        if self.reply_token is not None:
            self.session.server.reply_to.pop(self.reply_token, None)
            self.reply_token = None

    def release(self) -> None:
        """Return unacked (and tx-held) deliveries to their queues."""
        vhost = self.session.vhost
        deliveries = list(self.unacked.values())
        self.unacked.clear()
        for held, _ack, _requeue in self.tx_settles:
            deliveries.extend(d for _, d in held)
        self.tx_settles = []
        self.tx = [] if self.tx is not None else None
        if vhost is not None:
            vhost.requeue(deliveries)
        self.session.decoder.reset_channel(self.number)


_pack_tag = codec.struct.Struct(">QB").pack
Encoded = codec.Encoded


def _stream_header(message: Message, offset: int) -> bytes:
    # Stream deliveries carry their position as the x-stream-offset header (RabbitMQ streams).
    props = message.properties.copy()
    headers = dict(props.headers or {})
    headers["x-stream-offset"] = offset
    props.headers = headers
    return codec.content_header_payload(props, len(message.body))


# ====================================================================== session
class AMQPSession:
    def __init__(self, server: Any):
        self.server = server
        self.broker = server.broker
        settings = server.settings
        self.settings = settings.amqp
        self.max_body = settings.server.max_message_bytes
        self.frame_max = self.settings.frame_max_bytes
        self.body_chunk = self.frame_max - codec.FRAME_OVERHEAD
        self.channel_max = self.settings.channel_max
        self.heartbeat = self.settings.heartbeat_s
        self.decoder = codec.Decoder(frame_max=self.frame_max, max_body=self.max_body)
        self.conn: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state = AWAIT_HEADER
        self.user: Any = None
        self.vhost: Any = None
        self.channels: dict[int, Channel] = {}
        self.client_properties: dict = {}
        self.cancel_notify = False
        self.blocked_notify = False
        self.out: list = []
        self.out_bytes = 0
        self.confirm_dirty: set[Channel] = set()
        self._in_receive = False
        self._flush_scheduled = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._mechanism = ""

    # ================================================================ transport callbacks
    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        conn.set_keepalive(HANDSHAKE_TIMEOUT_S,
                           lambda: conn.abort("handshake timeout: no AMQP handshake in "
                                              f"{HANDSHAKE_TIMEOUT_S:g} s"))

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.receive_data(data)
        self._in_receive = True
        server = self.server
        server.receiving += 1
        try:
            while self.state != CLOSED:
                try:
                    event = decoder.next_event()
                except FrameError as exc:
                    self.connection_error(exc.code, exc.text, exc.class_id, exc.method_id)
                    # Nothing after a framing error can be parsed reliably (not even the
                    # CloseOk): send Connection.Close and hang up.
                    self.state = CLOSED
                    self.flush()
                    self.conn.close(f"AMQP framing error {exc.code}: {exc.text}")
                    break
                except ProtocolHeaderMismatch:
                    # [AMQP 0-9-1 4.2.2] answer with the protocol header we support, then close
                    self.out.append(codec.PROTOCOL_HEADER)
                    self.state = CLOSED
                    self.flush()
                    self.conn.close("bad AMQP protocol header")
                    break
                if event is None:
                    break
                kind = type(event)
                if kind is Publish:
                    self.on_publish(event)
                elif kind is Ack:
                    self.on_ack(event)
                elif kind is Method:
                    self.on_method(event)
                elif kind is Heartbeat:
                    pass  # the transport already noted that the client is alive
                elif kind is ProtocolHeaderReceived:
                    self.send_start()
        except Exception:
            log.exception("AMQP session error")
            self.connection_error(541, "INTERNAL_ERROR - internal error in the broker")
            self.state = CLOSED
            self.flush()
            self.conn.close("internal error in the AMQP session")
        finally:
            self._in_receive = False
            self.flush()
            server.receiving -= 1
            if not server.receiving and server.dirty:
                dirty, server.dirty = server.dirty, []
                for session in dirty:
                    if session._flush_scheduled:
                        session.flush()

    def connection_lost(self) -> None:
        self.state = CLOSED
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.cleanup_all()
        if self.vhost is not None:
            self.vhost.close_owner(self)

    def going_away(self) -> None:
        if self.conn is None:
            return
        if self.state in (AWAIT_START_OK, AWAIT_TUNE_OK, AWAIT_OPEN, OPEN):
            for channel in self.channels.values():
                if not channel.closing:
                    channel.flush_confirms()
            self.out.append(method_frame(0, 10, 50, _close_payload(
                320, "CONNECTION_FORCED - broker forced connection closure with reason "
                     "'shutdown'", 0, 0)))
        self.state = CLOSED
        self.flush()
        self.conn.close("server shutdown")

    def blocked(self, on: bool) -> None:
        """The memory alarm stopped (or resumed) reading this publishing connection: tell a
        client that asked for it, with RabbitMQ's Connection.Blocked / Unblocked."""
        if not self.blocked_notify or self.state != OPEN:
            return
        if on:
            alarms = self.broker.memory
            reason = "low on disk" if alarms.disk_alarm and not alarms.alarm else "low on memory"
            self.out.append(method_frame(0, 10, 60, shortstr(reason)))
        else:
            self.out.append(method_frame(0, 10, 61, b""))
        self.flush()

    def resume_writing(self) -> None:
        for channel in list(self.channels.values()):
            if not channel.closing:
                channel.resume_consumers()

    # ================================================================ output
    def send(self, frame: bytes) -> None:
        self.out.append(frame)
        if not self._in_receive and not self._flush_scheduled:
            self.schedule_flush()

    def schedule_flush(self) -> None:
        """Write ``out`` soon: at the end of the read being processed on any AMQP connection
        (a publish fanning out to consumers on other connections flushes them right after its
        batch, without an extra loop turn), else from one ``call_soon``."""
        self._flush_scheduled = True
        server = self.server
        if server.receiving:
            server.dirty.append(self)
        else:
            self.loop.call_soon(self.flush)  # type: ignore[union-attr]

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.confirm_dirty:
            for channel in self.confirm_dirty:
                if not channel.closing and not channel.closed:
                    channel.flush_confirms()
            self.confirm_dirty.clear()
        out = self.out
        if not out:
            return
        self.out = []
        self.out_bytes = 0
        if self.conn is not None:
            self.conn.write(b"".join(out))

    # ================================================================ errors
    def channel_error(self, channel: Channel, code: int, text: str, class_id: int,
                      method_id: int) -> None:
        if channel.closing:
            return
        channel.flush_confirms()
        channel.closing = True
        self.out.append(method_frame(channel.number, 20, 40,
                                     _close_payload(code, text, class_id, method_id)))
        channel.cleanup()
        if not self._in_receive and not self._flush_scheduled:
            self.schedule_flush()

    def connection_error(self, code: int, text: str, class_id: int = 0,
                         method_id: int = 0) -> None:
        if self.state in (CLOSING, CLOSED):
            return
        log.info("AMQP connection %s closed with %d: %s", self.conn and self.conn.id, code, text)
        for channel in self.channels.values():
            if not channel.closing:
                channel.flush_confirms()
        self.out.append(method_frame(0, 10, 50, _close_payload(code, text, class_id, method_id)))
        self.state = CLOSING
        self.cleanup_all()
        self._close_reason = f"AMQP connection exception {code}: {text}"
        if self.loop is not None:
            self._close_timer = self.loop.call_later(
                CLOSE_OK_TIMEOUT_S, lambda: self.conn.close(self._close_reason))
        if not self._in_receive:
            self.flush()

    def fail(self, channel: Channel | None, exc: Exception, class_id: int,
             method_id: int) -> None:
        code = exc.amqp_code  # type: ignore[attr-defined]
        text = exc.reply_text()  # type: ignore[attr-defined]
        if exc.connection_level or channel is None:  # type: ignore[attr-defined]
            self.connection_error(code, text, class_id, method_id)
        else:
            self.channel_error(channel, code, text, class_id, method_id)

    def cleanup_all(self) -> None:
        channels = [c for c in self.channels.values() if not c.closed]
        for channel in channels:
            channel.closed = True
        # Every consumer of this connection goes before any message is requeued, so that a
        # message given back by one channel is not handed to another channel that is closing.
        for channel in channels:
            channel.cancel_consumers()
        for channel in channels:
            channel.release()
        self.channels.clear()
        self.confirm_dirty.clear()

    # ================================================================ handshake
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
        payload = (b"\x00\x09" + codec.encode_table(props) + codec.longstr("PLAIN AMQPLAIN") +
                   codec.longstr("en_US"))
        self.out.append(method_frame(0, 10, 10, payload))
        self.state = AWAIT_START_OK

    def _start_ok(self, m: Any) -> None:
        self.client_properties = m.client_properties or {}
        caps = self.client_properties.get("capabilities") or {}
        if not isinstance(caps, dict):
            caps = {}
        self.cancel_notify = bool(caps.get("consumer_cancel_notify"))
        self.blocked_notify = bool(caps.get("connection.blocked"))
        mechanism = m.mechanism or ""
        self._mechanism = mechanism
        response = _as_bytes(m.response)
        if mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) != 3:
                raise AMQPError(403, "ACCESS_REFUSED - malformed PLAIN response", True)
            username, password = parts[1].decode("utf-8", "replace"), \
                parts[2].decode("utf-8", "replace")
        elif mechanism == "AMQPLAIN":
            try:
                table, _ = codec.decode_table(u32(len(response)) + response)
            except (ValueError, IndexError) as exc:
                raise AMQPError(403, f"ACCESS_REFUSED - malformed AMQPLAIN response: {exc}",
                                True) from None
            username, password = str(table.get("LOGIN", "")), str(table.get("PASSWORD", ""))
        else:
            raise AMQPError(503, f"COMMAND_INVALID - unknown authentication mechanism "
                                 f"'{mechanism}'", True)
        try:
            self.user = self.broker.authenticate(username, password, self.conn.peer_host)
        except BrokerError as exc:
            log.info("AMQP login refused from %s: %s", self.conn.peer_host, exc.text)
            if caps.get("authentication_failure_close"):
                raise AMQPError(403, f"ACCESS_REFUSED - Login was refused using authentication "
                                     f"mechanism {mechanism}. For details see the broker "
                                     "logfile.", True) from None
            # Without the capability RabbitMQ just drops the connection.
            self.state = CLOSED
            self.flush()
            self.conn.close(f"login refused: {exc.text}")
            return
        payload = u16(self.channel_max) + u32(self.frame_max) + u16(self.heartbeat)
        self.send(method_frame(0, 10, 30, payload))
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
        self.vhost = self.broker.open_vhost(m.virtual_host or "/", self.user)
        if not self.heartbeat:
            self.conn.set_keepalive(None, None, None, None)
        self.send(method_frame(0, 10, 41, b"\x00"))
        self.state = OPEN

    # ================================================================ method dispatch
    def on_method(self, event: Method) -> None:
        method = event.method
        kind = type(method)
        number = event.channel
        state = self.state
        if state == CLOSING:
            # [AMQP 0-9-1 connection.close] after sending Close, discard all but Close/CloseOk.
            if kind is C.Connection.CloseOk:
                self.state = CLOSED
                self.flush()
                self.conn.close(getattr(self, "_close_reason", "connection closed"))
            elif kind is C.Connection.Close:
                # both sides closed at once: answer, and we are done [AMQP 0-9-1 connection.close]
                self.out.append(method_frame(0, 10, 51))
                self.state = CLOSED
                self.flush()
                self.conn.close(getattr(self, "_close_reason", "connection closed"))
            return
        try:
            if number == 0:
                handler = _CONNECTION_HANDLERS.get(kind)
                expected = _EXPECTED.get(state)
                if handler is None:
                    raise AMQPError(503, f"COMMAND_INVALID - method {method.name} is not "
                                         "allowed on channel 0", True)
                if expected is not None and kind is not expected and \
                        kind is not C.Connection.Close:
                    raise AMQPError(503, f"COMMAND_INVALID - expected "
                                         f"'{_NAMES[expected]}', got '{method.name}'", True)
                if expected is None and kind in _HANDSHAKE_METHODS:
                    raise AMQPError(503, f"COMMAND_INVALID - unexpected {method.name}", True)
                handler(self, method)
                return
            if state != OPEN:
                raise AMQPError(503, f"COMMAND_INVALID - {method.name} before connection.open",
                                True)
            channel = self.channels.get(number)
            if kind is C.Channel.Open:
                if channel is not None:
                    raise AMQPError(504, "CHANNEL_ERROR - second 'channel.open' seen", True)
                if number > self.channel_max:
                    raise AMQPError(504, f"CHANNEL_ERROR - channel {number} is above the "
                                         f"negotiated channel_max {self.channel_max}", True)
                self.channels[number] = Channel(self, number)
                self.out.append(method_frame(number, 20, 11, b"\x00\x00\x00\x00"))
                return
            if channel is None:
                raise AMQPError(504, "CHANNEL_ERROR - expected 'channel.open'", True)
            if channel.closing:
                if kind is C.Channel.CloseOk or kind is C.Channel.Close:
                    if kind is C.Channel.Close:
                        self.out.append(method_frame(number, 20, 41))
                    channel.closed = True
                    del self.channels[number]
                return
            handler = _CHANNEL_HANDLERS.get(kind)
            if handler is None:
                raise AMQPError(540, f"NOT_IMPLEMENTED - {method.name}", True)
            try:
                handler(self, channel, method)
            except (BrokerError, AMQPError) as exc:
                self.fail(channel, exc, event.class_id, event.method_id)
        except (BrokerError, AMQPError) as exc:
            self.fail(None, exc, event.class_id, event.method_id)

    def _channel_for(self, number: int, class_id: int, method_id: int) -> Channel | None:
        """The open channel for a fast-path event, or None (closing: discard; error raised)."""
        if self.state != OPEN:
            if self.state != CLOSING:
                self.connection_error(503, "COMMAND_INVALID - content before connection.open",
                                      class_id, method_id)
            return None
        channel = self.channels.get(number)
        if channel is None:
            self.connection_error(504, "CHANNEL_ERROR - expected 'channel.open'",
                                  class_id, method_id)
            return None
        if channel.closing:
            return None
        return channel

    # ================================================================ connection class
    def _connection_close(self, m: Any) -> None:
        for channel in self.channels.values():
            if not channel.closing:
                channel.flush_confirms()
        self.cleanup_all()
        self.out.append(method_frame(0, 10, 51))
        self.state = CLOSED
        self.flush()
        self.conn.close(f"client closed the connection ({m.reply_code} {m.reply_text})")

    def _connection_close_ok(self, m: Any) -> None:
        pass

    def _ignore(self, m: Any) -> None:
        pass

    def _update_secret(self, m: Any) -> None:
        self.send(method_frame(0, 10, 71))

    # ================================================================ channel class
    def _channel_close(self, ch: Channel, m: Any) -> None:
        ch.flush_confirms()
        ch.closed = True
        ch.cleanup()
        del self.channels[ch.number]
        self.out.append(method_frame(ch.number, 20, 41))

    def _channel_close_ok(self, ch: Channel, m: Any) -> None:
        pass  # we never sent Channel.Close on an open channel

    def _channel_flow(self, ch: Channel, m: Any) -> None:
        ch.active = bool(m.active)
        self.out.append(method_frame(ch.number, 20, 21, b"\x01" if ch.active else b"\x00"))
        if ch.active:
            ch.resume_consumers()

    def _channel_flow_ok(self, ch: Channel, m: Any) -> None:
        pass

    # ================================================================ exchange class
    def _exchange_declare(self, ch: Channel, m: Any) -> None:
        self.vhost.declare_exchange(m.exchange, m.exchange_type or "direct", passive=m.passive,
                                    durable=m.durable, auto_delete=m.auto_delete,
                                    internal=m.internal, arguments=m.arguments or {})
        if not m.nowait:
            self.out.append(method_frame(ch.number, 40, 11))

    def _exchange_delete(self, ch: Channel, m: Any) -> None:
        self.vhost.delete_exchange(m.exchange, if_unused=m.if_unused)
        if not m.nowait:
            self.out.append(method_frame(ch.number, 40, 21))

    def _exchange_bind(self, ch: Channel, m: Any) -> None:
        self.vhost.bind_exchange(m.destination, m.source, m.routing_key or "", m.arguments or {})
        if not m.nowait:
            self.out.append(method_frame(ch.number, 40, 31))

    def _exchange_unbind(self, ch: Channel, m: Any) -> None:
        self.vhost.unbind_exchange(m.destination, m.source, m.routing_key or "",
                                   m.arguments or {})
        if not m.nowait:
            self.out.append(method_frame(ch.number, 40, 51))

    # ================================================================ queue class
    def _queue_name(self, ch: Channel, name: str) -> str:
        if name:
            return name
        if not ch.last_queue:
            raise NotFound("no previously declared queue")
        return ch.last_queue

    def _queue_declare(self, ch: Channel, m: Any) -> None:
        name = m.queue or ""
        if m.passive and not name:
            name = self._queue_name(ch, name)
        info = self.vhost.declare_queue(name, passive=m.passive, durable=m.durable,
                                        exclusive=m.exclusive, auto_delete=m.auto_delete,
                                        arguments=m.arguments or {}, owner=self)
        ch.last_queue = info.name
        if not m.nowait:
            self.out.append(method_frame(ch.number, 50, 11, shortstr(info.name) +
                                         u32(info.message_count) + u32(info.consumer_count)))

    def _queue_bind(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        self.vhost.bind_queue(queue, m.exchange, m.routing_key or "", m.arguments or {},
                              owner=self)
        if not m.nowait:
            self.out.append(method_frame(ch.number, 50, 21))

    def _queue_unbind(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        self.vhost.unbind_queue(queue, m.exchange, m.routing_key or "", m.arguments or {},
                                owner=self)
        self.out.append(method_frame(ch.number, 50, 51))

    def _queue_purge(self, ch: Channel, m: Any) -> None:
        count = self.vhost.purge_queue(self._queue_name(ch, m.queue), owner=self)
        if not m.nowait:
            self.out.append(method_frame(ch.number, 50, 31, u32(count)))

    def _queue_delete(self, ch: Channel, m: Any) -> None:
        count = self.vhost.delete_queue(self._queue_name(ch, m.queue), if_unused=m.if_unused,
                                        if_empty=m.if_empty, owner=self)
        if not m.nowait:
            self.out.append(method_frame(ch.number, 50, 41, u32(count)))

    # ================================================================ basic class
    def _basic_qos(self, ch: Channel, m: Any) -> None:
        if m.prefetch_size:
            raise AMQPError(540, f"NOT_IMPLEMENTED - prefetch_size!=0 ({m.prefetch_size})", True)
        if m.global_:
            raised = m.prefetch_count == 0 or m.prefetch_count > ch.global_prefetch
            ch.global_prefetch = m.prefetch_count
        else:
            raised = False
            ch.prefetch = m.prefetch_count
        self.out.append(method_frame(ch.number, 60, 11))
        if raised:
            ch.resume_consumers()

    def _basic_consume(self, ch: Channel, m: Any) -> None:
        if m.queue == REPLY_TO:
            return self._consume_reply_to(ch, m)
        queue = self._queue_name(ch, m.queue)
        tag = m.consumer_tag or _gen_ctag()
        if tag in ch.consumers:
            raise AMQPError(530, f"NOT_ALLOWED - attempt to reuse consumer tag '{tag}'", True)
        target = self.vhost.queue(queue, owner=self)  # 404, or 405 for another's exclusive
        if target.consumers and (m.exclusive or any(c.exclusive for c in target.consumers)):
            # RabbitMQ reports an exclusive-consumer conflict as ACCESS_REFUSED, not 405
            raise AccessRefused(f"queue '{queue}' in vhost '{self.vhost.name}' in exclusive use")
        consumer = AMQPConsumer(ch, tag, no_ack=bool(m.no_ack),
                                prefetch=0 if m.no_ack else ch.prefetch,
                                exclusive=bool(m.exclusive), arguments=m.arguments or {},
                                owner=self)
        # ConsumeOk must precede the first delivery, and consume() may deliver at once.
        mark = len(self.out)
        if not m.nowait:
            self.out.append(method_frame(ch.number, 60, 21, shortstr(tag)))
        ch.consumers[tag] = consumer
        try:
            self.vhost.consume(queue, consumer, owner=self)
        except BaseException:
            ch.consumers.pop(tag, None)
            del self.out[mark:]
            raise

    def _consume_reply_to(self, ch: Channel, m: Any) -> None:
        """RabbitMQ direct reply-to: replies to ``reply_to = amq.rabbitmq.reply-to`` come back
        to this consumer without a queue."""
        if not m.no_ack:
            raise PreconditionFailed("reply consumer cannot acknowledge")
        if ch.reply_token is not None:
            raise PreconditionFailed("reply consumer already set")
        tag = m.consumer_tag or _gen_ctag()
        if tag in ch.consumers:
            raise AMQPError(530, f"NOT_ALLOWED - attempt to reuse consumer tag '{tag}'", True)
        consumer = AMQPConsumer(ch, tag, no_ack=True, prefetch=0, exclusive=True,
                                arguments={}, owner=self)
        ch.consumers[tag] = consumer
        ch.reply_token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.server.reply_to[ch.reply_token] = consumer
        if not m.nowait:
            self.out.append(method_frame(ch.number, 60, 21, shortstr(tag)))

    def _basic_cancel(self, ch: Channel, m: Any) -> None:
        consumer = ch.consumers.pop(m.consumer_tag, None)
        if consumer is not None and consumer.queue is None and ch.reply_token is not None and \
                self.server.reply_to.get(ch.reply_token) is consumer:
            del self.server.reply_to[ch.reply_token]
            ch.reply_token = None
        elif consumer is not None:
            self.vhost.cancel(consumer)
        if not m.nowait:
            self.out.append(method_frame(ch.number, 60, 31, shortstr(m.consumer_tag)))

    def _basic_cancel_ok(self, ch: Channel, m: Any) -> None:
        pass  # a client's answer to our server-sent Basic.Cancel

    def _basic_get(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        delivery, remaining = self.vhost.get(queue, no_ack=bool(m.no_ack), owner=self)
        if delivery is None:
            self.out.append(method_frame(ch.number, 60, 72, b"\x00"))
            return
        ch.next_tag = tag = ch.next_tag + 1
        if not m.no_ack:
            ch.unacked[tag] = delivery
        message = delivery.message
        encoded = message.encoded
        if type(encoded) is not Encoded:
            encoded = message.encoded = Encoded.of(message)
        self.out.append(method_frame(ch.number, 60, 71, u64(tag) +
                                     (b"\x01" if delivery.redelivered else b"\x00") +
                                     encoded.exchange_and_key + u32(remaining)))
        codec.content_frames(ch.number, encoded.header, message.body, self.frame_max, self.out)

    def _basic_reject(self, ch: Channel, m: Any) -> None:
        ch.settle(ch.take(m.delivery_tag, False), False, bool(m.requeue))

    def _basic_nack(self, ch: Channel, m: Any) -> None:
        ch.settle(ch.take(m.delivery_tag, bool(m.multiple)), False, bool(m.requeue))

    def _basic_ack(self, ch: Channel, m: Any) -> None:
        ch.settle(ch.take(m.delivery_tag, bool(m.multiple)), True, False)

    def on_ack(self, event: Ack) -> None:
        ch = self._channel_for(event.channel, 60, 80)
        if ch is None:
            return
        try:
            ch.settle(ch.take(event.delivery_tag, event.multiple), True, False)
        except (BrokerError, AMQPError) as exc:
            self.fail(ch, exc, 60, 80)

    def _basic_recover(self, ch: Channel, m: Any) -> None:
        self._recover(ch, m)
        self.out.append(method_frame(ch.number, 60, 111))

    def _recover(self, ch: Channel, m: Any) -> None:
        if not m.requeue:
            # RabbitMQ: redelivery to the original consumer is not supported.
            raise AMQPError(540, "NOT_IMPLEMENTED - requeue=false", True)
        deliveries = list(ch.unacked.values())
        ch.unacked.clear()
        self.vhost.requeue(deliveries)

    def _basic_recover_async(self, ch: Channel, m: Any) -> None:
        self._recover(ch, m)

    # ---------------------------------------------------------------- publish (hot path)
    def on_publish(self, ev: Publish) -> None:
        ch = self.channels.get(ev.channel)
        if ch is None or ch.closing or self.state != OPEN:
            ch = self._channel_for(ev.channel, 60, 40)
            if ch is None:
                return
        try:
            body = ev.body
            if body is None:
                raise PreconditionFailed(f"message size {ev.body_size} is larger than "
                                         f"configured max size {self.max_body}")
            if ev.immediate:
                raise AMQPError(540, "NOT_IMPLEMENTED - immediate=true", True)
            props = ev.properties
            if props.user_id is not None and props.user_id != self.user.name:
                raise PreconditionFailed(f"user_id property set to '{props.user_id}' but "
                                         f"authenticated user was '{self.user.name}'")
            message = Message(ev.exchange, ev.routing_key, body, props, ev.encoded)
            if props.reply_to == REPLY_TO:
                message = self._reply_to(ch, message)
            if ch.tx is not None:
                if ev.exchange not in self.vhost.exchanges:
                    raise NotFound(f"no exchange '{ev.exchange}' in vhost '{self.vhost.name}'")
                ch.tx.append((message, ev.mandatory))
                return
            self.conn.mark_publishing()
            if ev.exchange or not ev.routing_key.startswith(REPLY_PREFIX):
                result = self.vhost.publish(ev.exchange, ev.routing_key, message)
            else:
                result = self._reply(message)
        except (BrokerError, AMQPError) as exc:
            self.fail(ch, exc, 60, 40)
            return
        if not result.routed and ev.mandatory and not result.rejected:
            # a queue that refused it (overflow) was still a route: RabbitMQ nacks, no return
            self.basic_return(ch, message, 312, "NO_ROUTE")
        if ch.confirm:
            ch.publish_seq = seq = ch.publish_seq + 1
            if result.rejected:
                self.out.append(method_frame(ch.number, 60, 120, u64(seq) + b"\x00"))
            elif result.wait is None:
                ch.confirmed(seq)
            else:
                ch.outstanding.add(seq)
                ch.outstanding_order.append(seq)
                future = asyncio.ensure_future(result.wait)
                future.add_done_callback(lambda f, seq=seq, ch=ch: ch.wait_done(seq, f))

    def _reply_to(self, ch: Channel, message: Message) -> Message:
        """A request asking for a direct reply: name this channel's reply consumer in it."""
        if ch.reply_token is None:
            raise PreconditionFailed("fast reply consumer does not exist")
        props = message.properties.copy()
        props.reply_to = REPLY_PREFIX + ch.reply_token
        return Message(message.exchange, message.routing_key, message.body, props)

    def _reply(self, message: Message) -> Any:
        """A reply to ``amq.rabbitmq.reply-to.<token>``: straight to that consumer, if any."""
        consumer = self.server.reply_to.get(message.routing_key[len(REPLY_PREFIX):])
        if consumer is None or consumer.channel.closing or consumer.channel.closed:
            return PublishResult(0, False, None)
        consumer.deliver(_DirectDelivery(message))  # type: ignore[arg-type]
        return PublishResult(1, False, None)

    def basic_return(self, ch: Channel, message: Message, code: int, text: str) -> None:
        encoded = message.encoded
        if type(encoded) is not Encoded:
            encoded = message.encoded = Encoded.of(message)
        self.out.append(method_frame(ch.number, 60, 50, u16(code) + shortstr(text) +
                                     encoded.exchange_and_key))
        codec.content_frames(ch.number, encoded.header, message.body, self.frame_max, self.out)

    # ================================================================ confirm / tx
    def _confirm_select(self, ch: Channel, m: Any) -> None:
        if ch.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        ch.confirm = True
        if not m.nowait:
            self.out.append(method_frame(ch.number, 85, 11))

    def _tx_select(self, ch: Channel, m: Any) -> None:
        if ch.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        if ch.tx is None:
            ch.tx = []
        self.out.append(method_frame(ch.number, 90, 11))

    def _tx_commit(self, ch: Channel, m: Any) -> None:
        if ch.tx is None:
            raise PreconditionFailed("channel is not transactional")
        publishes, settles = ch.tx, ch.tx_settles
        ch.tx, ch.tx_settles = [], []
        waits = []
        for message, mandatory in publishes:
            if message.exchange or not message.routing_key.startswith(REPLY_PREFIX):
                result = self.vhost.publish(message.exchange, message.routing_key, message)
            else:
                result = self._reply(message)
            if not result.routed and mandatory:
                self.basic_return(ch, message, 312, "NO_ROUTE")
            if result.wait is not None:
                waits.append(result.wait)
        held = ch.tx
        ch.tx = None  # settle for real
        try:
            for deliveries, ack, requeue in settles:
                ch.settle(deliveries, ack, requeue)
        finally:
            ch.tx = held
        # Commit-Ok is a promise like a confirm: it follows the fsync of every persistent
        # message of the transaction, and commits are answered in order.
        previous = ch.commit_wait
        if previous is not None:
            waits.append(previous)
        if not waits:
            self.out.append(method_frame(ch.number, 90, 21))
            return
        future = asyncio.gather(*waits) if len(waits) > 1 else asyncio.ensure_future(waits[0])
        ch.commit_wait = future
        future.add_done_callback(lambda f, ch=ch: self._commit_stored(ch, f))

    def _commit_stored(self, ch: Channel, future: asyncio.Future) -> None:
        if ch.commit_wait is future:
            ch.commit_wait = None
        if ch.closing or ch.closed:
            return
        if future.cancelled() or future.exception() is not None:
            error = "cancelled" if future.cancelled() else future.exception()
            # No Commit-Ok for what is not on disk: the channel ends, the client knows the
            # transaction's outcome is unknown (RabbitMQ closes the channel the same way).
            self.channel_error(ch, 541, f"INTERNAL_ERROR - transaction not stored: {error}",
                               90, 20)
            return
        self.send(method_frame(ch.number, 90, 21))

    def _tx_rollback(self, ch: Channel, m: Any) -> None:
        if ch.tx is None:
            raise PreconditionFailed("channel is not transactional")
        # Held acks are undone: those deliveries are unacked again (RabbitMQ tx.rollback).
        for pairs, _ack, _requeue in ch.tx_settles:
            for tag, delivery in pairs:
                ch.unacked[tag] = delivery
        ch.unacked = dict(sorted(ch.unacked.items()))
        ch.tx, ch.tx_settles = [], []
        self.out.append(method_frame(ch.number, 90, 31))


_NAMES = {C.Connection.StartOk: "connection.start_ok", C.Connection.TuneOk: "connection.tune_ok",
          C.Connection.Open: "connection.open"}
_EXPECTED = {AWAIT_START_OK: C.Connection.StartOk, AWAIT_TUNE_OK: C.Connection.TuneOk,
             AWAIT_OPEN: C.Connection.Open}
_HANDSHAKE_METHODS = frozenset(_NAMES)

_CONNECTION_HANDLERS = {
    C.Connection.StartOk: AMQPSession._start_ok,
    C.Connection.TuneOk: AMQPSession._tune_ok,
    C.Connection.Open: AMQPSession._open,
    C.Connection.Close: AMQPSession._connection_close,
    C.Connection.CloseOk: AMQPSession._connection_close_ok,
    C.Connection.Blocked: AMQPSession._ignore,
    C.Connection.Unblocked: AMQPSession._ignore,
    C.Connection.UpdateSecret: AMQPSession._update_secret,
}

_CHANNEL_HANDLERS = {
    C.Channel.Close: AMQPSession._channel_close,
    C.Channel.CloseOk: AMQPSession._channel_close_ok,
    C.Channel.Flow: AMQPSession._channel_flow,
    C.Channel.FlowOk: AMQPSession._channel_flow_ok,
    C.Exchange.Declare: AMQPSession._exchange_declare,
    C.Exchange.Delete: AMQPSession._exchange_delete,
    C.Exchange.Bind: AMQPSession._exchange_bind,
    C.Exchange.Unbind: AMQPSession._exchange_unbind,
    C.Queue.Declare: AMQPSession._queue_declare,
    C.Queue.Bind: AMQPSession._queue_bind,
    C.Queue.Unbind: AMQPSession._queue_unbind,
    C.Queue.Purge: AMQPSession._queue_purge,
    C.Queue.Delete: AMQPSession._queue_delete,
    C.Basic.Qos: AMQPSession._basic_qos,
    C.Basic.Consume: AMQPSession._basic_consume,
    C.Basic.Cancel: AMQPSession._basic_cancel,
    C.Basic.CancelOk: AMQPSession._basic_cancel_ok,
    C.Basic.Get: AMQPSession._basic_get,
    C.Basic.Ack: AMQPSession._basic_ack,
    C.Basic.Nack: AMQPSession._basic_nack,
    C.Basic.Reject: AMQPSession._basic_reject,
    C.Basic.Recover: AMQPSession._basic_recover,
    C.Basic.RecoverAsync: AMQPSession._basic_recover_async,
    C.Confirm.Select: AMQPSession._confirm_select,
    C.Tx.Select: AMQPSession._tx_select,
    C.Tx.Commit: AMQPSession._tx_commit,
    C.Tx.Rollback: AMQPSession._tx_rollback,
}
