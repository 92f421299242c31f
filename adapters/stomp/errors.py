"""What the STOMP session's parts share: the refusal that becomes an ERROR frame, the required
header check, the connection states and the limits."""
from __future__ import annotations

from .codec import Frame

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")
CONNECTING, CONNECTED, CLOSED = "CONNECTING", "CONNECTED", "CLOSED"
ACK_MODES = ("auto", "client", "client-individual")


class StompError(Exception):
    """A protocol-level refusal: ERROR frame with ``message`` header and ``detail`` body."""

    def __init__(self, message: str, detail: str = "", headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail or message
        self.headers = headers or {}


def required(frame: Frame, name: str) -> str:
    value = frame.headers.get(name)
    if value is None:
        raise StompError(f"Missing {name}",
                         f"{frame.command} frame requires a '{name}' header")
    return value
