"""The resource alarms: bytes of message bodies held in memory against a high-water mark, and
free disk space against a limit.

RabbitMQ's model: above the mark, connections that publish stop being read (AMQP clients are
told with Connection.Blocked) until consumers drain the queues below the low-water mark, so a
flood of publishes with nobody consuming cannot grow the broker without bound. Consumers keep
acking meanwhile, which is how memory comes back. Counted: every body a queue holds in memory,
ready or unacked, and every retained MQTT message, each plus a per-entry overhead
(``broker.queue.ENTRY_OVERHEAD_BYTES``); a body paged out to disk counts only its overhead.
The disk alarm (RabbitMQ's ``disk_free_limit``) blocks the same connections while free space on
the data directory's file system is below the limit; consumers and acks go on, and publishing
resumes when space comes back. ``blocking`` is either alarm; listeners hear when it changes.
"""
from __future__ import annotations

from typing import Callable


class MemoryBudget:
    def __init__(self, high_water_bytes: int, low_water_ratio: float = 0.8):
        self.high_water_bytes = high_water_bytes
        self.low_water_bytes = int(high_water_bytes * low_water_ratio)
        self.used_bytes = 0
        self.alarm = False
        self.disk_alarm = False
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def blocking(self) -> bool:
        return self.alarm or self.disk_alarm

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """``listener(blocking)`` is called whenever ``blocking`` changes."""
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

    def set_disk_alarm(self, alarm: bool) -> None:
        if alarm != self.disk_alarm:
            before = self.blocking
            self.disk_alarm = alarm
            self._notify(before)

    def _set(self, alarm: bool) -> None:
        before = self.blocking
        self.alarm = alarm
        self._notify(before)

    def _notify(self, before: bool) -> None:
        if self.blocking != before:
            for listener in list(self._listeners):
                listener(self.blocking)
