"""A vhost on a hand-driven clock, and a consumer that records what it was given."""
from __future__ import annotations

from manifold.broker.clock import ManualClock
from manifold.broker.consumer import Consumer
from manifold.broker.message import Message, Properties
from manifold.broker.vhost import VirtualHost


class Recorder(Consumer):
    def __init__(self, tag: str = "c", **kw):
        super().__init__(tag, **kw)
        self.deliveries = []
        self.cancel_reasons = []
        self.timed_out = []

    def deliver(self, delivery) -> None:
        self.deliveries.append(delivery)

    def cancelled(self, reason: str) -> None:
        self.cancel_reasons.append(reason)

    def delivery_timed_out(self, delivery) -> None:
        self.timed_out.append(delivery)

    def bodies(self) -> list[bytes]:
        return [d.message.body for d in self.deliveries]

    def ack_all(self) -> None:
        for d in self.deliveries:
            d.ack()


def make_vhost(**kw) -> tuple[VirtualHost, ManualClock]:
    clock = ManualClock()
    return VirtualHost("/", clock=clock, **kw), clock


def msg(body: bytes | str, routing_key: str = "", exchange: str = "", **props) -> Message:
    if isinstance(body, str):
        body = body.encode()
    return Message(exchange, routing_key, body, Properties(**props))


def send(vhost: VirtualHost, exchange: str, routing_key: str, body, **props):
    return vhost.publish(exchange, routing_key, msg(body, routing_key, exchange, **props))
