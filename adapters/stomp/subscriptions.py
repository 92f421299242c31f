"""SUBSCRIBE / UNSUBSCRIBE, MESSAGE frames (the delivery hot path) and ACK / NACK.

Unsettled deliveries are kept in the session's ``broker.engine.unacked.Ledger``, one scope per
subscription (``client`` acks are cumulative per subscription); a subscription that ends
returns them to their queues with ``end_consumers``. ``SubscriptionMethods`` is one part of
``StompSession`` (session.py).
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any

from manifold.broker.consumer import Consumer, Delivery
from manifold.broker.engine.unacked import end_consumers

from .codec import Frame, escape
from .errors import ACK_MODES, CONNECTED, StompError, required
from .mapping import (AMQ_QUEUE, EXCHANGE, QUEUE, TEMP_QUEUE, TOPIC, DestinationError,
                      destination_of, parse_destination, properties_to_headers,
                      queue_arguments, stream_offset)


class Subscription(Consumer):
    """One SUBSCRIBE: a core consumer on the subscription's queue."""

    def __init__(self, session: Any, sub_id: str, destination: str, queue: str,
                 ack_mode: str, prefetch: int, arguments: dict, exclusive: bool,
                 durable: bool, fixed_destination: str | None = None):
        super().__init__(f"stomp-{session.session_id}-{sub_id}", no_ack=(ack_mode == "auto"),
                         prefetch=prefetch, exclusive=exclusive, arguments=arguments,
                         owner=session)
        self.session = session
        self.id = sub_id
        self.destination = destination
        self.queue_name = queue
        self.ack_mode = ack_mode
        #: an ACK/NACK covers every earlier message too (the session's Ledger reads this)
        self.cumulative = ack_mode == "client"
        self.durable = durable
        #: MESSAGE ``destination`` for every delivery (temp queues), else derived per message
        self.fixed_destination = fixed_destination
        self.active = True
        # Pre-encoded start of every MESSAGE frame of this subscription (the version is fixed
        # once CONNECTED), and the escaped destination header per (exchange, routing key).
        version = session.version
        self.head = ("MESSAGE\nsubscription:" + escape(sub_id, version) +
                     "\ndestination:").encode()
        self.fixed_destination_bytes = (None if fixed_destination is None else
                                        escape(fixed_destination, version).encode())
        self.destinations: dict[tuple[str, str], bytes] = {}

    def has_credit(self) -> bool:
        session = self.session
        return ((self.prefetch == 0 or self.in_flight < self.prefetch) and
                session.conn is not None and session.conn.writable and session.state == CONNECTED)

    def deliver(self, delivery: Delivery) -> None:
        self.session.deliver(self, delivery)

    def cancelled(self, reason: str) -> None:
        self.session.server_cancelled(self, reason)

    def delivery_timed_out(self, delivery: Delivery) -> None:
        # The core took it back (consumer timeout); a late ACK for it must find nothing.
        self.session.held.forget(delivery, self)


