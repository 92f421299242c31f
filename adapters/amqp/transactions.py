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
        ch.select_confirms()
        if not m.nowait:
            self.send(replies.confirm_select_ok(ch.number))

    def _tx_select(self, ch: Channel, m: Any) -> None:
        if ch.confirms is not None:
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
        if settles and ch.window.limit:
            # the acks left the window when they were received; its consumers go on now
            ch.resume_consumers()
        # Commit-Ok is a promise like a confirm: it follows the fsync of every persistent
        # message of the transaction, and commits are answered in order.
        ch.commit_ok(None if not waits else
                     asyncio.gather(*waits) if len(waits) > 1 else waits[0])

    def _tx_rollback(self, ch: Channel, m: Any) -> None:
        if ch.tx is None:
            raise PreconditionFailed("channel is not transactional")
        # Held acks are undone: those deliveries are unacked again (RabbitMQ tx.rollback).
        for pairs, _ack, _requeue in ch.tx_settles:
            ch.unacked.restore(pairs)
        ch.tx, ch.tx_settles = [], []
        self.send(replies.tx_rollback_ok(ch.number))
