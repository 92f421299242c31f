"""Channel, Exchange and Queue class methods: channel close and flow, declaring, binding,
purging and deleting exchanges and queues, each a thin call into the vhost.

``EntityMethods`` is one part of ``AMQPSession`` (see session.py).
"""
from __future__ import annotations

from typing import Any

from manifold.broker.errors import NotFound

from . import replies
from .channel import Channel


class EntityMethods:
    """Channel.*, Exchange.* and Queue.* handlers (``ch`` is the open channel)."""

    # ---------------------------------------------------------------- channel class
    def _channel_close(self, ch: Channel, m: Any) -> None:
        ch.flush_confirms()
        ch.closed = True
        ch.cleanup()
        del self.channels[ch.number]
        self.send(replies.channel_close_ok(ch.number))

    def _channel_close_ok(self, ch: Channel, m: Any) -> None:
        pass  # we never sent Channel.Close on an open channel

    def _channel_flow(self, ch: Channel, m: Any) -> None:
        ch.active = bool(m.active)
        self.send(replies.channel_flow_ok(ch.number, ch.active))
        if ch.active:
            ch.resume_consumers()

    def _channel_flow_ok(self, ch: Channel, m: Any) -> None:
        pass

    # ---------------------------------------------------------------- exchange class
    def _exchange_declare(self, ch: Channel, m: Any) -> None:
        if not m.passive:  # a passive declare only looks (RabbitMQ checks nothing)
            self.grant.configure("exchange", m.exchange)
        self.vhost.declare_exchange(m.exchange, m.exchange_type or "direct", passive=m.passive,
                                    durable=m.durable, auto_delete=m.auto_delete,
                                    internal=m.internal, arguments=m.arguments or {})
        if not m.nowait:
            self.send(replies.exchange_declare_ok(ch.number))

    def _exchange_delete(self, ch: Channel, m: Any) -> None:
        self.grant.configure("exchange", m.exchange)
        self.vhost.delete_exchange(m.exchange, if_unused=m.if_unused)
        if not m.nowait:
            self.send(replies.exchange_delete_ok(ch.number))

    def _exchange_bind(self, ch: Channel, m: Any) -> None:
        self._check_binding("exchange", m.destination, m.source, m.routing_key or "")
        self.vhost.bind_exchange(m.destination, m.source, m.routing_key or "", m.arguments or {})
        if not m.nowait:
            self.send(replies.exchange_bind_ok(ch.number))

    def _exchange_unbind(self, ch: Channel, m: Any) -> None:
        self._check_binding("exchange", m.destination, m.source, m.routing_key or "")
        self.vhost.unbind_exchange(m.destination, m.source, m.routing_key or "",
                                   m.arguments or {})
        if not m.nowait:
            self.send(replies.exchange_unbind_ok(ch.number))

    def _check_binding(self, kind: str, destination: str, source: str, key: str) -> None:
        """(Un)binding needs write on the destination, read on the source exchange and topic
        read on the binding key (RabbitMQ)."""
        grant = self.grant
        grant.write(kind, destination)
        grant.read("exchange", source)
        grant.check_topic("read", source, key)

    # ---------------------------------------------------------------- queue class
    def _queue_name(self, ch: Channel, name: str) -> str:
        if name:
            return name
        if not ch.last_queue:
            raise NotFound("no previously declared queue")
        return ch.last_queue

    def _queue_declare(self, ch: Channel, m: Any) -> None:
        name = m.queue or ""
        if m.passive and not name:
            name = self._queue_name(ch, name)
        if not m.passive:
            # A server-named queue is checked as RabbitMQ's amq.gen-* names are.
            self.grant.configure("queue", name or "amq.gen-")
        info = self.vhost.declare_queue(name, passive=m.passive, durable=m.durable,
                                        exclusive=m.exclusive, auto_delete=m.auto_delete,
                                        arguments=m.arguments or {}, owner=self)
        ch.last_queue = info.name
        if not m.nowait:
            self.send(replies.queue_declare_ok(ch.number, info.name, info.message_count,
                                                     info.consumer_count))

    def _queue_bind(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        self._check_binding("queue", queue, m.exchange, m.routing_key or "")
        self.vhost.bind_queue(queue, m.exchange, m.routing_key or "", m.arguments or {},
                              owner=self)
        if not m.nowait:
            self.send(replies.queue_bind_ok(ch.number))

    def _queue_unbind(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        self._check_binding("queue", queue, m.exchange, m.routing_key or "")
        self.vhost.unbind_queue(queue, m.exchange, m.routing_key or "", m.arguments or {},
                                owner=self)
        self.send(replies.queue_unbind_ok(ch.number))

    def _queue_purge(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        self.grant.read("queue", queue)
        count = self.vhost.purge_queue(queue, owner=self)
        if not m.nowait:
            self.send(replies.queue_purge_ok(ch.number, count))

    def _queue_delete(self, ch: Channel, m: Any) -> None:
        queue = self._queue_name(ch, m.queue)
        self.grant.configure("queue", queue)
        count = self.vhost.delete_queue(queue, if_unused=m.if_unused,
                                        if_empty=m.if_empty, owner=self)
        if not m.nowait:
            self.send(replies.queue_delete_ok(ch.number, count))
