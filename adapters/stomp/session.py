"""STOMP session: frames <-> core calls, one object per connection.

State machine (STOMP 1.2 "Connecting", "Client Frames"):

    state        frame                       -> next state
    ----------   -------------------------   ---------------------------------------------
    CONNECTING   CONNECT | STOMP (ok)        -> CONNECTED   (CONNECTED frame)
    CONNECTING   CONNECT | STOMP (refused)   -> CLOSED      (ERROR, close)
    CONNECTING   anything else               -> CLOSED      (ERROR "Illegal command", close)
    CONNECTED    SEND SUBSCRIBE UNSUBSCRIBE ACK NACK BEGIN COMMIT ABORT -> CONNECTED
    CONNECTED    DISCONNECT                  -> CLOSED      (RECEIPT if asked, then close)
    any          bad frame / unknown command -> CLOSED      (ERROR with message, close)

Every error closes the connection after the ERROR frame [STOMP 1.2 "ERROR": "the server MUST
then close the connection"]; nothing else on the broker is affected.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import TYPE_CHECKING, Any, Callable

from manifold.broker.consumer import Consumer, Delivery
from manifold.broker.errors import BrokerError
from manifold.broker.in_order import InOrderReplies
from manifold.broker.message import Message
from manifold.broker.unacked import Unacked

from .codec import NEED_DATA, Frame, FrameCodec, FrameError, escape, serialize
from .mapping import (AMQ_QUEUE, EXCHANGE, QUEUE, REPLY_QUEUE, TEMP_QUEUE, TOPIC,
                      DestinationError, destination_of, headers_to_properties,
                      parse_destination, properties_to_headers, queue_arguments, stream_offset)

if TYPE_CHECKING:  # pragma: no cover
    from manifold.broker.transport import Connection

log = logging.getLogger("manifold.stomp")

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")
CONNECTING, CONNECTED, CLOSED = "CONNECTING", "CONNECTED", "CLOSED"
ACK_MODES = ("auto", "client", "client-individual")
# Output is coalesced up to this many bytes before it is handed to the transport.
FLUSH_BYTES = 64 * 1024


class StompError(Exception):
    """A protocol-level refusal: ERROR frame with ``message`` header and ``detail`` body."""

    def __init__(self, message: str, detail: str = "", headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail or message
        self.headers = headers or {}


def _required(frame: Frame, name: str) -> str:
    value = frame.headers.get(name)
    if value is None:
        raise StompError(f"Missing {name}",
                         f"{frame.command} frame requires a '{name}' header")
    return value


class Subscription(Consumer):
    """One SUBSCRIBE: a core consumer on the subscription's queue."""

    def __init__(self, session: "StompSession", sub_id: str, destination: str, queue: str,
                 ack_mode: str, prefetch: int, arguments: dict, exclusive: bool,
                 durable: bool, fixed_destination: str | None = None):
        super().__init__(f"stomp-{session.session_id}-{sub_id}", no_ack=(ack_mode == "auto"),
                         prefetch=prefetch, exclusive=exclusive, arguments=arguments,
                         owner=session)
        self.session = session
        self.id = sub_id
        self.destination = destination
        self.queue_name = queue
        self.ack_mode = ack_mode
        self.durable = durable
        #: MESSAGE ``destination`` for every delivery (temp queues), else derived per message
        self.fixed_destination = fixed_destination
        #: unsettled deliveries by tag, oldest first (``client`` acks are cumulative)
        self.pending = Unacked()
        self.active = True
        # Pre-encoded start of every MESSAGE frame of this subscription (the version is fixed
        # once CONNECTED), and the escaped destination header per (exchange, routing key).
        version = session.version
        self.head = ("MESSAGE\nsubscription:" + escape(sub_id, version) +
                     "\ndestination:").encode()
        self.fixed_destination_bytes = (None if fixed_destination is None else
                                        escape(fixed_destination, version).encode())
        self.destinations: dict[tuple[str, str], bytes] = {}

    def has_credit(self) -> bool:
        session = self.session
        return ((self.prefetch == 0 or self.in_flight < self.prefetch) and
                session.conn is not None and session.conn.writable and session.state == CONNECTED)

    def deliver(self, delivery: Delivery) -> None:
        self.session.deliver(self, delivery)

    def cancelled(self, reason: str) -> None:
        self.session.server_cancelled(self, reason)

    def delivery_timed_out(self, delivery: Delivery) -> None:
        # The core took it back (consumer timeout); a late ACK for it must find nothing.
        tag = self.pending.forget(delivery)
        if tag is not None:
            self.session.unacked.pop(tag, None)


