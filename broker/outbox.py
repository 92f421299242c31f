"""Notifications that have no carrier to reach: SNS deliveries to ``sms`` and ``application``
subscriptions (and direct publishes to phone numbers or platform endpoints). The broker keeps the
last ``size`` of them, oldest first, for the management API (``GET /api/outbox``) to show, as
LocalStack's SNS does; each is logged too. Memory stays bounded; nothing is persisted."""
from __future__ import annotations

from collections import deque
from typing import Any


class Outbox:
    def __init__(self, size: int = 1000):
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, entry: dict[str, Any]) -> None:
        self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries)
