"""Output batched per loop tick: a session's frames go to the transport in one write per batch,
not one per frame, so a burst of deliveries costs one send.

A batch goes out
- when the session stops handling input (``hold`` ... ``release``: one write per read);
- when ``limit`` bytes have piled up (which also lets the transport's high-water mark, and so
  the consumers' credit, see them);
- otherwise on the next loop iteration (one ``call_soon`` per batch), or, when a
  :class:`FlushGroup` is handling some connection's read (a publish fanning out to consumers on
  other connections), right after that read, without the extra loop turn.

The transport is anything with ``write(bytes)`` (and ``writelines(list)`` when asked for); a
write on a closed one is the transport's to drop.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable


class FlushGroup:
    """Connections whose batches go out together at the end of the read being handled."""

    __slots__ = ("reading", "dirty")

    def __init__(self) -> None:
        #: reads in progress (a read may cause another connection's read to be handled)
        self.reading = 0
        #: outputs with a batch waiting for the end of the read
        self.dirty: list[Output] = []

    def enter(self) -> None:
        self.reading += 1

    def leave(self) -> None:
        self.reading -= 1
        if not self.reading and self.dirty:
            dirty, self.dirty = self.dirty, []
            for output in dirty:
                if output.scheduled:
                    output.flush()


class Output:
    __slots__ = ("chunks", "size", "limit", "scheduled", "holding", "conn", "_writelines",
                 "_group", "_before_flush", "_call_soon")

    def __init__(self, limit: int, *, group: FlushGroup | None = None,
                 before_flush: Callable[[], None] | None = None, writelines: bool = False,
                 call_soon: Callable[[Callable[[], None]], Any] | None = None):
        """``before_flush()`` may add last frames to a batch (AMQP folds confirms into one
        ``multiple`` ack there). ``writelines`` hands the chunks over as a list instead of
        joining them. ``call_soon`` defaults to the running loop's."""
        #: the batch: frames (bytes) in order; callers on a hot path may append here directly
        #: and then call :meth:`added`
        self.chunks: list = []
        self.size = 0
        self.limit = limit
        self.scheduled = False
        self.holding = False
        #: the transport; None until the connection is made (and writes are then kept)
        self.conn: Any = None
        self._writelines = writelines
        self._group = group
        self._before_flush = before_flush
        self._call_soon = call_soon

    def __len__(self) -> int:
        return len(self.chunks)

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        # (added() inlined: this runs for every frame of every protocol)
        self.size += len(data)
        if self.size >= self.limit:
            self.flush()
        elif not self.scheduled and not self.holding:
            self.schedule()

    def added(self, nbytes: int) -> None:
        """``nbytes`` more were appended to ``chunks``: send them in time."""
        self.size += nbytes
        if self.size >= self.limit:
            self.flush()
        elif not self.scheduled and not self.holding:
            self.schedule()

    def soon(self) -> None:
        """Something for ``before_flush`` is waiting: send a batch soon (at ``release`` if
        input is being handled)."""
        if not self.scheduled and not self.holding:
            self.schedule()

    def schedule(self) -> None:
        if self.scheduled:
            return
        self.scheduled = True
        group = self._group
        if group is not None and group.reading:
            group.dirty.append(self)
            return
        call_soon = self._call_soon
        if call_soon is None:
            call_soon = self._call_soon = asyncio.get_running_loop().call_soon
        call_soon(self._tick)

    def hold(self) -> None:
        """Input is being handled: what it produces goes out in one write at ``release``."""
        self.holding = True

    def release(self) -> None:
        self.holding = False
        self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if self._before_flush is not None:
            self._before_flush()
        chunks = self.chunks
        if not chunks:
            return
        self.chunks = []
        self.size = 0
        conn = self.conn
        if conn is None:
            return
        if len(chunks) == 1:
            conn.write(chunks[0])
        elif self._writelines:
            conn.writelines(chunks)
        else:
            conn.write(b"".join(chunks))

    def _tick(self) -> None:
        if not self.scheduled:
            return  # sent already (input handling, the limit, the group)
        self.flush()

    def clear(self) -> None:
        """The connection is gone: drop what was not sent."""
        self.chunks = []
        self.size = 0