class StompSession:
    def __init__(self, server: Any):  # the StompServer (__init__.py), which imports this module
        self.server = server
        self.broker = server.broker
        stomp = server.settings.stomp
        self.settings = stomp
        self.codec = FrameCodec(max_frame_bytes=stomp.max_frame_bytes,
                                max_headers=stomp.max_headers)
        self.session_id = server.next_session_id()
        self.conn: "Connection | None" = None
        self.state = CONNECTING
        self.version = "1.0"
        self.vhost: Any = None
        #: what the user may do in the vhost (broker/access.py Grant), set at CONNECT
        self.grant: Any = None
        self.user: Any = None
        self.subscriptions: dict[str, Subscription] = {}
        #: tag -> subscription, for ACK / NACK of deliveries not yet settled
        self.unacked: dict[int, Subscription] = {}
        self._next_tag = 1
        self.transactions: dict[str, list[Callable[[], None]]] = {}
        #: /temp-queue/<label> -> server-named exclusive queue of this connection
        self.temp_queues: dict[str, str] = {}
        # RECEIPTs wait (in order) for the durability of the SENDs before them.
        self._receipts = InOrderReplies(self._release_receipt)
        self._frame: Frame | None = None
        self._out: list[bytes] = []
        #: SEND destination -> (exchange, routing key, is a /queue/ to declare when missing)
        self._send_targets: dict[str, tuple[str, str, bool]] = {}
        self._out_bytes = 0
        self._flush_scheduled = False
        self._in_input = False
        self._failed = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._prop_cache: tuple[Any, bytes] | None = None
        self._handlers: dict[str, Callable[[Frame], None]] = {
            "SEND": self.on_send, "SUBSCRIBE": self.on_subscribe,
            "UNSUBSCRIBE": self.on_unsubscribe, "ACK": self.on_ack, "NACK": self.on_nack,
            "BEGIN": self.on_begin, "COMMIT": self.on_commit, "ABORT": self.on_abort,
            "DISCONNECT": self.on_disconnect, "CONNECT": self.on_connect,
            "STOMP": self.on_connect,
        }

    # ================================================================ transport callbacks
    def connection_made(self, conn: "Connection") -> None:
        self.conn = conn
        # A client must log in within handshake_timeout_s of opening the socket (heart-beat
        # EOLs do not count): one timer handle, cancelled by CONNECT.
        self._handshake_timer = asyncio.get_running_loop().call_later(
            self.settings.handshake_timeout_s, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        self._handshake_timer = None
        if self.state == CONNECTING and self.conn is not None:
            self.state = CLOSED
            self.conn.abort("handshake timeout: no CONNECT frame")

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        codec = self.codec
        codec.receive_data(data)
        handlers = self._handlers
        self._in_input = True
        try:
            while self.state != CLOSED:
                frame = codec.next_event()
                if frame is NEED_DATA:
                    break
                self._frame = frame  # type: ignore[assignment]
                handler = handlers.get(frame.command)  # type: ignore[union-attr]
                if handler is None:
                    raise StompError("Bad command",
                                     f"Could not interpret command {frame.command}")  # type: ignore
                if self.state == CONNECTING and frame.command not in ("CONNECT", "STOMP"):  # type: ignore
                    raise StompError("Illegal command",
                                     "You must log in using CONNECT first")
                handler(frame)  # type: ignore[arg-type]
                if "receipt" in frame.headers and frame.command not in (  # type: ignore
                        "DISCONNECT", "CONNECT", "STOMP") and self.state == CONNECTED:
                    self._receipt(frame.headers["receipt"])  # type: ignore[union-attr]
        except FrameError as exc:
            self.error(exc.message, exc.detail, exc.headers.get("receipt"))
        except StompError as exc:
            self.error(exc.message, exc.detail, self._receipt_of_current(), exc.headers)
        except BrokerError as exc:
            # RabbitMQ's wording: message:not_found, body "NOT_FOUND - no queue 'x' in vhost '/'"
            self.error(exc.name.lower(), exc.reply_text(), self._receipt_of_current())
        except DestinationError as exc:
            self.error("Unknown destination", str(exc), self._receipt_of_current())
        except Exception as exc:  # a bug must cost this connection only, never the server
            log.exception("STOMP session %d: internal error", self.session_id)
            self.error("Internal error", f"internal error: {exc.__class__.__name__}",
                       self._receipt_of_current())
        finally:
            self._frame = None
            self._in_input = False
            self._flush()

    def _receipt_of_current(self) -> str | None:
        return self._frame.headers.get("receipt") if self._frame is not None else None

    def connection_lost(self) -> None:
        self.state = CLOSED
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.transactions.clear()
        # Pending receipts are dropped, their awaitables NOT cancelled: a store's group-commit
        # future is shared with other connections' publishes.
        self._receipts.clear()
        self._out.clear()
        vhost = self.vhost
        if vhost is None:
            return
        # Stop every consumer first, so that returned messages go to other connections rather
        # than back to a subscription of this dying one.
        subs = list(self.subscriptions.values())
        self.subscriptions.clear()
        for sub in subs:
            sub.active = False
            vhost.cancel(sub)
        for sub in subs:
            vhost.requeue([d for _, d in sub.pending.take_all()])
        self.unacked.clear()
        vhost.close_owner(self)

    def going_away(self) -> None:
        if self.state == CLOSED:
            if self.conn is not None:
                self._close("server shutdown")
            return
        self.error("Server shutting down", "Server shutting down", reason="server shutdown")

    def force_close(self, reason: str) -> None:
        """Closed by an operator: an ERROR frame whose message header carries the reason."""
        if self.state == CLOSED:
            if self.conn is not None:
                self._close(f"closed by an operator: {reason}")
            return
        self.error(reason, f"Connection closed by an operator: {reason}",
                   reason=f"closed by an operator: {reason}")

    def resume_writing(self) -> None:
        for sub in list(self.subscriptions.values()):
            sub.resume()

    # ================================================================ output helpers
    def write_frame(self, frame: Frame) -> None:
        self._write(serialize(frame, self.version))

    def _write(self, data: bytes) -> None:
        """Queue output; it goes out in one write at the end of the current input chunk (or on
        the next loop iteration), so a burst of MESSAGE frames costs one send, not one each.
        Past FLUSH_BYTES it goes at once, which also lets the transport's high-water mark (and
        so has_credit) see it."""
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes >= FLUSH_BYTES:
            self._flush()
        elif not self._flush_scheduled and not self._in_input:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out:
            out = self._out
            self._out = []
            self._out_bytes = 0
            if self.conn is not None:
                self.conn.write(b"".join(out))

    def _close(self, reason: str) -> None:
        self._flush()
        if self.conn is not None:
            self.conn.close(reason)

    def error(self, message: str, detail: str, receipt: str | None = None,
              extra: dict | None = None, reason: str | None = None) -> None:
        """ERROR frame, then close [STOMP 1.2 "ERROR"]."""
        if self.state == CLOSED:
            return
        body = detail.encode()
        headers = {"message": message, "content-type": "text/plain"}
        if receipt is not None:
            headers["receipt-id"] = receipt
        if extra:
            headers.update(extra)
        headers["content-length"] = str(len(body))
        self.write_frame(Frame("ERROR", headers, body))
        self.state = CLOSED
        self._failed = True
        self._close(reason or f"STOMP error: {message}: {detail.strip()[:200]}")

    def _receipt(self, receipt_id: str, wait: Any = None, close: bool = False) -> None:
        """RECEIPT in frame order; it waits for ``wait`` (durability of a SEND) and for every
        receipt before it."""
        data = serialize(Frame("RECEIPT", {"receipt-id": receipt_id}), self.version)
        self._receipts.add((data, close), wait)

    def _release_receipt(self, receipt: tuple, error: Any) -> bool:
        data, close = receipt
        if self._failed:
            return True  # an ERROR ended the session: no RECEIPT may follow it
        if error is not None:
            self.error("Internal error", f"message could not be stored: {error}")
            return False
        self._write(data)
        if close:
            self._close("client sent DISCONNECT")
        return True

    # ================================================================ CONNECT
    def on_connect(self, frame: Frame) -> None:
        if self.state != CONNECTING:
            raise StompError("Unexpected CONNECT", "Already connected")
        headers = frame.headers
        # [STOMP 1.2 "Protocol Negotiation"]: no accept-version means 1.0.
        accepted = [v.strip() for v in headers.get("accept-version", "1.0").split(",")]
        common = [v for v in SUPPORTED_VERSIONS if v in accepted]
        if not common:
            raise StompError("Version mismatch",
                             "Supported versions are " + ",".join(SUPPORTED_VERSIONS),
                             {"version": ",".join(SUPPORTED_VERSIONS)})
        version = common[-1]
        # RabbitMQ's default_user: a CONNECT without login logs in as guest/guest.
        login = headers.get("login")
        passcode = headers.get("passcode")
        conn = self.conn
        # A verified client certificate's CN may stand in for login/passcode ([tls]
        # identity_as_username); broker/access.py decides.
        identity = conn.tls_identity if conn is not None else None
        if login is None and identity is None:
            login, passcode = "guest", "guest" if passcode is None else passcode
        peer = conn.peer_host if conn is not None else None
        try:
            user = self.broker.authenticate(login, passcode or "", peer, identity)
        except BrokerError as exc:
            if conn is not None:  # the failed-login back-off holds the ERROR back
                conn.hold_output(getattr(exc, "delay_s", 0.0))
            raise StompError("Bad CONNECT", exc.text) from None
        vhost_name = self._vhost_name(headers.get("host"))
        vhost = self.broker.open_vhost(vhost_name, user, conn)
        self.grant = self.broker.grant(user, vhost_name)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.version = version
        self.codec.version = version
        self.user = user
        self.vhost = vhost
        self.state = CONNECTED
        if self.conn is not None:
            self.conn.opened(user.name, vhost.name)
        out = {"server": self.server.server_header, "session": f"session-{self.session_id}"}
        if version != "1.0" or "accept-version" in headers:
            out["version"] = version
        send_ms = receive_ms = 0
        if version != "1.0":
            client_send, client_receive = self._heart_beat(headers.get("heart-beat", "0,0"))
            offer = self.settings.heartbeat_ms
            # [STOMP 1.2 "Heart-beating"]: each side uses the larger of what one can do and the
            # other wants; 0 on either side switches that direction off.
            if client_send and offer:
                receive_ms = max(client_send, offer)
            if client_receive and offer:
                send_ms = max(client_receive, offer)
            out["heart-beat"] = f"{offer},{offer}"
        self.write_frame(Frame("CONNECTED", out))
        if self.conn is not None:
            # Drop a client silent for ~2 of its intervals; send ours early (at half the agreed
            # interval) so that a client checking at 1x-1.5x never sees a late one.
            self.conn.set_keepalive(receive_ms * 2 / 1000 if receive_ms else None,
                                    self._heartbeat_timeout if receive_ms else None,
                                    send_ms / 2000 if send_ms else None,
                                    self._send_heartbeat if send_ms else None)

    def _vhost_name(self, host: str | None) -> str:
        """``host`` names the virtual host (RabbitMQ). Many clients (stomp.py among them) put
        the DNS name of the server there, so a name that is no virtual host means the default."""
        if host and host in self.broker.vhosts:
            return host
        return "/"

    @staticmethod
    def _heart_beat(value: str) -> tuple[int, int]:
        try:
            cx, cy = (int(part) for part in value.split(","))
        except ValueError:
            raise StompError("Bad heart-beat", f"invalid heart-beat header {value!r}") from None
        if cx < 0 or cy < 0:
            raise StompError("Bad heart-beat", f"invalid heart-beat header {value!r}")
        return cx, cy

    def _heartbeat_timeout(self) -> None:
        if self.conn is not None:
            self.state = CLOSED
            self.conn.abort("heart-beat timeout: nothing received from the client")

    def _send_heartbeat(self) -> None:
        if self.conn is not None:
            self._write(b"\n")

    # ================================================================ DISCONNECT
    def on_disconnect(self, frame: Frame) -> None:
        receipt = frame.headers.get("receipt")
        self.state = CLOSED
        if receipt is not None:
            self._receipt(receipt, close=True)  # [STOMP 1.2 "DISCONNECT"]: receipt, then close
        else:
            self._close("client sent DISCONNECT")

    # ================================================================ SEND
    def on_send(self, frame: Frame) -> None:
        headers = frame.headers
        destination = headers.get("destination")
        if destination is None:
            destination = _required(frame, "destination")  # raises the ERROR
        cached = self._send_targets.get(destination)
        if cached is not None and (not cached[2] or cached[1] in self.vhost.queues):
            exchange, routing_key = cached[0], cached[1]
        else:
            exchange, routing_key = self._send_target(destination, headers)
        props = headers_to_properties(headers)
        reply_to = props.reply_to
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            # RabbitMQ: a temp queue named in reply-to is created (and subscribed) on this
            # connection; the header is rewritten so that replies route back to it.
            props.reply_to = "/reply-queue/" + self._temp_queue(reply_to[12:])
        self.grant.check_publish(exchange, routing_key)
        message = Message(exchange, routing_key, frame.body, props)
        self.conn.mark_publishing()
        tx = headers.get("transaction")
        if tx is not None:
            self._transaction(tx).append(lambda: self._publish(message))
            return
        wait = self.vhost.publish(exchange, routing_key, message).wait
        receipt = headers.get("receipt")
        if receipt is not None and wait is not None:
            # The RECEIPT of a persistent SEND waits for its fsync; the generic receipt code in
            # data_received must not send a second one.
            del headers["receipt"]
            self._receipt(receipt, wait)

    def _publish(self, message: Message) -> Any:
        result = self.vhost.publish(message.exchange, message.routing_key, message)
        return result.wait

    def _send_target(self, destination: str, headers: dict) -> tuple[str, str]:
        cached = self._send_targets.get(destination)
        if cached is not None:
            exchange, routing_key, declare = cached
            if not declare or routing_key in self.vhost.queues:
                return exchange, routing_key
        kind, name, key = parse_destination(destination)
        if kind == QUEUE:
            if name not in self.vhost.queues:
                self._declare_queue(name, headers, on_send=True)
            target = ("", name, True)
        elif kind == TOPIC:
            target = ("amq.topic", name, False)
        elif kind == EXCHANGE:
            target = (name, key, False)
        elif kind == AMQ_QUEUE or kind == REPLY_QUEUE:
            target = ("", name, False)
        else:
            return "", self._temp_queue(name)  # TEMP_QUEUE: checked every time
        if len(self._send_targets) >= 1024:  # bounded
            self._send_targets.clear()
        self._send_targets[destination] = target
        return target[0], target[1]

    def _declare_queue(self, name: str, headers: dict, on_send: bool = False) -> None:
        """/queue/<name>: a durable shared queue (RabbitMQ); ``durable``/``auto-delete``/
        ``exclusive`` headers and ``x-`` queue arguments as RabbitMQ reads them."""
        self.grant.configure("queue", name)
        self.vhost.declare_queue(
            name, durable=headers.get("durable", "true").lower() != "false",
            auto_delete=headers.get("auto-delete") == "true",
            exclusive=headers.get("exclusive") == "true",
            arguments=queue_arguments(headers, on_send), owner=self)

    def _temp_queue(self, label: str) -> str:
        name = self.temp_queues.get(label)
        if name is not None and name in self.vhost.queues:
            return name
        name = self.vhost.declare_queue("", exclusive=True, auto_delete=True, owner=self).name
        self.temp_queues[label] = name
        destination = "/temp-queue/" + label
        if destination not in self.subscriptions:
            self._start_subscription(destination, destination, name, "auto", 0, {}, False,
                                     False, fixed_destination=destination)
        return name

    # ================================================================ SUBSCRIBE
    def on_subscribe(self, frame: Frame) -> None:
        headers = frame.headers
        destination = _required(frame, "destination")
        # [STOMP 1.1+] id is required; 1.0 clients may omit it: RabbitMQ then uses the destination.
        sub_id = headers.get("id", destination)
        if sub_id in self.subscriptions:
            raise StompError("Duplicated subscription identifier",
                             f"A subscription identified by '{sub_id}' already exists.")
        ack_mode = headers.get("ack", "auto")
        if ack_mode not in ACK_MODES:
            raise StompError("Invalid ack header",
                             f"ack must be one of {', '.join(ACK_MODES)}; got {ack_mode!r}")
        prefetch = 0
        if "prefetch-count" in headers:
            try:
                prefetch = int(headers["prefetch-count"])
                if prefetch < 0:
                    raise ValueError
            except ValueError:
                raise StompError("Invalid prefetch-count",
                                 f"bad prefetch-count {headers['prefetch-count']!r}") from None
        arguments: dict[str, Any] = {}
        if "x-stream-offset" in headers:
            arguments["x-stream-offset"] = stream_offset(headers["x-stream-offset"])
        if "x-stream-reference" in headers:
            arguments["x-stream-reference"] = headers["x-stream-reference"]
        exclusive = headers.get("exclusive") == "true"
        kind, name, key = parse_destination(destination)
        vhost = self.vhost
        durable = False
        fixed = None
        if kind == QUEUE:
            args = queue_arguments(headers)
            if name not in vhost.queues or args:
                self._declare_queue(name, headers)
            self.grant.read("queue", name)
            queue = name
        elif kind == AMQ_QUEUE:
            vhost.declare_queue(name, passive=True, owner=self)  # never declared: 404 if absent
            self.grant.read("queue", name)
            queue = name
        elif kind in (TOPIC, EXCHANGE):
            exchange = "amq.topic" if kind == TOPIC else name
            binding_key = name if kind == TOPIC else key
            vhost.declare_exchange(exchange, passive=True)
            # Read on the exchange and topic read only: never rights on the subscription queue
            # made here for the client (unlike RabbitMQ, which asks configure/write on it).
            self.grant.read("exchange", exchange)
            self.grant.check_topic("read", exchange, binding_key)
            durable = (headers.get("durable", headers.get("persistent", "false")).lower() == "true"
                       and headers.get("auto-delete", "false").lower() != "true")
            queue_name = headers.get("x-queue-name", "")
            args = queue_arguments(headers)
            if durable:
                if "id" not in headers:
                    raise StompError("Missing Header",
                                     "Header 'id' is required for durable subscriptions")
                if not queue_name:
                    # RabbitMQ derives it from (destination, id) the same way: stable across
                    # reconnects, bounded in length.
                    digest = hashlib.md5(f"{destination}\x00{sub_id}".encode()).digest()
                    queue_name = "stomp-subscription-" + base64.urlsafe_b64encode(
                        digest).decode().rstrip("=")
                queue = vhost.declare_queue(queue_name, durable=True, arguments=args).name
            else:
                queue = vhost.declare_queue(queue_name, exclusive=True, auto_delete=True,
                                            arguments=args, owner=self).name
            vhost.bind_queue(queue, exchange, binding_key, None, owner=self)
        elif kind == TEMP_QUEUE:
            queue = self.temp_queues.get(name) or ""
            if queue not in vhost.queues:
                queue = vhost.declare_queue("", exclusive=True, auto_delete=True,
                                            owner=self).name
                self.temp_queues[name] = queue
            fixed = destination
        else:
            raise DestinationError(f"'{destination}' cannot be subscribed to; /reply-queue/ "
                                   "destinations are for SEND only")
        self._start_subscription(sub_id, destination, queue, ack_mode, prefetch, arguments,
                                 exclusive, durable, fixed)

    def _start_subscription(self, sub_id: str, destination: str, queue: str, ack_mode: str,
                            prefetch: int, arguments: dict, exclusive: bool, durable: bool,
                            fixed_destination: str | None = None) -> Subscription:
        sub = Subscription(self, sub_id, destination, queue, ack_mode, prefetch, arguments,
                           exclusive, durable, fixed_destination)
        self.subscriptions[sub_id] = sub
        try:
            self.vhost.consume(queue, sub, owner=self)
        except BaseException:
            self.subscriptions.pop(sub_id, None)
            raise
        return sub

    # ================================================================ MESSAGE (hot path)
    def deliver(self, sub: Subscription, delivery: Delivery) -> None:
        """One MESSAGE frame, assembled from pre-encoded pieces (the subscription's head, the
        escaped destination per routing key, the property headers per message)."""
        tag = self._next_tag
        self._next_tag = tag + 1
        if not sub.no_ack:
            sub.pending.add(tag, delivery)
            self.unacked[tag] = sub
        message = delivery.message
        destination = sub.fixed_destination_bytes
        if destination is None:
            key = (message.exchange, message.routing_key)
            destination = sub.destinations.get(key)
            if destination is None:
                destination = escape(destination_of(*key), self.version).encode()
                if len(sub.destinations) >= 1024:  # bounded: topic keys can be many
                    sub.destinations.clear()
                sub.destinations[key] = destination
        props = message.properties
        cache = self._prop_cache
        if cache is not None and cache[0] is props:
            block = cache[1]
        else:
            version = self.version
            block = "".join(["\n" + escape(k, version) + ":" + escape(v, version)
                             for k, v in properties_to_headers(props)]).encode()
            self._prop_cache = (props, block)
        body = message.body
        # [STOMP 1.2 "MESSAGE"]: ack header (= message-id here) in 1.2 only.
        ids = (b"\nmessage-id:%d\nack:%d" % (tag, tag) if self.version == "1.2"
               else b"\nmessage-id:%d" % tag)
        out = self._out
        out += (sub.head, destination, ids,
                b"\nredelivered:true" if delivery.redelivered else b"\nredelivered:false")
        if delivery.offset is not None:
            out.append(b"\nx-stream-offset:%d" % delivery.offset)
        out += (block, b"\ncontent-length:%d\n\n" % len(body), body, b"\x00")
        self._out_bytes += len(body) + len(block) + 128
        if self._out_bytes >= FLUSH_BYTES:
            self._flush()
        elif not self._flush_scheduled and not self._in_input:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    # ================================================================ UNSUBSCRIBE
    def on_unsubscribe(self, frame: Frame) -> None:
        headers = frame.headers
        sub_id = headers.get("id")
        if sub_id is None:
            if self.version != "1.0":
                _required(frame, "id")
            sub_id = _required(frame, "destination")
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            return  # already gone (e.g. cancelled by the server): nothing to do
        self._end_subscription(sub)
        # RabbitMQ: UNSUBSCRIBE with persistent:true (or durable:true) ends a durable
        # subscription for good by deleting its queue.
        if sub.durable and headers.get("durable", headers.get("persistent", "")) == "true":
            self.vhost.delete_queue(sub.queue_name)

    def _end_subscription(self, sub: Subscription) -> None:
        sub.active = False
        self.vhost.cancel(sub)
        pending = sub.pending.take_all()
        for tag, _ in pending:
            self.unacked.pop(tag, None)
        # Unacked messages of an ended subscription go back to their queue.
        self.vhost.requeue([d for _, d in pending])

    def server_cancelled(self, sub: Subscription, reason: str) -> None:
        """The queue went away: tell the client as RabbitMQ does, keep the connection."""
        if self.subscriptions.get(sub.id) is not sub:
            return
        del self.subscriptions[sub.id]
        sub.active = False
        for tag, _ in sub.pending.take_all():
            self.unacked.pop(tag, None)
        if self.state == CONNECTED:
            body = reason.encode()
            self.write_frame(Frame("ERROR", {
                "message": "Server cancelled subscription", "subscription": sub.id,
                "content-type": "text/plain", "content-length": str(len(body))}, body))

    # ================================================================ ACK / NACK
    def on_ack(self, frame: Frame) -> None:
        self._ack_or_nack(frame, True)

    def on_nack(self, frame: Frame) -> None:
        self._ack_or_nack(frame, False)

    def _ack_or_nack(self, frame: Frame, ack: bool) -> None:
        headers = frame.headers
        # [STOMP 1.2 "ACK"]: by the MESSAGE's ack header, sent back as id; 1.0/1.1 by message-id.
        ack_id = _required(frame, "id" if self.version == "1.2" else "message-id")
        requeue = headers.get("requeue", "true").lower() != "false"
        tx = headers.get("transaction")
        if tx is not None:
            self._transaction(tx).append(lambda: self._settle(ack_id, ack, requeue))
        else:
            self._settle(ack_id, ack, requeue)

    def _settle(self, ack_id: str, ack: bool, requeue: bool) -> None:
        try:
            tag = int(ack_id)
        except ValueError:
            raise StompError("Invalid message-id", f"unknown message id {ack_id!r}") from None
        sub = self.unacked.get(tag)
        if sub is None:
            return  # already settled (a cumulative ACK covered it) or timed out
        if sub.ack_mode == "client":
            # client mode: the ACK/NACK covers every earlier message of the subscription
            # [STOMP 1.2 "SUBSCRIBE ack Header"].
            settled = sub.pending.take_upto(tag)
        else:
            delivery = sub.pending.take(tag)
            settled = [(tag, delivery)] if delivery is not None else []
        unacked = self.unacked
        for t, delivery in settled:
            unacked.pop(t, None)
            if ack:
                delivery.ack()
            else:
                delivery.reject(requeue)

    # ================================================================ transactions
    def _transaction(self, tx: str) -> list:
        actions = self.transactions.get(tx)
        if actions is None:
            raise StompError("Bad transaction", f"Invalid transaction identifier: {tx}")
        return actions

    def on_begin(self, frame: Frame) -> None:
        tx = _required(frame, "transaction")
        if tx in self.transactions:
            raise StompError("Bad transaction", f"Transaction {tx} already started")
        self.transactions[tx] = []

    def on_commit(self, frame: Frame) -> None:
        tx = _required(frame, "transaction")
        actions = self._transaction(tx)
        del self.transactions[tx]
        waits = []
        for action in actions:
            wait = action()  # a SEND returns its durability awaitable (or None)
            if wait is not None:
                waits.append(wait)
        receipt = frame.headers.get("receipt")
        if receipt is not None and waits:
            # The COMMIT's RECEIPT says every committed persistent SEND is on disk.
            del frame.headers["receipt"]
            self._receipt(receipt, asyncio.gather(*waits))

    def on_abort(self, frame: Frame) -> None:
        tx = _required(frame, "transaction")
        self._transaction(tx)
        del self.transactions[tx]
