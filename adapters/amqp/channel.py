"""An AMQP channel: its consumers, unacked deliveries, publisher confirms and tx state.

Channel states: absent --Channel.Open--> open --Channel.Close--> absent;
open --channel exception--> (send Channel.Close) closing --Channel.CloseOk--> absent.
While closing, every frame on that channel is discarded [AMQP 0-9-1 4.2.2, channel.close].
The session (``session.py``) owns the channels and routes methods to them.
"""
from __future__ import annotations

import struct
from typing import Any

from manifold.broker.consumer import Consumer, Delivery
from manifold.broker.engine.confirms import PublisherConfirms
from manifold.broker.engine.credit import Window, resume
from manifold.broker.engine.in_order import InOrderReplies
from manifold.broker.engine.unacked import Unacked, end_consumers, settle_all
from manifold.broker.errors import PreconditionFailed
from manifold.broker.message import Message

from . import codec, fields, replies
from .fields import shortstr

# Write out buffered frames once this much has piled up within one batch.
FLUSH_BYTES = 256 * 1024

_pack_tag = codec.struct.Struct(">QB").pack
Encoded = codec.Encoded


_STREAM_OFFSET_ENTRY = fields.shortstr_lossy("x-stream-offset") + b"l"
_i64 = struct.Struct(">q")


def _stream_header(message: Message, header: bytes, offset: int) -> bytes:
    # Stream deliveries carry their position as the x-stream-offset header (RabbitMQ streams),
    # as a signed 64-bit 'l', spliced into the message's cached header (one per delivery).
    headers = message.properties.headers
    if headers and "x-stream-offset" in headers:  # (published with one: ours replaces it)
        props = message.properties.copy()
        props.headers = {**headers, "x-stream-offset": offset}
        return fields.content_header_payload(props, len(message.body))
    return fields.with_header_entry(header, _STREAM_OFFSET_ENTRY + _i64.pack(offset))


class AMQPConsumer(Consumer):
    def __init__(self, channel: "Channel", tag: str, *, no_ack: bool, prefetch: int,
                 exclusive: bool, arguments: dict, owner: Any):
        super().__init__(tag, no_ack=no_ack, prefetch=prefetch, exclusive=exclusive,
                         arguments=arguments, owner=owner)
        self.channel = channel
        self.ctag = shortstr(tag)
        # Basic.Deliver frame start for this consumer, by length of exchange + routing key
        self.prefixes: dict[int, bytes] = {}

    def has_credit(self) -> bool:
        if self.prefetch and self.in_flight >= self.prefetch:
            return False
        ch = self.channel
        window = ch.window
        if window.limit and not self.no_ack and not window.open(len(ch.unacked)):
            return False
        return ch.active and ch.session.conn.writable

    def deliver(self, delivery: Delivery) -> None:
        self.channel.deliver(self, delivery)

    def cancelled(self, reason: str) -> None:
        self.channel.server_cancel(self)

    def delivery_timed_out(self, delivery: Delivery) -> None:
        self.channel.delivery_timed_out(delivery)


