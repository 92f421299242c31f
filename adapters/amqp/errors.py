"""The AMQP session's own protocol errors (core errors come from ``broker.errors``)."""
from __future__ import annotations


class AMQPError(Exception):
    """A protocol error raised by the session itself (reply text already prefixed)."""

    def __init__(self, code: int, text: str, connection_level: bool = False):
        super().__init__(text)
        self.amqp_code = code
        self.text = text
        self.connection_level = connection_level

    def reply_text(self) -> str:
        return self.text
