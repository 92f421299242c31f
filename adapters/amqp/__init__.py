"""AMQP 0-9-1 adapter (RabbitMQ dialect): ``make_server`` for ``broker/service.py``.

Layers: ``codec`` (sans-I/O frames), ``session`` (connection/channel state machines over the
core). See MAPPING.md for how AMQP concepts map onto core calls.
"""
from __future__ import annotations

from typing import Any

from manifold.broker.engine.output import FlushGroup

from .session import AMQPSession


class AMQPServer:
    name = "amqp"

    def __init__(self, broker: Any, settings: Any):
        self.broker = broker
        self.settings = settings
        #: direct reply-to tokens -> the consumer (on some channel) that replies go to
        self.reply_to: dict = {}
        #: output of every AMQP connection made while one of them reads goes out at the end
        #: of that read (a publish fanning out to consumers: one write each, no extra tick)
        self.flush_group = FlushGroup()

    def new_session(self) -> AMQPSession:
        return AMQPSession(self)

    async def close(self) -> None:
        pass


def make_server(broker: Any, settings: Any) -> AMQPServer:
    return AMQPServer(broker, settings)


__all__ = ["make_server", "AMQPServer"]
