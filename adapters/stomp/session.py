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

The frame handlers live in the session's parts: ``connect.ConnectMethods`` (CONNECT, heart-beats,
DISCONNECT), ``sending.SendMethods`` (SEND, transactions), ``subscriptions.SubscriptionMethods``
(SUBSCRIBE, MESSAGE, UNSUBSCRIBE, ACK, NACK). This module keeps the connection: dispatch,
errors, receipts and output (the session engine's ``Output``, ``InOrderReplies``, ``Ledger``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable

from manifold.broker.engine.credit import resume
from manifold.broker.engine.in_order import InOrderReplies
from manifold.broker.engine.output import Output
from manifold.broker.engine.unacked import Ledger, end_consumers
from manifold.broker.errors import BrokerError

from .codec import NEED_DATA, Frame, FrameCodec, FrameError, serialize
from .connect import ConnectMethods
from .errors import CLOSED, CONNECTED, CONNECTING, StompError
from .mapping import DestinationError
from .sending import SendMethods
from .subscriptions import Subscription, SubscriptionMethods

if TYPE_CHECKING:  # pragma: no cover
    from manifold.broker.transport import Connection

log = logging.getLogger("manifold.stomp")

# Output is coalesced up to this many bytes before it is handed to the transport.
FLUSH_BYTES = 64 * 1024


class StompSession(ConnectMethods, SendMethods, SubscriptionMethods):
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
        #: deliveries not yet settled, by tag, each in its subscription's scope (``client``
        #: acks are cumulative per subscription)
        self.held = Ledger()
        self._next_tag = 1
        self.transactions: dict[str, list[Callable[[], None]]] = {}
        #: /temp-queue/<label> -> server-named exclusive queue of this connection
        self.temp_queues: dict[str, str] = {}
        # RECEIPTs wait (in order) for the durability of the SENDs before them.
        self._receipts = InOrderReplies(self._release_receipt)
        self._frame: Frame | None = None
        self.output = Output(FLUSH_BYTES)
        #: SEND destination -> (exchange, routing key, is a /queue/ to declare when missing)
        self._send_targets: dict[str, tuple[str, str, bool]] = {}
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
        self.output.conn = conn
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
        self.output.hold()
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
            self.output.release()

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
        self.output.clear()
        vhost = self.vhost
        if vhost is None:
            return
        subs = list(self.subscriptions.values())
        self.subscriptions.clear()
        for sub in subs:
            sub.active = False
        end_consumers(vhost, subs, [d for _, d in self.held.take_all()])
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
        resume(self.subscriptions.values())

    # ================================================================ output helpers
    def write_frame(self, frame: Frame) -> None:
        self._write(serialize(frame, self.version))

    def _write(self, data: bytes) -> None:
        """Output goes out in one write per input chunk or loop tick (broker/engine/output.py)."""
        self.output.add(data)

    def _close(self, reason: str) -> None:
        self.output.flush()
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
