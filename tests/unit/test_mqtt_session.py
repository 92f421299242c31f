"""MQTT session state machine driven without sockets: a fake connection, the real core."""
from __future__ import annotations

import asyncio

import pytest

from manifold.adapters.mqtt import codec as c
from manifold.adapters.mqtt.decoder import MqttDecoder
from manifold.adapters.mqtt.server import MqttServer
from manifold.adapters.mqtt.session import MqttSession
from manifold.broker.core import Broker
from manifold.config.settings import Settings
from tests.fakes import FakeConnection


class Client:
    """A session plus its fake connection, speaking packets."""

    def __init__(self, server: MqttServer, version: int = 4):
        self.session = server.new_session()
        self.conn = FakeConnection()
        self.session.connection_made(self.conn)  # type: ignore[arg-type]
        self.version = version
        self.decoder = MqttDecoder("client", version=version)

    def send(self, packet: c.Packet) -> None:
        self.session.data_received(c.serialize(packet, self.version))

    def packets(self) -> list:
        self.decoder.receive_data(bytes(self.conn.out))
        self.conn.out.clear()
        out = []
        while (p := self.decoder.next_event()) is not c.NEED_DATA:
            out.append(p)
        return out


@pytest.fixture
def server(tmp_path):
    settings = Settings().replace("server", data_dir=str(tmp_path))
    return MqttServer(Broker(settings), settings, MqttSession)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_keep_alive_set_to_one_and_a_half_times(server):
    cl = Client(server)
    cl.send(c.Connect("ka", keep_alive=20))
    assert cl.conn.keepalive[0] == 30.0


async def test_deliveries_stop_while_not_writable_and_resume(server):
    sub = Client(server)
    sub.send(c.Connect("sub"))
    sub.send(c.Subscribe(1, [("t", c.SubscriptionOptions(1))]))
    await settle()
    assert [type(p) for p in sub.packets()] == [c.Connack, c.Suback]
    sub.conn.writable = False
    pub = Client(server)
    pub.send(c.Connect("pub"))
    for i in range(5):
        pub.send(c.Publish("t", b"%d" % i, 1, packet_id=i + 1))
    await settle()
    assert sub.packets() == []  # held in the queue, not buffered in memory
    sub.conn.writable = True
    sub.session.resume_writing()
    await settle()
    assert [p.payload for p in sub.packets()] == [b"0", b"1", b"2", b"3", b"4"]


async def test_output_of_one_input_chunk_is_one_write(server):
    pub = Client(server)
    pub.send(c.Connect("batch"))
    await settle()
    pub.packets()
    writes = pub.conn.writes
    data = b"".join(c.serialize(c.Publish("x", b"m", 1, packet_id=i), 4) for i in range(1, 50))
    pub.session.data_received(data)
    await settle()
    assert pub.conn.writes == writes + 1
    assert [p.packet_id for p in pub.packets()] == list(range(1, 50))


async def test_qos2_inbound_exactly_once(server):
    sub = Client(server)
    sub.send(c.Connect("s2"))
    sub.send(c.Subscribe(1, [("q", c.SubscriptionOptions(2))]))
    pub = Client(server)
    pub.send(c.Connect("p2"))
    for _ in range(3):
        pub.send(c.Publish("q", b"x", 2, dup=True, packet_id=9))
    pub.send(c.Pubrel(9))
    await settle()
    assert [type(p) for p in pub.packets()] == [c.Connack, c.Pubrec, c.Pubrec, c.Pubrec,
                                                 c.Pubcomp]
    assert [p.payload for p in sub.packets() if isinstance(p, c.Publish)] == [b"x"]


async def test_unsubscribed_messages_still_queued_are_dropped(server):
    sub = Client(server)
    sub.send(c.Connect("u"))
    sub.send(c.Subscribe(1, [("a", c.SubscriptionOptions(1))]))
    await settle()
    sub.packets()
    sub.conn.writable = False
    pub = Client(server)
    pub.send(c.Connect("upub"))
    pub.send(c.Publish("a", b"late", 1, packet_id=1))
    sub.send(c.Unsubscribe(2, ["a"]))
    sub.conn.writable = True
    sub.session.resume_writing()
    await settle()
    assert [type(p) for p in sub.packets()] == [c.Unsuback]


async def test_connection_lost_ends_clean_session(server):
    cl = Client(server)
    cl.send(c.Connect("gone"))
    cl.send(c.Subscribe(1, [("a", c.SubscriptionOptions(1))]))
    vhost = server.broker.vhosts["/"]
    assert "mqtt-subscription-gone" in vhost.queues
    cl.session.connection_lost()
    assert "gone" not in server.sessions
    assert "mqtt-subscription-gone" not in vhost.queues


async def test_internal_error_closes_only_that_connection(server, monkeypatch):
    cl = Client(server, 5)
    cl.send(c.Connect("boom", protocol_level=5))
    monkeypatch.setattr(cl.session, "on_subscribe", lambda p: 1 / 0)
    cl.send(c.Subscribe(1, [("a", c.SubscriptionOptions(0))]))
    packets = cl.packets()
    assert isinstance(packets[-1], c.Disconnect)
    assert packets[-1].reason_code == c.IMPLEMENTATION_SPECIFIC_ERROR
    assert cl.conn.closed


async def test_session_queue_deleted_under_the_session(server):
    cl = Client(server, 5)
    cl.send(c.Connect("victim", protocol_level=5))
    cl.send(c.Subscribe(1, [("a", c.SubscriptionOptions(1))]))
    await settle()
    cl.packets()
    server.broker.vhosts["/"].delete_queue("mqtt-subscription-victim")
    await settle()
    packets = cl.packets()
    assert isinstance(packets[-1], c.Disconnect) and packets[-1].reason_code == 0x80
    assert cl.conn.closed
    assert "victim" not in server.sessions
    cl.session.connection_lost()  # the transport's callback later: nothing left to do


async def test_v5_expiry_interval_counts_the_time_a_message_from_amqp_waited(tmp_path):
    # [MQTT-3.3.2-6] the interval sent is the received one minus the time the message waited;
    # an AMQP publish carries its lifetime as ``expiration`` (ms) and no MQTT timestamp.
    from manifold.broker.clock import ManualClock
    from manifold.broker.message import Message, Properties
    settings = Settings().replace("server", data_dir=str(tmp_path))
    clock = ManualClock()
    server = MqttServer(Broker(settings, clock=clock), settings, MqttSession)
    sub = Client(server, version=5)
    sub.send(c.Connect("expiry", protocol_level=5, clean_start=False,
                       properties={"session_expiry_interval": 600}))
    sub.send(c.Subscribe(1, [("ex/t", c.SubscriptionOptions(1))]))
    await settle()
    sub.packets()
    sub.session.connection_lost()  # offline: the message waits in the session queue
    vhost = server.broker.vhosts["/"]
    for body, ttl_ms in ((b"long", "60000"), (b"short", "5000")):
        vhost.publish("amq.topic", "ex.t", Message("amq.topic", "ex.t", body,
                                                   Properties(expiration=ttl_ms,
                                                              delivery_mode=2)))
    clock.advance(20_000)
    sub = Client(server, version=5)
    sub.send(c.Connect("expiry", protocol_level=5, clean_start=False,
                       properties={"session_expiry_interval": 600}))
    await settle()
    publishes = [p for p in sub.packets() if isinstance(p, c.Publish)]
    # 60 s lifetime, 20 s waited: 40 s left; the 5 s one has expired and is not sent
    assert [(p.payload, p.properties.get("message_expiry_interval")) for p in publishes] == \
        [(b"long", 40)]
