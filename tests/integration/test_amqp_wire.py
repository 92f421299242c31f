"""AMQP 0-9-1 over a raw socket: bad input closes only that connection with the right code.

Client frames are built with pamqp (an independent codec), server frames read back with it."""
from __future__ import annotations

import socket
import struct
import time

import aio_pika
import pytest
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp import heartbeat as pheartbeat

from tests.conftest import RunningBroker, broker_settings

T = 30  # seconds: the bound on every wait (generous: only a failing wait takes that long)
HEADER = b"AMQP\x00\x00\x09\x01"


class Raw:
    def __init__(self, rb, **kw):
        self.sock = socket.create_connection((rb.host, rb.ports["amqp"]), timeout=T)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def method(self, channel: int, method) -> None:
        self.send(pframe.marshal(method, channel))

    def read_frame(self):
        deadline = time.monotonic() + T
        while True:
            if self.buf:
                try:
                    used, channel, value = pframe.unmarshal(self.buf)
                except Exception:
                    used = 0
                if used:
                    self.buf = self.buf[used:]
                    return channel, value
            if time.monotonic() > deadline:
                raise TimeoutError("no frame")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed by the server")
            self.buf += chunk

    def expect(self, kind, skip_heartbeats=True):
        while True:
            channel, value = self.read_frame()
            if skip_heartbeats and isinstance(value, pheartbeat.Heartbeat):
                continue
            assert isinstance(value, kind), f"expected {kind.__name__}, got {value!r}"
            return channel, value

    def handshake(self, heartbeat: int = 0, mechanism: str = "PLAIN",
                  response: str = "\x00guest\x00guest") -> None:
        self.send(HEADER)
        _, start = self.expect(C.Connection.Start)
        self.start = start
        self.method(0, C.Connection.StartOk(
            client_properties={"capabilities": {"consumer_cancel_notify": True,
                                                "authentication_failure_close": True}},
            mechanism=mechanism, response=response))
        _, tune = self.expect(C.Connection.Tune)
        self.tune = tune
        self.method(0, C.Connection.TuneOk(channel_max=tune.channel_max,
                                           frame_max=tune.frame_max, heartbeat=heartbeat))
        self.method(0, C.Connection.Open(virtual_host="/"))
        self.expect(C.Connection.OpenOk)

    def open_channel(self, n: int = 1) -> None:
        self.method(n, C.Channel.Open())
        self.expect(C.Channel.OpenOk)

    def wait_closed(self) -> bool:
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except socket.timeout:
                continue
            except ConnectionResetError:
                return True
        return False

    def close(self):
        self.sock.close()


@pytest.fixture
def raw(running_broker):
    opened = []

    def make():
        r = Raw(running_broker)
        opened.append(r)
        return r

    yield make
    for r in opened:
        r.close()


def test_wrong_protocol_header_gets_ours_back_and_close(raw):
    r = raw()
    r.send(b"AMQP\x01\x01\x00\x0a")
    data = b""
    while len(data) < 8:
        chunk = r.sock.recv(64)
        if not chunk:
            break
        data += chunk
    assert data == HEADER
    assert r.wait_closed()


def test_http_request_gets_the_amqp_header(raw):
    r = raw()
    r.send(b"GET / HTTP/1.1\r\n\r\n")
    assert r.sock.recv(64) == HEADER
    assert r.wait_closed()


def test_connection_start_advertises_rabbitmq_capabilities(raw):
    r = raw()
    r.handshake()
    props = r.start.server_properties
    assert props["product"] == "Manifold"
    caps = props["capabilities"]
    for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "exchange_exchange_bindings", "connection.blocked",
                "authentication_failure_close", "per_consumer_qos", "consumer_priorities",
                "direct_reply_to"):
        assert caps[cap] is True, cap
    assert "PLAIN" in r.start.mechanisms.split() and "AMQPLAIN" in r.start.mechanisms.split()
    assert r.tune.frame_max == 131072


def test_amqplain_login(raw):
    r = raw()
    table = "\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest"
    r.handshake(mechanism="AMQPLAIN", response=table)
    r.open_channel()


def test_wrong_password_closes_with_403(raw):
    r = raw()
    r.send(HEADER)
    r.expect(C.Connection.Start)
    r.method(0, C.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism="PLAIN", response="\x00guest\x00bad"))
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 403
    assert close.reply_text.startswith("ACCESS_REFUSED - Login was refused")


def test_garbage_frame_closes_only_that_connection(running_broker, raw):
    import asyncio

    async def other_client_works():
        conn = await aio_pika.connect(
            f"amqp://guest:guest@{running_broker.host}:{running_broker.ports['amqp']}/")
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            r = raw()
            r.handshake()
            r.open_channel()
            r.send(b"\x01\x00\x01\x00\x00\x00\x04\x00\x0a\x00\x0a\x00")  # bad frame end
            _, close = r.expect(C.Connection.Close)
            assert close.reply_code == 501
            assert "FRAME_ERROR" in close.reply_text
            r.method(0, C.Connection.CloseOk())
            assert r.wait_closed()
            await ch.default_exchange.publish(aio_pika.Message(b"still here"), q.name)
            assert (await q.get(timeout=T)).body == b"still here"

    asyncio.run(other_client_works())


def test_oversized_frame_is_501(raw):
    r = raw()
    r.handshake()
    r.send(struct.pack(">BHI", 3, 1, 200000) + b"\x00" * 10)
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 501
    assert "frame_max" in close.reply_text


def test_unknown_frame_type_is_501(raw):
    r = raw()
    r.handshake()
    r.send(struct.pack(">BHI", 9, 0, 0) + b"\xce")
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 501