class Channel:
    def __init__(self, session: Any, number: int):
        self.session = session
        self.number = number
        self.closing = False
        self.closed = False
        self.active = True  # Channel.Flow
        self.consumers: dict[str, AMQPConsumer] = {}
        self.unacked = Unacked()
        self.next_tag = 0
        self.prefetch = 0         # Basic.Qos global=false: for consumers created afterwards
        #: Basic.Qos global=true: one prefetch window shared by the channel's consumers
        self.window = Window()
        self.last_queue = ""      # [AMQP 0-9-1 queue.bind/consume/get] empty name = last declared
        #: publisher confirms, once Confirm.Select put the channel in confirm mode
        self.confirms: PublisherConfirms | None = None
        # transactions: None, or held publishes and settlements
        self.tx: list | None = None
        self.tx_settles: list = []
        #: Tx.Commit-Ok frames, each after the writes of its transaction, in commit order
        self.commits: InOrderReplies | None = None
        # direct reply-to: this channel's token in the server's registry, if consuming it
        self.reply_token: str | None = None

    # ------------------------------------------------------------------ deliveries out
    def deliver(self, consumer: AMQPConsumer, delivery: Delivery) -> None:
        self.next_tag = tag = self.next_tag + 1
        if not consumer.no_ack:
            self.unacked.add(tag, delivery)
        session = self.session
        output = session.output
        message = delivery.message
        encoded = message.encoded
        if type(encoded) is not Encoded:
            encoded = message.encoded = Encoded.of(message)
        body = message.body
        size = len(body)
        if delivery.offset is None and size <= session.body_chunk:
            # Hot path: per-consumer prefix, the tag, and the per-header tail (exchange,
            # routing key, content header frame, body frame header), shared by every delivery
            # of equal-headed messages on the same channel number; then the body.
            exrk_len = len(encoded.exchange_and_key)
            prefix = consumer.prefixes.get(exrk_len)
            if prefix is None:
                prefix = consumer.prefixes[exrk_len] = codec.deliver_prefix(
                    self.number, consumer.ctag, exrk_len)
            output.chunks.append(b"".join((prefix, _pack_tag(tag, delivery.redelivered),
                                         encoded.tail_for(self.number, size), body, b"\xce")))
        else:
            header = encoded.header
            if delivery.offset is not None:
                header = _stream_header(message, header, delivery.offset)
            codec.deliver_frames(self.number, consumer.ctag, tag, delivery.redelivered,
                                 encoded.exchange_and_key, header, body, session.frame_max,
                                 output.chunks)
        # Past FLUSH_BYTES this writes at once, which may pause us via conn.writable: that is
        # the backpressure.
        output.added(size + 64)

    def server_cancel(self, consumer: AMQPConsumer) -> None:
        """The queue went away under a consumer: Basic.Cancel to clients that support it."""
        if self.consumers.get(consumer.tag) is not consumer:
            return
        del self.consumers[consumer.tag]
        session = self.session
        if session.cancel_notify and not self.closing:
            session.send(replies.basic_cancel(self.number, consumer.ctag))

    def delivery_timed_out(self, delivery: Delivery) -> None:
        self.unacked.forget(delivery)
        if not self.closing:
            timeout = getattr(delivery.queue, "consumer_timeout_ms", 0)
            self.session.channel_error(
                self, 406, f"PRECONDITION_FAILED - delivery acknowledgement on channel "
                           f"{self.number} timed out. Timeout value used: {timeout} ms. This "
                           "timeout value can be configured, see consumers doc guide to learn more",
                0, 0)

    # ------------------------------------------------------------------ settlement
    def take(self, tag: int, multiple: bool) -> list[tuple[int, Delivery]]:
        """Remove and return the deliveries an ack/nack names (RabbitMQ collect_acks rules:
        the tag must be outstanding, except 0 with multiple = everything)."""
        unacked = self.unacked
        if multiple:
            if tag == 0:
                return unacked.take_all()
            if tag not in unacked:
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            return unacked.take_upto(tag)
        delivery = unacked.take(tag)
        if delivery is None:
            raise PreconditionFailed(f"unknown delivery tag {tag}")
        return [(tag, delivery)]

    def settle(self, pairs: list[tuple[int, Delivery]], ack: bool, requeue: bool) -> None:
        if self.tx is not None:
            self.tx_settles.append((pairs, ack, requeue))
            return
        if len(pairs) == 1:
            delivery = pairs[0][1]
            delivery.queue.settle(delivery, ack, requeue and not ack)
        else:
            settle_all([d for _, d in pairs], ack, requeue and not ack)
        window = self.window
        if window.limit:
            held = len(self.unacked)
            if window.freed(held + len(pairs), held):
                self.resume_consumers()

    def resume_consumers(self) -> None:
        resume(self.consumers.values())

    # ------------------------------------------------------------------ confirms
    def select_confirms(self) -> None:
        """Confirm.Select: from now on every publish is confirmed (broker/engine/confirms.py:
        in order, cumulative acks folded into one ``multiple=true`` ack per write)."""
        if self.confirms is None:
            self.confirms = PublisherConfirms(self._confirm_ack, self._confirm_nack,
                                              self._confirms_due)

    def _confirm_ack(self, seq: int, multiple: bool) -> None:
        if multiple:
            # from flush_confirms, which runs as the session's output is written
            self.session.output.chunks.append(replies.basic_ack(self.number, seq, True))
        elif not self.closing and not self.closed:
            self.session.send(replies.basic_ack(self.number, seq, False))

    def _confirm_nack(self, seq: int) -> None:
        if not self.closing and not self.closed:
            self.session.send(replies.basic_nack(self.number, seq))

    def _confirms_due(self, confirms: PublisherConfirms) -> None:
        if self.closing or self.closed:
            return
        session = self.session
        session.confirm_dirty.add(self)
        session.output.soon()

    def flush_confirms(self) -> None:
        if self.confirms is not None:
            self.confirms.flush()

    def commit_ok(self, wait: Any) -> None:
        """Tx.Commit-Ok once ``wait`` (the transaction's writes, or None) is done, after the
        Commit-Oks before it: it is a promise like a confirm."""
        if self.commits is None:
            self.commits = InOrderReplies(self._release_commit_ok)
        self.commits.add(None, wait)

    def _release_commit_ok(self, _reply: Any, error: Any) -> bool:
        if self.closing or self.closed:
            return False
        if error is not None:
            # No Commit-Ok for what is not on disk: the channel ends, the client knows the
            # transaction's outcome is unknown (RabbitMQ closes the channel the same way).
            self.session.channel_error(self, 541, "INTERNAL_ERROR - transaction not stored: "
                                       f"{error}", 90, 20)
            return False
        self.session.send(replies.tx_commit_ok(self.number))
        return True

    # ------------------------------------------------------------------ teardown
    def cleanup(self) -> None:
        """Channel closed: cancel its consumers, return its unacked deliveries."""
        consumers = self.take_consumers()
        held = self.take_held()
        if self.session.vhost is not None:
            end_consumers(self.session.vhost, consumers, held)

    def take_consumers(self) -> list[AMQPConsumer]:
        """The channel's consumers, which it no longer has (for ``end_consumers``)."""
        consumers = list(self.consumers.values())
        self.consumers.clear()
        if self.reply_token is not None:
            self.session.server.reply_to.pop(self.reply_token, None)
            self.reply_token = None
        return consumers

    def take_held(self) -> list[Delivery]:
        """The unacked (and tx-held) deliveries, which the channel no longer holds."""
        deliveries = [d for _, d in self.unacked.take_all()]
        for held, _ack, _requeue in self.tx_settles:
            deliveries.extend(d for _, d in held)
        self.tx_settles = []
        self.tx = [] if self.tx is not None else None
        self.session.decoder.reset_channel(self.number)
        return deliveries