class SubscriptionMethods:
    """SUBSCRIBE, MESSAGE, UNSUBSCRIBE, ACK and NACK."""

    # ================================================================ SUBSCRIBE
    def on_subscribe(self, frame: Frame) -> None:
        headers = frame.headers
        destination = required(frame, "destination")
        # [STOMP 1.1+] id is required; 1.0 clients may omit it: RabbitMQ then uses the destination.
        sub_id = headers.get("id", destination)
        if sub_id in self.subscriptions:
            raise StompError("Duplicated subscription identifier",
                             f"A subscription identified by '{sub_id}' already exists.")
        ack_mode = headers.get("ack", "auto")
        if ack_mode not in ACK_MODES:
            raise StompError("Invalid ack header",
                             f"ack must be one of {', '.join(ACK_MODES)}; got {ack_mode!r}")
        prefetch = 0
        if "prefetch-count" in headers:
            try:
                prefetch = int(headers["prefetch-count"])
                if prefetch < 0:
                    raise ValueError
            except ValueError:
                raise StompError("Invalid prefetch-count",
                                 f"bad prefetch-count {headers['prefetch-count']!r}") from None
        arguments: dict[str, Any] = {}
        if "x-stream-offset" in headers:
            arguments["x-stream-offset"] = stream_offset(headers["x-stream-offset"])
        if "x-stream-reference" in headers:
            arguments["x-stream-reference"] = headers["x-stream-reference"]
        exclusive = headers.get("exclusive") == "true"
        kind, name, key = parse_destination(destination)
        vhost = self.vhost
        durable = False
        fixed = None
        if kind == QUEUE:
            args = queue_arguments(headers)
            if name not in vhost.queues or args:
                self._declare_queue(name, headers)
            self.grant.read("queue", name)
            queue = name
        elif kind == AMQ_QUEUE:
            vhost.declare_queue(name, passive=True, owner=self)  # never declared: 404 if absent
            self.grant.read("queue", name)
            queue = name
        elif kind in (TOPIC, EXCHANGE):
            exchange = "amq.topic" if kind == TOPIC else name
            binding_key = name if kind == TOPIC else key
            vhost.declare_exchange(exchange, passive=True)
            # Read on the exchange and topic read only: never rights on the subscription queue
            # made here for the client (unlike RabbitMQ, which asks configure/write on it).
            self.grant.read("exchange", exchange)
            self.grant.check_topic("read", exchange, binding_key)
            durable = (headers.get("durable", headers.get("persistent", "false")).lower() == "true"
                       and headers.get("auto-delete", "false").lower() != "true")
            queue_name = headers.get("x-queue-name", "")
            args = queue_arguments(headers)
            if durable:
                if "id" not in headers:
                    raise StompError("Missing Header",
                                     "Header 'id' is required for durable subscriptions")
                if not queue_name:
                    # RabbitMQ derives it from (destination, id) the same way: stable across
                    # reconnects, bounded in length.
                    digest = hashlib.md5(f"{destination}\x00{sub_id}".encode()).digest()
                    queue_name = "stomp-subscription-" + base64.urlsafe_b64encode(
                        digest).decode().rstrip("=")
                queue = vhost.declare_queue(queue_name, durable=True, arguments=args).name
            else:
                queue = vhost.declare_queue(queue_name, exclusive=True, auto_delete=True,
                                            arguments=args, owner=self).name
            vhost.bind_queue(queue, exchange, binding_key, None, owner=self)
        elif kind == TEMP_QUEUE:
            queue = self.temp_queues.get(name) or ""
            if queue not in vhost.queues:
                queue = vhost.declare_queue("", exclusive=True, auto_delete=True,
                                            owner=self).name
                self.temp_queues[name] = queue
            fixed = destination
        else:
            raise DestinationError(f"'{destination}' cannot be subscribed to; /reply-queue/ "
                                   "destinations are for SEND only")
        self._start_subscription(sub_id, destination, queue, ack_mode, prefetch, arguments,
                                 exclusive, durable, fixed)

    def _start_subscription(self, sub_id: str, destination: str, queue: str, ack_mode: str,
                            prefetch: int, arguments: dict, exclusive: bool, durable: bool,
                            fixed_destination: str | None = None) -> Subscription:
        sub = Subscription(self, sub_id, destination, queue, ack_mode, prefetch, arguments,
                           exclusive, durable, fixed_destination)
        self.subscriptions[sub_id] = sub
        try:
            self.vhost.consume(queue, sub, owner=self)
        except BaseException:
            self.subscriptions.pop(sub_id, None)
            raise
        return sub

    # ================================================================ MESSAGE (hot path)
    def deliver(self, sub: Subscription, delivery: Delivery) -> None:
        """One MESSAGE frame, assembled from pre-encoded pieces (the subscription's head, the
        escaped destination per routing key, the property headers per message)."""
        tag = self._next_tag
        self._next_tag = tag + 1
        if not sub.no_ack:
            self.held.add(tag, delivery, sub)
        message = delivery.message
        destination = sub.fixed_destination_bytes
        if destination is None:
            key = (message.exchange, message.routing_key)
            destination = sub.destinations.get(key)
            if destination is None:
                destination = escape(destination_of(*key), self.version).encode()
                if len(sub.destinations) >= 1024:  # bounded: topic keys can be many
                    sub.destinations.clear()
                sub.destinations[key] = destination
        props = message.properties
        cache = self._prop_cache
        if cache is not None and cache[0] is props:
            block = cache[1]
        else:
            version = self.version
            block = "".join(["\n" + escape(k, version) + ":" + escape(v, version)
                             for k, v in properties_to_headers(props)]).encode()
            self._prop_cache = (props, block)
        body = message.body
        # [STOMP 1.2 "MESSAGE"]: ack header (= message-id here) in 1.2 only.
        ids = (b"\nmessage-id:%d\nack:%d" % (tag, tag) if self.version == "1.2"
               else b"\nmessage-id:%d" % tag)
        output = self.output
        out = output.chunks
        out += (sub.head, destination, ids,
                b"\nredelivered:true" if delivery.redelivered else b"\nredelivered:false")
        if delivery.offset is not None:
            out.append(b"\nx-stream-offset:%d" % delivery.offset)
        out += (block, b"\ncontent-length:%d\n\n" % len(body), body, b"\x00")
        output.added(len(body) + len(block) + 128)

    # ================================================================ UNSUBSCRIBE
    def on_unsubscribe(self, frame: Frame) -> None:
        headers = frame.headers
        sub_id = headers.get("id")
        if sub_id is None:
            if self.version != "1.0":
                required(frame, "id")
            sub_id = required(frame, "destination")
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            return  # already gone (e.g. cancelled by the server): nothing to do
        self._end_subscription(sub)
        # RabbitMQ: UNSUBSCRIBE with persistent:true (or durable:true) ends a durable
        # subscription for good by deleting its queue.
        if sub.durable and headers.get("durable", headers.get("persistent", "")) == "true":
            self.vhost.delete_queue(sub.queue_name)

    def _end_subscription(self, sub: Subscription) -> None:
        sub.active = False
        # Unacked messages of an ended subscription go back to their queue.
        end_consumers(self.vhost, (sub,), [d for _, d in self.held.take_scope(sub)])

    def server_cancelled(self, sub: Subscription, reason: str) -> None:
        """The queue went away: tell the client as RabbitMQ does, keep the connection."""
        if self.subscriptions.get(sub.id) is not sub:
            return
        del self.subscriptions[sub.id]
        sub.active = False
        self.held.take_scope(sub)  # gone with the queue
        if self.state == CONNECTED:
            body = reason.encode()
            self.write_frame(Frame("ERROR", {
                "message": "Server cancelled subscription", "subscription": sub.id,
                "content-type": "text/plain", "content-length": str(len(body))}, body))

    # ================================================================ ACK / NACK
    def on_ack(self, frame: Frame) -> None:
        self._ack_or_nack(frame, True)

    def on_nack(self, frame: Frame) -> None:
        self._ack_or_nack(frame, False)

    def _ack_or_nack(self, frame: Frame, ack: bool) -> None:
        headers = frame.headers
        # [STOMP 1.2 "ACK"]: by the MESSAGE's ack header, sent back as id; 1.0/1.1 by message-id.
        ack_id = required(frame, "id" if self.version == "1.2" else "message-id")
        requeue = headers.get("requeue", "true").lower() != "false"
        tx = headers.get("transaction")
        if tx is not None:
            self._transaction(tx).append(lambda: self._settle(ack_id, ack, requeue))
        else:
            self._settle(ack_id, ack, requeue)

    def _settle(self, ack_id: str, ack: bool, requeue: bool) -> None:
        try:
            tag = int(ack_id)
        except ValueError:
            raise StompError("Invalid message-id", f"unknown message id {ack_id!r}") from None
        # client mode: the ACK/NACK covers every earlier message of the subscription
        # [STOMP 1.2 "SUBSCRIBE ack Header"] (Subscription.cumulative). A tag not held was
        # settled already (a cumulative ACK covered it) or timed out: nothing to do.
        for _, delivery in self.held.take_acked(tag):
            if ack:
                delivery.ack()
            else:
                delivery.reject(requeue)
