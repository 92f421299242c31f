"""The AMQP session state machine without sockets: frames in (built with pamqp), frames out
(read back with pamqp), against a real core."""
from __future__ import annotations


import pytest
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader

from manifold.adapters.amqp import make_server
from manifold.broker.core import Broker
from manifold.config.settings import Settings
from tests.fakes import FakeConnection


class Client:
    def __init__(self, server):
        self.session = server.new_session()
        self.conn = FakeConnection()
        self.session.connection_made(self.conn)

    def send(self, channel, *frames):
        self.session.data_received(b"".join(pframe.marshal(f, channel) for f in frames))

    def publish(self, channel, body=b"x", exchange="", routing_key="q", props=None, **kw):
        self.send(channel, C.Basic.Publish(exchange=exchange, routing_key=routing_key, **kw),
                  pheader.ContentHeader(0, len(body), props or C.Basic.Properties()),
                  pbody.ContentBody(body))

    def frames(self):
        out = []
        data = self.conn.take()
        while data:
            used, channel, value = pframe.unmarshal(data)
            out.append((channel, value))
            data = data[used:]
        return out

    def methods(self):
        return [v for _, v in self.frames() if isinstance(v, pframe.base.Frame)]

    def handshake(self, heartbeat=0):
        self.session.data_received(b"AMQP\x00\x00\x09\x01")
        self.send(0, C.Connection.StartOk(
            client_properties={"capabilities": {"consumer_cancel_notify": True}},
            mechanism="PLAIN", response="\x00guest\x00guest"),
            C.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=heartbeat),
            C.Connection.Open(virtual_host="/"))
        names = [m.name for m in self.methods()]
        assert names == ["Connection.Start", "Connection.Tune", "Connection.OpenOk"]
        self.send(1, C.Channel.Open())
        assert [m.name for m in self.methods()] == ["Channel.OpenOk"]


@pytest.fixture
def server():
    broker = Broker(Settings())
    return make_server(broker, broker.settings)


@pytest.fixture
async def client(server):
    c = Client(server)
    c.handshake()
    return c


async def test_heartbeat_negotiation_sets_the_keepalive(server):
    c = Client(server)
    c.handshake(heartbeat=4)
    read_timeout, _, send_interval, _ = c.conn.keepalive
    assert (read_timeout, send_interval) == (8, 2)


async def test_channel_flow_pauses_deliveries(client):
    client.send(1, C.Queue.Declare(queue="q"), C.Channel.Flow(active=False),
                C.Basic.Consume(queue="q", consumer_tag="c", no_ack=True))
    assert [m.name for m in client.methods()] == ["Queue.DeclareOk", "Channel.FlowOk",
                                                  "Basic.ConsumeOk"]
    client.publish(1)
    assert client.methods() == []
    client.send(1, C.Channel.Flow(active=True))
    names = [m.name for m in client.methods()]
    assert names == ["Channel.FlowOk", "Basic.Deliver"]


async def test_publish_to_internal_exchange_is_403(client):
    client.send(1, C.Exchange.Declare(exchange="inner", exchange_type="fanout", internal=True))
    client.methods()
    client.publish(1, exchange="inner")
    [close] = client.methods()
    assert isinstance(close, C.Channel.Close) and close.reply_code == 403
    assert (close.class_id, close.method_id) == (60, 40)


async def test_user_id_must_match_the_login(client):
    client.publish(1, props=C.Basic.Properties(user_id="mallory"))
    [close] = client.methods()
    assert close.reply_code == 406
    assert close.reply_text == ("PRECONDITION_FAILED - user_id property set to 'mallory' but "
                                "authenticated user was 'guest'")


async def test_recover_without_requeue_and_prefetch_size_are_540(server):
    for method in (C.Basic.Recover(requeue=False), C.Basic.Qos(prefetch_size=10)):
        c = Client(server)
        c.handshake()
        c.send(1, method)
        [close] = c.methods()
        assert isinstance(close, C.Connection.Close) and close.reply_code == 540


async def test_tx_commit_without_select_is_406(client):
    client.send(1, C.Tx.Commit())
    [close] = client.methods()
    assert close.reply_code == 406 and "not transactional" in close.reply_text


