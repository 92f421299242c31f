"""STOMP 1.0 / 1.1 / 1.2 adapter (RabbitMQ STOMP plugin conventions; see MAPPING.md).

``make_server(broker, settings)`` is what ``broker/service.py`` loads; each connection gets a
:class:`~adapters.stomp.session.StompSession` running on the shared transport.
"""
from __future__ import annotations

import itertools
from typing import Any

from .session import StompSession

__all__ = ["make_server", "StompServer", "StompSession"]

SERVER_NAME = "Manifold/0.1.0"


class StompServer:
    """Per-server state (no globals): the broker, settings and a session id counter."""

    name = "stomp"

    def __init__(self, broker: Any, settings: Any):
        self.broker = broker
        self.settings = settings
        self.server_header = SERVER_NAME
        self._ids = itertools.count(1)

    def next_session_id(self) -> int:
        return next(self._ids)

    def new_session(self) -> StompSession:
        return StompSession(self)

    async def close(self) -> None:
        return None


def make_server(broker: Any, settings: Any) -> StompServer:
    return StompServer(broker, settings)