def test_content_header_without_publish_is_505(raw):
    r = raw()
    r.handshake()
    r.open_channel()
    r.send(pframe.marshal(pheader.ContentHeader(0, 3), 1))
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 505


def test_method_on_unopened_channel_is_504(raw):
    r = raw()
    r.handshake()
    r.method(3, C.Queue.Declare(queue="q"))
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 504
    assert close.class_id == 50 and close.method_id == 10


def test_unknown_method_is_540(raw):
    r = raw()
    r.handshake()
    r.open_channel()
    r.send(struct.pack(">BHIHH", 1, 1, 4, 60, 999) + b"\xce")
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 540


def test_truncated_method_is_502(raw):
    r = raw()
    r.handshake()
    r.open_channel()
    r.send(struct.pack(">BHIHH", 1, 1, 6, 50, 10) + b"\x00\x00\xce")
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 502


def test_immediate_publish_is_540(raw):
    r = raw()
    r.handshake()
    r.open_channel()
    r.method(1, C.Basic.Publish(exchange="", routing_key="x", immediate=True))
    r.send(pframe.marshal(pheader.ContentHeader(0, 0), 1))
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 540
    assert close.reply_text == "NOT_IMPLEMENTED - immediate=true"


def test_channel_exception_names_the_method_and_channel_reopens(raw):
    r = raw()
    r.handshake()
    r.open_channel()
    r.method(1, C.Queue.Bind(queue="nope", exchange="amq.direct", routing_key="k"))
    ch, close = r.expect(C.Channel.Close)
    assert ch == 1
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 20)
    assert close.reply_text == "NOT_FOUND - no queue 'nope' in vhost '/'"
    r.method(1, C.Basic.Qos(prefetch_count=1))  # discarded while closing
    r.method(1, C.Channel.CloseOk())
    r.open_channel(1)


def test_server_generated_consumer_tag(raw):
    r = raw()
    r.handshake()
    r.open_channel()
    r.method(1, C.Queue.Declare(queue="", exclusive=True))
    _, ok = r.expect(C.Queue.DeclareOk)
    r.method(1, C.Basic.Consume(queue=ok.queue, consumer_tag=""))
    _, consume_ok = r.expect(C.Basic.ConsumeOk)
    assert consume_ok.consumer_tag.startswith("amq.ctag-")
    r.method(1, C.Basic.Consume(queue=ok.queue, consumer_tag=consume_ok.consumer_tag))
    _, close = r.expect(C.Connection.Close)
    assert close.reply_code == 530
    assert "attempt to reuse consumer tag" in close.reply_text


def test_body_over_the_size_limit_is_406(make_broker):
    rb = make_broker(server={"max_message_bytes": 1000})
    r = Raw(rb)
    try:
        r.handshake()
        r.open_channel()
        r.method(1, C.Basic.Publish(exchange="", routing_key="x"))
        r.send(pframe.marshal(pheader.ContentHeader(0, 2000), 1))
        r.send(struct.pack(">BHI", 3, 1, 2000) + b"b" * 2000 + b"\xce")
        _, close = r.expect(C.Channel.Close)
        assert close.reply_code == 406
        assert "message size 2000 is larger than configured max size 1000" in close.reply_text
    finally:
        r.close()


def test_missed_heartbeats_close_the_connection(make_broker):
    rb = make_broker(amqp={"heartbeat_s": 1})
    r = Raw(rb)
    try:
        r.handshake(heartbeat=1)
        started = time.monotonic()
        # The server sends heartbeats while we stay silent...
        _, beat = r.read_frame()
        assert isinstance(beat, pheartbeat.Heartbeat)
        # ...and drops us after two missed heartbeat periods.
        assert r.wait_closed()
        # not before two periods; the upper bound only says the heart-beat timer did it (a
        # loaded machine fires timers late)
        assert 1.5 <= time.monotonic() - started <= 20
    finally:
        r.close()


def test_shutdown_sends_connection_forced(tmp_path):
    rb = RunningBroker(broker_settings(tmp_path)).start()
    r = Raw(rb)
    try:
        r.handshake()
        rb.stop()
        _, close = r.expect(C.Connection.Close)
        assert close.reply_code == 320
        assert close.reply_text == ("CONNECTION_FORCED - broker forced connection closure "
                                    "with reason 'shutdown'")
    finally:
        r.close()


def test_connection_loss_requeues_unacked_and_drops_exclusive_queues(running_broker, raw):
    r = raw()
    r.handshake()
    r.open_channel()
    r.method(1, C.Queue.Declare(queue="kept", durable=True))
    r.expect(C.Queue.DeclareOk)
    r.method(1, C.Queue.Declare(queue="mine-only", exclusive=True))
    r.expect(C.Queue.DeclareOk)
    for i in range(3):
        r.method(1, C.Basic.Publish(exchange="", routing_key="kept"))
        r.send(pframe.marshal(pheader.ContentHeader(0, 1), 1))
        r.send(struct.pack(">BHI", 3, 1, 1) + b"%d" % i + b"\xce")
    r.method(1, C.Basic.Consume(queue="kept", consumer_tag="c"))
    r.expect(C.Basic.ConsumeOk)
    for _ in range(3):
        r.expect(C.Basic.Deliver)
        r.expect(pheader.ContentHeader)
        r.read_frame()
    vhost = running_broker.broker.vhosts["/"]
    assert running_broker.call(lambda: vhost.queues["kept"].message_count) == 0
    r.sock.close()  # no Connection.Close: the connection is simply lost
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        state = running_broker.call(lambda: (vhost.queues["kept"].message_count,
                                             "mine-only" in vhost.queues))
        if state == (3, False):
            break
        time.sleep(0.02)
    assert state == (3, False)
