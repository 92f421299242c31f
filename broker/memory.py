"""The memory alarm: bytes of message bodies held in memory, against a high-water mark.

RabbitMQ's model: above the mark, connections that publish stop being read (AMQP clients are
told with Connection.Blocked) until consumers drain the queues below the low-water mark, so a
flood of publishes with nobody consuming cannot grow the broker without bound. Consumers keep
acking meanwhile, which is how memory comes back. Bodies paged out to disk do not count.
"""
from __future__ import annotations

from typing import Callable


class MemoryBudget:
    def __init__(self, high_water_bytes: int, low_water_ratio: float = 0.8):
        self.high_water_bytes = high_water_bytes
        self.low_water_bytes = int(high_water_bytes * low_water_ratio)
        self.used_bytes = 0
        self.alarm = False
        self._listeners: list[Callable[[bool], None]] = []

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """``listener(alarm)`` is called whenever the alarm goes on or off."""
        self._listeners.append(listener)

    def add(self, delta: int) -> None:
        self.used_bytes += delta
        if not self.high_water_bytes:
            return
        if delta > 0:
            if not self.alarm and self.used_bytes > self.high_water_bytes:
                self._set(True)
        elif self.alarm and self.used_bytes < self.low_water_bytes:
            self._set(False)

    def _set(self, alarm: bool) -> None:
        self.alarm = alarm
        for listener in list(self._listeners):
            listener(alarm)
