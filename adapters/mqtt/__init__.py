"""MQTT 3.1.1 and 5.0 adapter (see MAPPING.md). ``make_server`` is what broker.service loads."""
from __future__ import annotations

from typing import Any

from .server import MqttServer
from .session import MqttSession


def make_server(broker: Any, settings: Any) -> MqttServer:
    server = MqttServer(broker, settings, MqttSession)
    server.load()  # retained messages and persistent sessions of an earlier run
    return server


__all__ = ["make_server", "MqttServer"]
