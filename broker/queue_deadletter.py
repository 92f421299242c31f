"""How a message leaves a queue other than by an ack: discarded, or dead-lettered (RabbitMQ's
``x-dead-letter-exchange``) at most once or, for quorum queues, at least once.

Part of :class:`broker.queue.Queue` (it inherits :class:`QueueDeadLetters`). The copy is made by
the host when the queue's :class:`~broker.queue_commands.DeadLetter` effect runs; the host's
answer comes back through :meth:`QueueDeadLetters.dead_letter_done`.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any

from .entry import GONE, Entry
from .message import Message
from .queue_args import DEAD_LETTER_RETRY_MS
from .queue_commands import DeadLetter, Timer

log = logging.getLogger("manifold.queue")


class QueueDeadLetters:
    # State of Queue this part uses (set in Queue.__init__; methods it calls live in Queue and
    # its other parts: _forget, _release, _load, _run).
    name: str
    host: Any
    dlx: str | None
    dead_letter_reasons: frozenset | None
    dead_letter_at_least_once: bool
    deleted: bool
    _dead_letter_held: deque
    _effects: list

    def _dead_letters(self, reason: str) -> bool:
        """Whether a message leaving for ``reason`` goes to the dead-letter exchange."""
        return self.dlx is not None and (self.dead_letter_reasons is None
                                         or reason in self.dead_letter_reasons)

    def _drop(self, entry: Entry, reason: str) -> None:
        """Discard or dead-letter an entry, whether its body is in memory or only on disk."""
        entry.state = GONE
        if not self._dead_letters(reason):
            self._forget(entry)
            return
        try:
            message = self._load(entry)  # before the settle: a paged-out body is read back
        except (OSError, KeyError, ValueError) as exc:
            # Unreadable: keep the original on disk (it returns after a restart) rather than
            # settle a message that reached no dead-letter queue.
            log.error("queue '%s': cannot read message %d to dead-letter it: %s", self.name,
                      entry.msg_id, exc)
            self._release(entry)
            return
        self._release(entry)
        self._effects.append(DeadLetter(entry, message, reason))

    def dead_letter_done(self, entry: Entry, message: Message, reason: str, copied: Any) -> None:
        """What the host answered to a :class:`DeadLetter` effect: False (no queue took the
        copy), True (the queues hold it) or a future (resolves once every durable copy is on
        disk). Runs as a command: its own effects run after it."""
        if self.dead_letter_at_least_once:
            self._dead_lettered(entry, message, reason, copied)
        elif not entry.on_disk or copied is True or copied is False:
            self._forget(entry)
        else:
            # The dead-letter copy is durable before the original is settled: a crash between
            # the two leaves the message in both queues, never in neither.
            copied.add_done_callback(lambda done, e=entry: self._copy_stored(e, done))
        self._run()

    def _copy_stored(self, entry: Entry, done: Any) -> None:
        if done.cancelled() or done.exception() is not None:
            log.error("queue '%s': dead-letter copy of message %d not stored; the original "
                      "stays on disk", self.name, entry.msg_id)
            return
        self._forget(entry)
        self._run()

    def _dead_lettered(self, entry: Entry, message: Message, reason: str, copied: Any) -> None:
        """At-least-once [RabbitMQ x-dead-letter-strategy]: the original is settled once a
        dead-letter queue holds the copy (on disk, for durable ones); if none took it (no
        route, a refusal, a failed write) it is held and offered again after
        DEAD_LETTER_RETRY_MS. ``copied`` is what ``host.dead_letter`` returned."""
        if copied is True:
            self._forget(entry)
        elif copied is False:
            self._hold_dead_letter(entry, message, reason)
        else:
            copied.add_done_callback(lambda done: self._copy_settled(entry, message, reason, done))

    def _copy_settled(self, entry: Entry, message: Message, reason: str, done: Any) -> None:
        if not done.cancelled() and done.exception() is None:
            self._forget(entry)
        else:
            self._hold_dead_letter(entry, message, reason)
        self._run()

    def _hold_dead_letter(self, entry: Entry, message: Message, reason: str) -> None:
        if self.deleted:
            return
        retry_at = self.host.now_ms() + DEAD_LETTER_RETRY_MS
        self._dead_letter_held.append((retry_at, entry, message, reason))
        self._effects.append(Timer(retry_at))

    def _retry_dead_letters(self, now: int) -> None:
        """Offer held at-least-once dead letters again once their retry time has come."""
        held = self._dead_letter_held
        while held and held[0][0] <= now:
            _, entry, message, reason = held.popleft()
            self._effects.append(DeadLetter(entry, message, reason))
