"""SEND (destinations to exchange and routing key, queues declared on first use, temporary
queues) and transactions (BEGIN / COMMIT / ABORT hold SENDs and ACKs until COMMIT).

``SendMethods`` is one part of ``StompSession`` (session.py).
"""
from __future__ import annotations

import asyncio
from typing import Any

from manifold.broker.message import Message

from .codec import Frame
from .errors import StompError, required
from .mapping import (AMQ_QUEUE, EXCHANGE, QUEUE, REPLY_QUEUE, TOPIC, headers_to_properties,
                      parse_destination, queue_arguments)


class SendMethods:
    """SEND and the transactions that hold frames until COMMIT."""

    # ================================================================ SEND
    def on_send(self, frame: Frame) -> None:
        headers = frame.headers
        destination = headers.get("destination")
        if destination is None:
            destination = required(frame, "destination")  # raises the ERROR
        cached = self._send_targets.get(destination)
        if cached is not None and (not cached[2] or cached[1] in self.vhost.queues):
            exchange, routing_key = cached[0], cached[1]
        else:
            exchange, routing_key = self._send_target(destination, headers)
        props = headers_to_properties(headers)
        reply_to = props.reply_to
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            # RabbitMQ: a temp queue named in reply-to is created (and subscribed) on this
            # connection; the header is rewritten so that replies route back to it.
            props.reply_to = "/reply-queue/" + self._temp_queue(reply_to[12:])
        self.grant.check_publish(exchange, routing_key)
        message = Message(exchange, routing_key, frame.body, props)
        self.conn.mark_publishing()
        tx = headers.get("transaction")
        if tx is not None:
            self._transaction(tx).append(lambda: self._publish(message))
            return
        wait = self.vhost.publish(exchange, routing_key, message).wait
        receipt = headers.get("receipt")
        if receipt is not None and wait is not None:
            # The RECEIPT of a persistent SEND waits for its fsync; the generic receipt code in
            # data_received must not send a second one.
            del headers["receipt"]
            self._receipt(receipt, wait)

    def _publish(self, message: Message) -> Any:
        result = self.vhost.publish(message.exchange, message.routing_key, message)
        return result.wait

    def _send_target(self, destination: str, headers: dict) -> tuple[str, str]:
        cached = self._send_targets.get(destination)
        if cached is not None:
            exchange, routing_key, declare = cached
            if not declare or routing_key in self.vhost.queues:
                return exchange, routing_key
        kind, name, key = parse_destination(destination)
        if kind == QUEUE:
            if name not in self.vhost.queues:
                self._declare_queue(name, headers, on_send=True)
            target = ("", name, True)
        elif kind == TOPIC:
            target = ("amq.topic", name, False)
        elif kind == EXCHANGE:
            target = (name, key, False)
        elif kind == AMQ_QUEUE or kind == REPLY_QUEUE:
            target = ("", name, False)
        else:
            return "", self._temp_queue(name)  # TEMP_QUEUE: checked every time
        if len(self._send_targets) >= 1024:  # bounded
            self._send_targets.clear()
        self._send_targets[destination] = target
        return target[0], target[1]

    def _declare_queue(self, name: str, headers: dict, on_send: bool = False) -> None:
        """/queue/<name>: a durable shared queue (RabbitMQ); ``durable``/``auto-delete``/
        ``exclusive`` headers and ``x-`` queue arguments as RabbitMQ reads them."""
        self.grant.configure("queue", name)
        self.vhost.declare_queue(
            name, durable=headers.get("durable", "true").lower() != "false",
            auto_delete=headers.get("auto-delete") == "true",
            exclusive=headers.get("exclusive") == "true",
            arguments=queue_arguments(headers, on_send), owner=self)

    def _temp_queue(self, label: str) -> str:
        name = self.temp_queues.get(label)
        if name is not None and name in self.vhost.queues:
            return name
        name = self.vhost.declare_queue("", exclusive=True, auto_delete=True, owner=self).name
        self.temp_queues[label] = name
        destination = "/temp-queue/" + label
        if destination not in self.subscriptions:
            self._start_subscription(destination, destination, name, "auto", 0, {}, False,
                                     False, fixed_destination=destination)
        return name

    # ================================================================ transactions
    def _transaction(self, tx: str) -> list:
        actions = self.transactions.get(tx)
        if actions is None:
            raise StompError("Bad transaction", f"Invalid transaction identifier: {tx}")
        return actions

    def on_begin(self, frame: Frame) -> None:
        tx = required(frame, "transaction")
        if tx in self.transactions:
            raise StompError("Bad transaction", f"Transaction {tx} already started")
        self.transactions[tx] = []

    def on_commit(self, frame: Frame) -> None:
        tx = required(frame, "transaction")
        actions = self._transaction(tx)
        del self.transactions[tx]
        waits = []
        for action in actions:
            wait = action()  # a SEND returns its durability awaitable (or None)
            if wait is not None:
                waits.append(wait)
        receipt = frame.headers.get("receipt")
        if receipt is not None and waits:
            # The COMMIT's RECEIPT says every committed persistent SEND is on disk.
            del frame.headers["receipt"]
            self._receipt(receipt, asyncio.gather(*waits))

    def on_abort(self, frame: Frame) -> None:
        tx = required(frame, "transaction")
        self._transaction(tx)
        del self.transactions[tx]
