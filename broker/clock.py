"""Time for the core: wall-clock milliseconds and one-shot timers.

Queues ask for timers through their host; the host uses a clock. ``LoopClock`` runs timers on the
asyncio loop; ``ManualClock`` lets unit tests move time by hand, without a loop.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Callable


class LoopClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def call_at(self, when_ms: int, callback: Callable[[], None]) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, (when_ms - self.now_ms()) / 1000.0), callback)


class _ManualHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    def __init__(self, start_ms: int = 1_700_000_000_000):
        self._now = start_ms
        self._timers: list = []
        self._seq = itertools.count()

    def now_ms(self) -> int:
        return self._now

    def call_at(self, when_ms: int, callback: Callable[[], None]) -> _ManualHandle:
        handle = _ManualHandle()
        heapq.heappush(self._timers, (when_ms, next(self._seq), handle, callback))
        return handle

    def advance(self, ms: int) -> None:
        """Move time forward, running every timer that falls due, in order."""
        target = self._now + ms
        while self._timers and self._timers[0][0] <= target:
            when, _, handle, callback = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not handle.cancelled:
                callback()
        self._now = target
