"""Confirm and Tx class methods: publisher-confirm mode, and transactions that hold
publishes and settlements until Tx.Commit [AMQP 0-9-1 tx; RabbitMQ confirms].

``TransactionMethods`` is one part of ``AMQPSession`` (see session.py).
"""
from __future__ import annotations

import asyncio
from typing import Any

from manifold.broker.errors import PreconditionFailed

from . import replies
from .basic import REPLY_PREFIX
from .channel import Channel


class TransactionMethods:
    """Confirm.Select and Tx.* handlers."""

    # ---------------------------------------------------------------- confirm / tx
    def _confirm_select(self, ch: Channel, m: Any) -> None:
        if ch.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        ch.confirm = True
        if not m.nowait:
            self.send(replies.confirm_select_ok(ch.number))

    def _tx_select(self, ch: Channel, m: Any) -> None:
        if ch.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        if ch.tx is None:
            ch.tx = []
        self.send(replies.tx_select_ok(ch.number))

    def _tx_commit(self, ch: Channel, m: Any) -> None:
        if ch.tx is None:
            raise PreconditionFailed("channel is not transactional")
        publishes, settles = ch.tx, ch.tx_settles
        ch.tx, ch.tx_settles = [], []
        waits = []
        for message, mandatory in publishes:
            if message.exchange or not message.routing_key.startswith(REPLY_PREFIX):
                result = self.vhost.publish(message.exchange, message.routing_key, message)
            else:
                result = self._reply(message)
            if not result.routed and mandatory:
                self.basic_return(ch, message, 312, "NO_ROUTE")
            if result.wait is not None:
                waits.append(result.wait)
        held = ch.tx
        ch.tx = None  # settle for real
        try:
            for deliveries, ack, requeue in settles:
                ch.settle(deliveries, ack, requeue)
        finally:
            ch.tx = held
        # Commit-Ok is a promise like a confirm: it follows the fsync of every persistent
        # message of the transaction, and commits are answered in order.
        previous = ch.commit_wait
        if previous is not None:
            waits.append(previous)
        if not waits:
            self.send(replies.tx_commit_ok(ch.number))
            return
        future = asyncio.gather(*waits) if len(waits) > 1 else asyncio.ensure_future(waits[0])
        ch.commit_wait = future
        future.add_done_callback(lambda f, ch=ch: self._commit_stored(ch, f))

    def _commit_stored(self, ch: Channel, future: asyncio.Future) -> None:
        if ch.commit_wait is future:
            ch.commit_wait = None
        if ch.closing or ch.closed:
            return
        if future.cancelled() or future.exception() is not None:
            error = "cancelled" if future.cancelled() else future.exception()
            # No Commit-Ok for what is not on disk: the channel ends, the client knows the
            # transaction's outcome is unknown (RabbitMQ closes the channel the same way).
            self.channel_error(ch, 541, f"INTERNAL_ERROR - transaction not stored: {error}",
                               90, 20)
            return
        self.send(replies.tx_commit_ok(ch.number))

    def _tx_rollback(self, ch: Channel, m: Any) -> None:
        if ch.tx is None:
            raise PreconditionFailed("channel is not transactional")
        # Held acks are undone: those deliveries are unacked again (RabbitMQ tx.rollback).
        for pairs, _ack, _requeue in ch.tx_settles:
            ch.unacked.restore(pairs)
        ch.tx, ch.tx_settles = [], []
        self.send(replies.tx_rollback_ok(ch.number))
