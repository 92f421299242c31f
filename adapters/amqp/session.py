"""AMQP 0-9-1 server session: one per TCP connection, over the core.

The session reads frames from ``codec.Decoder`` and routes each method to a named handler. The
handlers live by AMQP class in the session's parts:

- ``connection.ConnectionMethods``: the handshake (Start/Tune/Open), Close, UpdateSecret;
- ``entities.EntityMethods``: Channel.Close/Flow, Exchange.*, Queue.*;
- ``basic.BasicMethods``: Basic.* including the publish fast path and direct reply-to;
- ``transactions.TransactionMethods``: Confirm.Select and Tx.*.

Per-channel state (consumers, unacked deliveries, confirms) is ``channel.Channel``; the frames
the server sends are named in ``replies``.

Output goes into one ``broker.engine.output.Output`` per session and is written with one
``conn.write`` per batch: at the end of each ``data_received`` pass, for deliveries caused by
another AMQP connection's read at the end of that read (the server's ``FlushGroup``), otherwise
(timers, disk confirms, other protocols) from one ``call_soon``. No task or future per message on
the transient no-confirm path.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from pamqp import commands as C

from manifold.broker.engine.output import Output
from manifold.broker.engine.unacked import end_consumers
from manifold.broker.errors import BrokerError

from . import codec, replies
from .basic import BasicMethods
from .channel import FLUSH_BYTES, Channel
from .codec import (Ack, FrameError, Heartbeat, Method, ProtocolHeaderMismatch,
                    ProtocolHeaderReceived, Publish)
from .connection import (AWAIT_HEADER, AWAIT_OPEN, AWAIT_START_OK, AWAIT_TUNE_OK, CLOSED,
                         CLOSING, HANDSHAKE_TIMEOUT_S, OPEN, ConnectionMethods)
from .entities import EntityMethods
from .errors import AMQPError
from .transactions import TransactionMethods

log = logging.getLogger("manifold.amqp")

CLOSE_OK_TIMEOUT_S = 2.0


class AMQPSession(ConnectionMethods, EntityMethods, BasicMethods, TransactionMethods):
    """Connection state, output batching, errors and method routing; the method handlers
    come from the four parts it inherits."""

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
        #: what the user may do in the vhost (broker/access.py Grant), set at Connection.Open
        self.grant: Any = None
        self.channels: dict[int, Channel] = {}
        self.client_properties: dict = {}
        self.cancel_notify = False
        self.blocked_notify = False
        #: channels with confirms to fold into one ``multiple`` ack before the next write
        self.confirm_dirty: set[Channel] = set()
        self.output = Output(FLUSH_BYTES, group=server.flush_group,
                             before_flush=self._flush_confirms)
        self._close_timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- transport callbacks
    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        self.output.conn = conn
        self.loop = asyncio.get_running_loop()
        conn.set_keepalive(HANDSHAKE_TIMEOUT_S,
                           lambda: conn.abort("handshake timeout: no AMQP handshake in "
                                              f"{HANDSHAKE_TIMEOUT_S:g} s"))

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.receive_data(data)
        output = self.output
        group = self.server.flush_group
        group.enter()
        output.hold()
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
                    self.send(codec.PROTOCOL_HEADER)
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
            output.release()
            group.leave()

    def connection_lost(self) -> None:
        self.state = CLOSED
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.cleanup_all()
        if self.vhost is not None:
            self.vhost.close_owner(self)

    def going_away(self) -> None:
        self._forced("CONNECTION_FORCED - broker forced connection closure with reason "
                     "'shutdown'", "server shutdown")

    def force_close(self, reason: str) -> None:
        """Closed by an operator (management API): 320 CONNECTION_FORCED carrying the reason,
        as RabbitMQ does for ``DELETE /api/connections/{name}`` with an ``X-Reason`` header."""
        self._forced(f"CONNECTION_FORCED - {reason}", f"closed by an operator: {reason}")

    def _forced(self, text: str, reason: str) -> None:
        if self.conn is None:
            return
        if self.state in (AWAIT_START_OK, AWAIT_TUNE_OK, AWAIT_OPEN, OPEN):
            for channel in self.channels.values():
                if not channel.closing:
                    channel.flush_confirms()
            self.send(replies.connection_close(320, text))
        self.state = CLOSED
        self.flush()
        self.conn.close(reason)

    def channels_info(self) -> list[dict]:
        """Open channels for the management API (RabbitMQ's /api/channels field names)."""
        return [{"number": ch.number, "consumer_count": len(ch.consumers),
                 "messages_unacknowledged": len(ch.unacked), "prefetch_count": ch.prefetch,
                 "global_prefetch_count": ch.window.limit, "confirm": ch.confirms is not None,
                 "transactional": ch.tx is not None}
                for ch in self.channels.values() if not ch.closed]

    def blocked(self, on: bool) -> None:
        """The memory alarm stopped (or resumed) reading this publishing connection: tell a
        client that asked for it, with RabbitMQ's Connection.Blocked / Unblocked."""
        if not self.blocked_notify or self.state != OPEN:
            return
        if on:
            alarms = self.broker.memory
            reason = "low on disk" if alarms.disk_alarm and not alarms.alarm else "low on memory"
            self.send(replies.connection_blocked(reason))
        else:
            self.send(replies.connection_unblocked())
        self.flush()

    def resume_writing(self) -> None:
        for channel in list(self.channels.values()):
            if not channel.closing:
                channel.resume_consumers()

    # ---------------------------------------------------------------- output
    def send(self, frame: bytes) -> None:
        self.output.add(frame)

    def flush(self) -> None:
        self.output.flush()

    def _flush_confirms(self) -> None:
        """Before each write: the confirms that became due go as one ``multiple`` ack each."""
        if self.confirm_dirty:
            for channel in self.confirm_dirty:
                if not channel.closing and not channel.closed:
                    channel.flush_confirms()
            self.confirm_dirty.clear()

    # ---------------------------------------------------------------- errors
    def channel_error(self, channel: Channel, code: int, text: str, class_id: int,
                      method_id: int) -> None:
        if channel.closing:
            return
        channel.flush_confirms()
        channel.closing = True
        self.send(replies.channel_close(channel.number, code, text, class_id, method_id))
        channel.cleanup()

    def connection_error(self, code: int, text: str, class_id: int = 0,
                         method_id: int = 0) -> None:
        if self.state in (CLOSING, CLOSED):
            return
        log.info("AMQP connection %s closed with %d: %s", self.conn and self.conn.id, code, text)
        for channel in self.channels.values():
            if not channel.closing:
                channel.flush_confirms()
        self.send(replies.connection_close(code, text, class_id, method_id))
        self.state = CLOSING
        self.cleanup_all()
        self._close_reason = f"AMQP connection exception {code}: {text}"
        if self.loop is not None:
            self._close_timer = self.loop.call_later(
                CLOSE_OK_TIMEOUT_S, lambda: self.conn.close(self._close_reason))
        if not self.output.holding:
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
        consumers = [c for channel in channels for c in channel.take_consumers()]
        held = [d for channel in channels for d in channel.take_held()]
        if self.vhost is not None:
            end_consumers(self.vhost, consumers, held)
        self.channels.clear()
        self.confirm_dirty.clear()

    # ---------------------------------------------------------------- method dispatch
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
                self.send(replies.connection_close_ok())
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
                self.send(replies.channel_open_ok(number))
                return
            if channel is None:
                raise AMQPError(504, "CHANNEL_ERROR - expected 'channel.open'", True)
            if channel.closing:
                if kind is C.Channel.CloseOk or kind is C.Channel.Close:
                    if kind is C.Channel.Close:
                        self.send(replies.channel_close_ok(number))
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
