"""STOMP session state machine against a real core, with a fake connection (no sockets)."""
from __future__ import annotations

import asyncio

import pytest

from manifold.adapters.stomp import make_server
from manifold.adapters.stomp.codec import NEED_DATA, FrameCodec
from manifold.broker.core import Broker
from manifold.broker.vhost import PublishResult
from manifold.config.settings import Settings
from tests.fakes import FakeConnection


class Harness:
    def __init__(self, settings: Settings | None = None, version: str = "1.2") -> None:
        self.broker = Broker(settings or Settings())
        self.server = make_server(self.broker, self.broker.settings)
        self.session = self.server.new_session()
        self.conn = FakeConnection()
        self.session.connection_made(self.conn)
        self.codec = FrameCodec(version=version)
        self.version = version

    def send(self, data: bytes) -> None:
        self.session.data_received(data)

    def frames(self) -> list:
        self.codec.receive_data(bytes(self.conn.out))
        self.conn.out.clear()
        out = []
        while (event := self.codec.next_event()) is not NEED_DATA:
            out.append(event)
        return out

    async def next_frames(self, count: int, timeout_s: float = 30.0) -> list:
        """The frames the session writes, once there are ``count`` (output that waited for a
        future goes out on later turns of the loop: a fixed sleep could end first on a loaded
        machine), plus any that follow at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        got = self.frames()
        while len(got) < count and loop.time() < deadline:
            await asyncio.sleep(0.001)
            got += self.frames()
        await asyncio.sleep(0.01)
        return got + self.frames()

    def connect(self) -> None:
        self.send(f"CONNECT\naccept-version:{self.version}\n\n\x00".encode())
        assert [f.command for f in self.frames()] == ["CONNECTED"]

    @property
    def vhost(self):
        return self.broker.vhosts["/"]

    def hold_durability(self) -> asyncio.Future:
        """Make every publish wait for the returned future, as if its fsync had not happened."""
        pending: asyncio.Future = asyncio.get_running_loop().create_future()
        real_publish = self.vhost.publish

        def publish(exchange, key, message):
            result = real_publish(exchange, key, message)
            return PublishResult(result.routed, result.rejected, pending)

        self.vhost.publish = publish
        return pending


async def test_receipts_wait_for_durability_in_order():
    h = Harness()
    h.connect()
    pending = h.hold_durability()
    h.send(b"SEND\ndestination:/queue/d\npersistent:true\nreceipt:r1\n\nx\x00"
           b"SUBSCRIBE\nid:s\ndestination:/queue/other\nreceipt:r2\n\n\x00")
    await asyncio.sleep(0.01)
    assert h.frames() == []  # r1 waits for the fsync, r2 waits behind r1
    pending.set_result(None)
    assert [f.headers["receipt-id"] for f in await h.next_frames(2)] == ["r1", "r2"]


async def test_deliveries_wait_for_writable_connection():
    h = Harness()
    h.connect()
    h.conn.writable = False
    h.send(b"SUBSCRIBE\nid:s\ndestination:/queue/bp\n\n\x00"
           b"SEND\ndestination:/queue/bp\n\n1\x00SEND\ndestination:/queue/bp\n\n2\x00")
    assert h.frames() == []
    assert h.vhost.queues["bp"].message_count == 2
    h.conn.writable = True
    h.session.resume_writing()
    await asyncio.sleep(0)
    assert [f.body for f in h.frames()] == [b"1", b"2"]


async def test_connection_lost_requeues_and_drops_exclusive_queues():
    h = Harness()
    h.connect()
    h.send(b"SUBSCRIBE\nid:s\ndestination:/queue/w\nack:client\n\n\x00"
           b"SUBSCRIBE\nid:t\ndestination:/topic/x\n\n\x00"
           b"SEND\ndestination:/queue/w\n\nkeep\x00")
    assert [f.command for f in h.frames()] == ["MESSAGE"]
    queues_before = set(h.vhost.queues)
    assert h.vhost.queues["w"].unacked_count == 1
    h.session.connection_lost()
    assert h.vhost.queues["w"].message_count == 1
    assert h.vhost.queues["w"].unacked_count == 0
    assert set(h.vhost.queues) == {"w"}
    assert len(queues_before) == 2


async def test_server_cancelled_subscription_keeps_connection():
    h = Harness()
    h.connect()
    h.send(b"SUBSCRIBE\nid:s\ndestination:/queue/gone\n\n\x00")
    h.vhost.delete_queue("gone")
    await asyncio.sleep(0)
    [frame] = h.frames()
    assert frame.command == "ERROR"
    assert frame.headers["message"] == "Server cancelled subscription"
    assert frame.headers["subscription"] == "s"
    assert h.conn.close_reason is None
    h.send(b"SUBSCRIBE\nid:s\ndestination:/queue/again\nreceipt:ok\n\n\x00")
    assert [f.command for f in h.frames()] == ["RECEIPT"]


async def test_heartbeat_negotiation_sets_keepalive():
    settings = Settings().replace("stomp", heartbeat_ms=1000)
    h = Harness(settings)
    h.send(b"CONNECT\naccept-version:1.2\nheart-beat:4000,500\n\n\x00")
    [frame] = h.frames()
    assert frame.headers["heart-beat"] == "1000,1000"
    read_timeout, on_timeout, send_interval, send = h.conn.keepalive
    assert read_timeout == 8.0  # 2 x max(4000, 1000) ms
    assert send_interval == 0.5  # half of max(500, 1000) ms
    send()
    await asyncio.sleep(0)
    assert h.conn.out == b"\n"


async def test_consumer_timeout_then_late_ack_is_ignored():
    h = Harness()
    h.connect()
    h.send(b"SUBSCRIBE\nid:s\ndestination:/queue/ct\nack:client-individual\n\n\x00"
           b"SEND\ndestination:/queue/ct\n\nslow\x00")
    [msg] = h.frames()
    sub = h.session.subscriptions["s"]
    [delivery] = h.session.held.deliveries(sub)
    delivery.queue.settle(delivery, False, True)  # what the core's consumer timeout does
    sub.delivery_timed_out(delivery)
    await asyncio.sleep(0)  # output outside an input chunk goes on the next loop turn
    [again] = h.frames()  # redelivered at once to the same subscription
    assert again.headers["redelivered"] == "true"
    h.send(f"ACK\nid:{msg.headers['ack']}\nreceipt:late\n\n\x00".encode())
    assert [f.command for f in h.frames()] == ["RECEIPT"]
    assert h.vhost.queues["ct"].unacked_count == 1  # the redelivery is still out


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
async def test_message_headers_escaped_per_version(version):
    h = Harness(version=version)
    h.connect()
    value = "a:b" if version == "1.0" else "a:b\\\\c\\nd"
    h.send(f"SUBSCRIBE\nid:s\ndestination:/queue/e\n\n\x00"
           f"SEND\ndestination:/queue/e\nk:{value}\n\n\x00".encode())
    raw = bytes(h.conn.out)
    if version == "1.0":
        assert b"\nk:a:b\n" in raw
    else:
        assert b"\nk:a\\cb\\\\c\\nd\n" in raw
    [frame] = h.frames()
    assert frame.headers["k"] == ("a:b" if version == "1.0" else "a:b\\c\nd")


async def test_disconnect_receipt_waits_for_earlier_durable_receipts():
    h = Harness()
    h.connect()
    pending = h.hold_durability()
    h.send(b"SEND\ndestination:/queue/d\npersistent:true\nreceipt:r1\n\nx\x00"
           b"DISCONNECT\nreceipt:bye\n\n\x00")
    assert h.frames() == [] and h.conn.close_reason is None
    pending.set_result(None)
    assert [f.headers["receipt-id"] for f in await h.next_frames(2)] == ["r1", "bye"]
    assert h.conn.close_reason == "client sent DISCONNECT"


async def test_error_while_receipt_pending_sends_no_receipt_after_it():
    h = Harness()
    h.connect()
    pending = h.hold_durability()
    h.send(b"SEND\ndestination:/queue/d\npersistent:true\nreceipt:r1\n\nx\x00FROB\n\n\x00")
    pending.set_result(None)
    assert [f.command for f in await h.next_frames(1)] == ["ERROR"]
    assert not pending.cancelled()


async def test_client_mode_nack_is_cumulative():
    h = Harness()
    h.connect()
    h.send(b"SUBSCRIBE\nid:s\ndestination:/queue/cn\nack:client\n\n\x00"
           + b"".join(b"SEND\ndestination:/queue/cn\n\n%d\x00" % i for i in range(3)))
    frames = h.frames()
    assert [f.body for f in frames] == [b"0", b"1", b"2"]
    h.send(f"NACK\nid:{frames[1].headers['ack']}\nrequeue:false\n\n\x00".encode())
    queue = h.vhost.queues["cn"]
    assert (queue.message_count, queue.unacked_count) == (0, 1)  # 0 and 1 dropped, 2 out


async def test_x_queue_name_and_temp_queue_subscription():
    h = Harness()
    h.connect()
    h.send(b"SUBSCRIBE\nid:a\ndestination:/topic/k\nx-queue-name:my-topic-q\n\n\x00"
           b"SUBSCRIBE\nid:b\ndestination:/temp-queue/inbox\n\n\x00"
           b"SEND\ndestination:/topic/k\n\nt\x00"
           b"SEND\ndestination:/queue/rpc\nreply-to:/temp-queue/inbox\n\nq\x00")
    [topic_msg] = h.frames()
    assert topic_msg.headers["subscription"] == "a"
    assert h.vhost.queues["my-topic-q"].exclusive_owner is h.session
    request = h.vhost.queues["rpc"].ready_messages()[0]
    reply_queue = request.properties.reply_to[len("/reply-queue/"):]
    # replies reach the explicit subscription, not a second, automatic one
    assert [s.id for s in h.session.subscriptions.values()
            if s.queue_name == reply_queue] == ["b"]
    h.send(f"SEND\ndestination:/reply-queue/{reply_queue}\n\nanswer\x00".encode())
    [reply] = h.frames()
    assert (reply.body, reply.headers["subscription"]) == (b"answer", "b")
    assert reply.headers["destination"] == "/temp-queue/inbox"
