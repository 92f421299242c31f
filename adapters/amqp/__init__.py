"""AMQP 0-9-1 adapter (RabbitMQ dialect): ``make_server`` for ``broker/service.py``.

Layers: ``codec`` (sans-I/O frames), ``session`` (connection/channel state machines over the
core). See MAPPING.md for how AMQP concepts map onto core calls.
"""
from __future__ import annotations

from typing import Any

from .session import AMQPSession


class AMQPServer:
    name = "amqp"

    def __init__(self, broker: Any, settings: Any):
        self.broker = broker
        self.settings = settings
        #: direct reply-to tokens -> the consumer (on some channel) that replies go to
        self.reply_to: dict = {}
        #: sessions with output waiting, flushed when the current read is done (see
        #: AMQPSession.schedule_flush); ``receiving`` counts reads in progress
        self.dirty: list = []
        self.receiving = 0

    def new_session(self) -> AMQPSession:
        return AMQPSession(self)

    async def close(self) -> None:
        pass


def make_server(broker: Any, settings: Any) -> AMQPServer:
    return AMQPServer(broker, settings)


__all__ = ["make_server", "AMQPServer"]
