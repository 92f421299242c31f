"""Basic class methods: Qos, Consume, Cancel, Get, Ack / Nack / Reject, Recover, and the
publish fast path with RabbitMQ's direct reply-to and Basic.Return.

``BasicMethods`` is one part of ``AMQPSession`` (see session.py).
"""
from __future__ import annotations

import base64
import os
from typing import Any

from manifold.broker.errors import AccessRefused, BrokerError, NotFound, PreconditionFailed
from manifold.broker.message import Message
from manifold.broker.vhost import PublishResult

from . import codec, replies
from .channel import AMQPConsumer, Channel, Encoded
from .codec import Ack, Publish
from .connection import OPEN
from .errors import AMQPError

# RabbitMQ direct reply-to: a pseudo-queue consumed in no-ack mode; replies skip the core.
REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_PREFIX = REPLY_TO + "."


class _DirectDelivery:
    """A reply delivered straight to a direct reply-to consumer (no queue, nothing to settle)."""
    __slots__ = ("message",)
    redelivered = False
    offset = None
    settled = True

    def __init__(self, message: Message):
        self.message = message


def _gen_ctag() -> str:
    return "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class BasicMethods:
    """Basic.* handlers, the publish and ack fast paths, and direct reply-to."""

    # ---------------------------------------------------------------- basic class
    def _basic_qos(self, ch: Channel, m: Any) -> None:
        if m.prefetch_size:
            raise AMQPError(540, f"NOT_IMPLEMENTED - prefetch_size!=0 ({m.prefetch_size})", True)
        if m.global_:
            raised = ch.window.set_limit(m.prefetch_count)
        else:
            raised = False
            ch.prefetch = m.prefetch_count
        self.send(replies.basic_qos_ok(ch.number))
        if raised:
            ch.resume_consumers()

    def _basic_consume(self, ch: Channel, m: Any) -> None:
        if m.queue == REPLY_TO:
            return self._consume_reply_to(ch, m)
        queue = self._queue_name(ch, m.queue)
        tag = m.consumer_tag or _gen_ctag()
        if tag in ch.consumers:
            raise AMQPError(530, f"NOT_ALLOWED - attempt to reuse consumer tag '{tag}'", True)
        self.grant.read("queue", queue)
        target = self.vhost.queue(queue, owner=self)  # 404, or 405 for another's exclusive
        if target.consumers and (m.exclusive or any(c.exclusive for c in target.consumers)):
            # RabbitMQ reports an exclusive-consumer conflict as ACCESS_REFUSED, not 405
            raise AccessRefused(f"queue '{queue}' in vhost '{self.vhost.name}' in exclusive use")
        consumer = AMQPConsumer(ch, tag, no_ack=bool(m.no_ack),
                                prefetch=0 if m.no_ack else ch.prefetch,
                                exclusive=bool(m.exclusive), arguments=m.arguments or {},
                                owner=self)
        # ConsumeOk must precede the first delivery, and consume() may deliver at once.
        mark = len(self.output.chunks)
        if not m.nowait:
            self.send(replies.basic_consume_ok(ch.number, tag))
        ch.consumers[tag] = consumer
        try:
            self.vhost.consume(queue, consumer, owner=self)
        except BaseException:
            ch.consumers.pop(tag, None)
            del self.output.chunks[mark:]
            raise

    def _consume_reply_to(self, ch: Channel, m: Any) -> None:
        """RabbitMQ direct reply-to: replies to ``reply_to = amq.rabbitmq.reply-to`` come back
        to this consumer without a queue."""
        if not m.no_ack:
            raise PreconditionFailed("reply consumer cannot acknowledge")
        if ch.reply_token is not None:
            raise PreconditionFailed("reply consumer already set")
        tag = m.consumer_tag or _gen_ctag()
        if tag in ch.consumers:
            raise AMQPError(530, f"NOT_ALLOWED - attempt to reuse consumer tag '{tag}'", True)
        consumer = AMQPConsumer(ch, tag, no_ack=True, prefetch=0, exclusive=True,
                                arguments={}, owner=self)
        ch.consumers[tag] = consumer
        ch.reply_token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.server.reply_to[ch.reply_token] = consumer
        if not m.nowait:
            self.send(replies.basic_consume_ok(ch.number, tag))

    def _basic_cancel(self, ch: Channel, m: Any) -> None:
        consumer = ch.consumers.pop(m.consumer_tag, None)
        if consumer is not None and consumer.queue is None and ch.reply_token is not None and \
                self.server.reply_to.get(ch.reply_token) is consumer:
            del self.server.reply_to[ch.reply_token]
            ch.reply_token = None
        elif consumer is not None:
            self.vhost.cancel(consumer)
        if not m.nowait:
            self.send(replies.basic_cancel_ok(ch.number, m.consumer_tag))

    def _basic_cancel_ok(self, ch: Channel, m: Any) -> None:
        pass  # a client's answer to our server-sent Basic.Cancel

    def _basic_get(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        self.grant.read("queue", queue)
        delivery, remaining = self.vhost.get(queue, no_ack=bool(m.no_ack), owner=self)
        if delivery is None:
            self.send(replies.basic_get_empty(ch.number))
            return
        ch.next_tag = tag = ch.next_tag + 1
        if not m.no_ack:
            ch.unacked.add(tag, delivery)
        message = delivery.message
        encoded = message.encoded
        if type(encoded) is not Encoded:
            encoded = message.encoded = Encoded.of(message)
        self.send(replies.basic_get_ok(ch.number, tag, delivery.redelivered,
                                             encoded.exchange_and_key, remaining))
        codec.content_frames(ch.number, encoded.header, message.body, self.frame_max,
                             self.output.chunks)
        self.output.added(len(message.body))

    def _basic_reject(self, ch: Channel, m: Any) -> None:
        ch.settle(ch.take(m.delivery_tag, False), False, bool(m.requeue))

    def _basic_nack(self, ch: Channel, m: Any) -> None:
        ch.settle(ch.take(m.delivery_tag, bool(m.multiple)), False, bool(m.requeue))

    def _basic_ack(self, ch: Channel, m: Any) -> None:
        ch.settle(ch.take(m.delivery_tag, bool(m.multiple)), True, False)

    def on_ack(self, event: Ack) -> None:
        ch = self._channel_for(event.channel, 60, 80)
        if ch is None:
            return
        try:
            ch.settle(ch.take(event.delivery_tag, event.multiple), True, False)
        except (BrokerError, AMQPError) as exc:
            self.fail(ch, exc, 60, 80)

    def _basic_recover(self, ch: Channel, m: Any) -> None:
        self._recover(ch, m)
        self.send(replies.basic_recover_ok(ch.number))

    def _recover(self, ch: Channel, m: Any) -> None:
        if not m.requeue:
            # RabbitMQ: redelivery to the original consumer is not supported.
            raise AMQPError(540, "NOT_IMPLEMENTED - requeue=false", True)
        self.vhost.requeue([d for _, d in ch.unacked.take_all()])

    def _basic_recover_async(self, ch: Channel, m: Any) -> None:
        self._recover(ch, m)

    # ---------------------------------------------------------------- publish (hot path)
    def on_publish(self, ev: Publish) -> None:
        ch = self.channels.get(ev.channel)
        if ch is None or ch.closing or self.state != OPEN:
            ch = self._channel_for(ev.channel, 60, 40)
            if ch is None:
                return
        try:
            body = ev.body
            if body is None:
                raise PreconditionFailed(f"message size {ev.body_size} is larger than "
                                         f"configured max size {self.max_body}")
            if ev.immediate:
                raise AMQPError(540, "NOT_IMPLEMENTED - immediate=true", True)
            props = ev.properties
            if props.user_id is not None and props.user_id != self.user.name:
                raise PreconditionFailed(f"user_id property set to '{props.user_id}' but "
                                         f"authenticated user was '{self.user.name}'")
            # Publishing needs write on the exchange and topic write on the routing key; the
            # grant caches the decision, so this is one dict lookup per message.
            self.grant.check_publish(ev.exchange, ev.routing_key)
            message = Message(ev.exchange, ev.routing_key, body, props, ev.encoded)
            if props.reply_to == REPLY_TO:
                message = self._reply_to(ch, message)
            if ch.tx is not None:
                if ev.exchange not in self.vhost.exchanges:
                    raise NotFound(f"no exchange '{ev.exchange}' in vhost '{self.vhost.name}'")
                ch.tx.append((message, ev.mandatory))
                return
            self.conn.mark_publishing()
            if ev.exchange or not ev.routing_key.startswith(REPLY_PREFIX):
                result = self.vhost.publish(ev.exchange, ev.routing_key, message)
            else:
                result = self._reply(message)
        except (BrokerError, AMQPError) as exc:
            self.fail(ch, exc, 60, 40)
            return
        if not result.routed and ev.mandatory and not result.rejected:
            # a queue that refused it (overflow) was still a route: RabbitMQ nacks, no return
            self.basic_return(ch, message, 312, "NO_ROUTE")
        confirms = ch.confirms
        if confirms is not None:
            confirms.published(result.wait, result.rejected)

    def _reply_to(self, ch: Channel, message: Message) -> Message:
        """A request asking for a direct reply: name this channel's reply consumer in it."""
        if ch.reply_token is None:
            raise PreconditionFailed("fast reply consumer does not exist")
        props = message.properties.copy()
        props.reply_to = REPLY_PREFIX + ch.reply_token
        return Message(message.exchange, message.routing_key, message.body, props)

    def _reply(self, message: Message) -> Any:
        """A reply to ``amq.rabbitmq.reply-to.<token>``: straight to that consumer, if any."""
        consumer = self.server.reply_to.get(message.routing_key[len(REPLY_PREFIX):])
        if consumer is None or consumer.channel.closing or consumer.channel.closed:
            return PublishResult(0, False, None)
        consumer.deliver(_DirectDelivery(message))  # type: ignore[arg-type]
        return PublishResult(1, False, None)

    def basic_return(self, ch: Channel, message: Message, code: int, text: str) -> None:
        encoded = message.encoded
        if type(encoded) is not Encoded:
            encoded = message.encoded = Encoded.of(message)
        self.send(replies.basic_return(ch.number, code, text, encoded.exchange_and_key))
        codec.content_frames(ch.number, encoded.header, message.body, self.frame_max,
                             self.output.chunks)
        self.output.added(len(message.body))
