"""MQTT and STOMP over WebSocket: a layer of the shared transport, on ``websockets``' sans-I/O
``ServerProtocol`` (RFC 6455 framing, handshake, ping/pong and close are the library's).

The handshake picks the protocol: subprotocol ``mqtt`` (paho's ``transport="websockets"``) or
``v10.stomp``/``v11.stomp``/``v12.stomp`` (browser STOMP clients); without one, the path does
(``/mqtt``; ``/stomp`` or ``/ws``). The payload of every data frame goes to the unchanged MQTT or
STOMP session as a byte stream, so a frame may carry part of a packet or several packets. What the
session writes leaves as one message per write: binary for MQTT [MQTT-6.0.0-1]; for STOMP text
when it is UTF-8 (as RabbitMQ's Web STOMP sends), else binary.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from websockets.exceptions import InvalidOrigin
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from manifold.config.settings import WebSocketSettings



class _LibraryLog(logging.LoggerAdapter):
    """websockets logs "connection open" at INFO; the transport already logs each connection
    once, so the library's lines (frames, handshakes) go to debug under manifold.websocket."""

    def info(self, msg, *args, **kwargs):  # type: ignore[override]
        self.debug(msg, *args, **kwargs)


_LIBRARY_LOG = _LibraryLog(logging.getLogger("manifold.websocket"), {})

#: subprotocol -> protocol adapter
SUBPROTOCOLS = {"mqtt": "mqtt", "mqttv3.1": "mqtt", "v12.stomp": "stomp", "v11.stomp": "stomp",
                "v10.stomp": "stomp"}
#: request path -> protocol adapter, when the client names no subprotocol
PATHS = {"/mqtt": "mqtt", "/stomp": "stomp", "/ws": "stomp"}


def _select(_protocol: ServerProtocol, offered: Sequence[str]) -> str | None:
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None  # decided by the path (see WebSocketLayer._on_request)


class WebSocketLayer:
    """Handshake, then frames in -> byte stream out, and writes -> one message each."""

    def __init__(self, settings: WebSocketSettings, send_raw: Callable[[bytes], None],
                 on_open: Callable[[str], bool], protocols: Sequence[str]):
        # Non-browser clients send no Origin; the check is a browser protection, so they pass.
        origins = [*settings.allowed_origins, None] if settings.allowed_origins else None
        self._ws = ServerProtocol(origins=origins, subprotocols=list(SUBPROTOCOLS),
                                  select_subprotocol=_select,
                                  max_size=settings.max_message_bytes or None,
                                  logger=_LIBRARY_LOG)
        self._send_raw = send_raw
        #: called with the chosen protocol once the handshake is accepted; False refuses
        self._on_open = on_open
        self._protocols = set(protocols)
        self.protocol: str | None = None
        self.error: str | None = None

    @property
    def closed(self) -> bool:
        """The closing handshake started (by the client, or by a protocol error such as an
        oversized message): the transport closes the TCP connection."""
        return self._ws.state in (State.CLOSING, State.CLOSED) or self._ws.close_expected()

    @property
    def close_reason(self) -> str:
        if self.protocol is None and self._ws.handshake_exc is not None:
            return f"websocket handshake failed: {self._ws.handshake_exc}"
        exc = self._ws.parser_exc
        if exc is not None:
            return f"websocket error: {exc}"
        return "client closed the websocket"

    def receive(self, data: bytes) -> bytes:
        """The stream bytes carried by ``data``'s data frames (b"" if none)."""
        self._ws.receive_data(data)
        chunks = []
        for event in self._ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY,
                                                                  Opcode.CONT):
                chunks.append(event.data)
        self._flush()
        return b"".join(chunks)

    def _on_request(self, request: Request) -> None:
        response = self._ws.accept(request)
        if response.status_code == 101:
            offered = response.headers.get("Sec-WebSocket-Protocol")
            protocol = SUBPROTOCOLS.get(offered) if offered else PATHS.get(
                request.path.split("?", 1)[0].rstrip("/") or "/")
            if protocol is None or protocol not in self._protocols:
                response = self._ws.reject(404, "Unknown path: use /mqtt or /stomp, or the "
                                                "subprotocol mqtt or v12.stomp\n")
                self.error = f"websocket handshake refused: path {request.path!r}"
            else:
                self.protocol = protocol
        else:
            exc = self._ws.handshake_exc
            self.error = ("websocket origin refused" if isinstance(exc, InvalidOrigin)
                          else f"websocket handshake failed: {exc}")
        self._ws.send_response(response)
        if self.protocol is not None and not self._on_open(self.protocol):
            self.protocol = None

    def wrap(self, data: bytes) -> None:
        """Send ``data`` from the session as one WebSocket message."""
        if self._ws.state is not State.OPEN:
            return
        data = bytes(data)
        if self.protocol == "stomp":
            try:
                data.decode("utf-8")
                self._ws.send_text(data)
            except UnicodeDecodeError:
                self._ws.send_binary(data)
        else:
            self._ws.send_binary(data)
        self._flush()

    def ping(self) -> None:
        if self._ws.state is State.OPEN:
            self._ws.send_ping(b"manifold")
            self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (the transport closes the socket after it)."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(code, reason[:120])
            self._flush()

    def _flush(self) -> None:
        for chunk in self._ws.data_to_send():
            if chunk:
                self._send_raw(chunk)