async def test_consume_ok_precedes_deliveries_and_cancel_keeps_unacked(client):
    client.send(1, C.Queue.Declare(queue="q"))
    client.publish(1, b"a")
    client.publish(1, b"b")
    client.methods()
    client.send(1, C.Basic.Consume(queue="q", consumer_tag="c"))
    names = [m.name for m in client.methods()]
    assert names == ["Basic.ConsumeOk", "Basic.Deliver", "Basic.Deliver"]
    client.send(1, C.Basic.Cancel(consumer_tag="c"))
    assert [m.name for m in client.methods()] == ["Basic.CancelOk"]
    client.send(1, C.Basic.Ack(delivery_tag=2, multiple=True))
    assert client.methods() == []  # both tags were still known after the cancel


async def test_confirms_are_coalesced_into_one_multiple_ack_per_read(client):
    client.send(1, C.Confirm.Select(), C.Queue.Declare(queue="q"))
    client.methods()
    data = b""
    for i in range(5):
        data += b"".join(pframe.marshal(f, 1) for f in (
            C.Basic.Publish(exchange="", routing_key="q"),
            pheader.ContentHeader(0, 1, C.Basic.Properties()), pbody.ContentBody(b"x")))
    client.session.data_received(data)
    [ack] = client.methods()
    assert isinstance(ack, C.Basic.Ack) and ack.delivery_tag == 5 and ack.multiple


async def test_deliveries_to_another_connection_are_written_once_per_read(server):
    pub, sub = Client(server), Client(server)
    pub.handshake()
    sub.handshake()
    sub.send(1, C.Queue.Declare(queue="q"), C.Basic.Consume(queue="q", consumer_tag="c",
                                                           no_ack=True))
    sub.methods()
    writes = []
    sub.conn.write = lambda data: writes.append(bytes(data))
    batch = b"".join(pframe.marshal(f, 1) for i in range(10) for f in (
        C.Basic.Publish(exchange="", routing_key="q"),
        pheader.ContentHeader(0, 1, C.Basic.Properties()), pbody.ContentBody(b"%d" % i)))
    pub.session.data_received(batch)
    assert len(writes) == 1  # one write for the whole read, at its end, no extra loop turn
    sub.conn.out[:] = writes[0]
    bodies = [v.value for _, v in sub.frames() if isinstance(v, pbody.ContentBody)]
    assert bodies == [b"%d" % i for i in range(10)]


async def test_connection_close_from_client_requeues_and_drops_exclusive(server):
    c = Client(server)
    c.handshake()
    c.send(1, C.Queue.Declare(queue="shared"), C.Queue.Declare(queue="own", exclusive=True))
    c.publish(1, routing_key="shared")
    c.send(1, C.Basic.Consume(queue="shared", consumer_tag="c"))
    c.methods()
    c.send(0, C.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert [m.name for m in c.methods()] == ["Connection.CloseOk"]
    assert c.conn.closed
    c.session.connection_lost()
    vhost = server.broker.vhosts["/"]
    assert vhost.queues["shared"].message_count == 1
    assert "own" not in vhost.queues


async def test_frames_after_connection_close_are_discarded(client):
    client.send(5, C.Basic.Qos(prefetch_count=1))  # channel 5 never opened: 504
    [close] = client.methods()
    assert close.reply_code == 504
    client.send(1, C.Queue.Declare(queue="ignored"))
    assert client.methods() == []
    client.send(0, C.Connection.CloseOk())
    assert client.conn.closed


async def test_connection_loss_cancels_every_consumer_before_requeueing(server):
    c = Client(server)
    c.handshake()
    c.send(2, C.Channel.Open())
    c.send(1, C.Queue.Declare(queue="limited", arguments={"x-delivery-limit": 1}),
           C.Basic.Qos(prefetch_count=1), C.Basic.Consume(queue="limited", consumer_tag="a"))
    c.send(2, C.Basic.Qos(prefetch_count=2), C.Basic.Consume(queue="limited", consumer_tag="b"))
    c.publish(1, b"m1", routing_key="limited")
    c.publish(1, b"m2", routing_key="limited")
    delivered = [m for m in c.methods() if isinstance(m, C.Basic.Deliver)]
    assert len(delivered) == 2
    c.session.connection_lost()
    queue = server.broker.vhosts["/"].queues["limited"]
    # each message went back once: none was bounced to the other dying channel and dropped
    assert queue.message_count == 2
