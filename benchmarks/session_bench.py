"""In-process benchmark of the three protocol sessions (a benchmark, not a test).

    python benchmarks/session_bench.py [--messages N] [--repeat R] [--cases a,b]

No sockets and no load generator: a publisher session and a consumer session of each adapter run
on one event loop against the real core, their connections replaced by sinks, the frames a
client would send built once up front. What is timed is the CPU time (``time.process_time``) the
sessions, the engine and the core spend per message, publish to delivery (and ack, confirm)
included; the best of ``--repeat`` runs is kept, which makes it much less sensitive to other
jobs on a shared machine than the socket benchmarks. Prints one JSON object: microseconds of CPU
per message, by case.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
from typing import Any

from manifold.broker.core import Broker
from manifold.config.settings import Settings

BATCH = 100  # messages per client read


class Sink:
    """A connection that takes everything and keeps nothing."""
    id = 1
    peer_host = "127.0.0.1"
    tls_identity = None
    writable = True

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: Any) -> None:
        self.bytes += len(data)

    def writelines(self, chunks: list) -> None:
        for chunk in chunks:
            self.bytes += len(chunk)

    def close(self, reason: str) -> None: ...
    def abort(self, reason: str) -> None: ...
    def hold_output(self, delay_s: float) -> None: ...
    def on_close(self, callback: Any) -> None: ...
    def opened(self, user: str, vhost: str) -> None: ...
    def mark_publishing(self) -> None: ...
    def set_keepalive(self, *args: Any, **kwargs: Any) -> None: ...


def session(server: Any) -> Any:
    s = server.new_session()
    s.connection_made(Sink())
    return s


async def ticks(n: int = 2) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def check(broker: Broker, sub: Any, n: int) -> None:
    """Every message reached the consumer and nothing is left unsettled: the run measured what
    it says."""
    for queue in broker.vhosts["/"].queues.values():
        assert queue.message_count == 0 and queue.unacked_count == 0, (
            queue.name, queue.message_count, queue.unacked_count)
    assert sub.conn.bytes >= n * 64, (sub.conn.bytes, n)


# ---------------------------------------------------------------- STOMP
async def stomp(n: int, ack: bool) -> float:
    from manifold.adapters.stomp import make_server
    broker = Broker(Settings())
    server = make_server(broker, broker.settings)
    pub, sub = session(server), session(server)
    for s in (pub, sub):
        s.data_received(b"CONNECT\naccept-version:1.2\n\n\x00")
    mode = "client-individual" if ack else "auto"
    sub.data_received(f"SUBSCRIBE\nid:s\ndestination:/queue/b\nack:{mode}\n\n\x00".encode())
    frame = b"SEND\ndestination:/queue/b\ncontent-type:text/plain\n\n" + b"x" * 64 + b"\x00"
    batch = frame * BATCH
    start = time.process_time()
    for first in range(1, n + 1, BATCH):
        pub.data_received(batch)
        await ticks()
        if ack:
            sub.data_received(b"".join(b"ACK\nid:%d\n\n\x00" % tag
                                       for tag in range(first, first + BATCH)))
    spent = time.process_time() - start
    await ticks()
    check(broker, sub, n)
    return spent


# ---------------------------------------------------------------- MQTT
async def mqtt(n: int, qos: int) -> float:
    from manifold.adapters.mqtt import codec as c
    from manifold.adapters.mqtt import make_server
    broker = Broker(Settings())
    server = make_server(broker, broker.settings)
    pub, sub = session(server), session(server)
    pub.data_received(c.serialize(c.Connect("bench-pub"), 4))
    sub.data_received(c.serialize(c.Connect("bench-sub"), 4))
    sub.data_received(c.serialize(c.Subscribe(1, [("b/t", c.SubscriptionOptions(qos))]), 4))
    await ticks()
    pid = 0
    start = time.process_time()
    for _ in range(0, n, BATCH):
        packets = []
        for _ in range(BATCH):
            pid = pid % 65535 + 1
            packets.append(c.encode_publish(b"b/t", b"x" * 64, qos, False, False,
                                            pid if qos else None, None))
        pub.data_received(b"".join(packets))
        await ticks()
        if qos:
            # the consumer's packet ids run 1, 2, ... like the publisher's
            sub.data_received(b"".join(b"\x40\x02" + p.to_bytes(2, "big")
                                       for p in range(pid - BATCH + 1, pid + 1)))
    spent = time.process_time() - start
    await ticks()
    check(broker, sub, n)
    return spent


# ---------------------------------------------------------------- AMQP
def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def _method(channel: int, class_id: int, method_id: int, args: bytes) -> bytes:
    return _frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def _shortstr(s: str) -> bytes:
    return bytes([len(s)]) + s.encode()


def amqp_sessions(server) -> tuple:
    """A publisher and a subscriber session, each through the AMQP handshake with channel 1 open."""
    from pamqp import commands as C
    from pamqp import frame as pframe
    pair = session(server), session(server)
    for s in pair:
        s.data_received(b"AMQP\x00\x00\x09\x01")
        s.data_received(b"".join(pframe.marshal(f, 0) for f in (
            C.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                 response="\x00guest\x00guest"),
            C.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=0),
            C.Connection.Open(virtual_host="/"))))
        s.data_received(pframe.marshal(C.Channel.Open(), 1))
    return pair


async def amqp(n: int, ack: bool) -> float:
    from pamqp import commands as C
    from pamqp import frame as pframe

    from manifold.adapters.amqp import make_server
    broker = Broker(Settings())
    server = make_server(broker, broker.settings)
    pub, sub = amqp_sessions(server)
    pub.data_received(pframe.marshal(C.Queue.Declare(queue="b"), 1))
    if ack:
        pub.data_received(pframe.marshal(C.Confirm.Select(), 1))
    sub.data_received(pframe.marshal(C.Basic.Consume(queue="b", consumer_tag="c",
                                                     no_ack=not ack), 1))
    publish = (_method(1, 60, 40, b"\x00\x00" + _shortstr("") + _shortstr("b") + b"\x00") +
               _frame(2, 1, struct.pack(">HHQH", 60, 0, 64, 0)) + _frame(3, 1, b"x" * 64))
    batch = publish * BATCH
    start = time.process_time()
    for first in range(1, n + 1, BATCH):
        pub.data_received(batch)
        await ticks()
        if ack:
            sub.data_received(b"".join(_method(1, 60, 80, struct.pack(">QB", tag, 0))
                                       for tag in range(first, first + BATCH)))
    spent = time.process_time() - start
    await ticks()
    check(broker, sub, n)
    return spent


async def amqp_persistent(n: int, prefetch: int = 0) -> float:
    """Persistent messages into a durable queue on a FileStore with fsync "always", publisher
    confirms, ``multiple`` acks of everything delivered (as amqp_throughput.py --persistent
    does). With ``prefetch`` below the batch, messages wait in the queue until an ack makes room
    (as they do in the socket benchmark); else each goes straight to the consumer. Returns the
    event loop thread's CPU (``time.thread_time``), the figure the writer thread does not blur;
    the whole process's CPU goes to ``PROCESS_CPU``."""
    case = "amqp-persistent" + ("-ready" if prefetch else "")
    import tempfile

    from pamqp import commands as C
    from pamqp import frame as pframe

    from manifold.adapters.amqp import make_server
    from manifold.persistence.filestore import FileStore
    with tempfile.TemporaryDirectory(prefix="session-bench-") as data_dir:
        store = FileStore(data_dir, fsync="always")
        broker = Broker(Settings(), store=store)
        await broker.start()
        server = make_server(broker, broker.settings)
        pub, sub = amqp_sessions(server)
        pub.data_received(pframe.marshal(C.Queue.Declare(queue="p", durable=True), 1))
        pub.data_received(pframe.marshal(C.Confirm.Select(), 1))
        sub.data_received(pframe.marshal(C.Basic.Qos(
            prefetch_count=prefetch or PERSISTENT_BATCH * 2), 1))
        sub.data_received(pframe.marshal(C.Basic.Consume(queue="p", consumer_tag="c"), 1))
        while store._in_flight is not None or store._has_work():  # the declaration
            await asyncio.sleep(0.001)
        publish = (_method(1, 60, 40, b"\x00\x00" + _shortstr("") + _shortstr("p") + b"\x00") +
                   _frame(2, 1, struct.pack(">HHQHB", 60, 0, 64, 0x1000, 2)) +
                   _frame(3, 1, b"x" * 64))
        batch = publish * PERSISTENT_BATCH
        confirms = pub.channels[1].confirms
        delivered = sub.channels[1]
        acked = 0
        start, process_start = time.thread_time(), time.process_time()
        for first in range(1, n + 1, PERSISTENT_BATCH):
            pub.data_received(batch)
            await ticks()
            while acked < first + PERSISTENT_BATCH - 1:  # ack what came; acks make room
                acked = delivered.next_tag
                sub.data_received(_method(1, 60, 80, struct.pack(">QB", acked, 1)))
                await ticks()
            while len(confirms):  # every confirm of the batch went out (after its fsync)
                if store._in_flight is not None:
                    await asyncio.wait([store._in_flight])
                await asyncio.sleep(0)
            await ticks()
        spent = time.thread_time() - start
        PROCESS_CPU[case] = time.process_time() - process_start
        await ticks()
        check(broker, sub, n)
        await broker.close()
        return spent


PERSISTENT_BATCH = 500
#: whole-process CPU of the cases that have a writer thread
PROCESS_CPU: dict[str, float] = {}

CASES = {
    "amqp": lambda n: amqp(n, False),
    "amqp-ack": lambda n: amqp(n, True),
    "mqtt-qos0": lambda n: mqtt(n, 0),
    "mqtt-qos1": lambda n: mqtt(n, 1),
    "stomp": lambda n: stomp(n, False),
    "stomp-ack": lambda n: stomp(n, True),
    "amqp-persistent": amqp_persistent,
    "amqp-persistent-ready": lambda n: amqp_persistent(n, prefetch=PERSISTENT_BATCH // 2),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cases", default=",".join(CASES))
    args = p.parse_args()
    n = args.messages // BATCH * BATCH
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    result = {}
    for case in args.cases.split(","):
        best = min(runner(CASES[case](n)) for _ in range(args.repeat))
        result[case] = round(best / n * 1e6, 2)
        if case in PROCESS_CPU:
            result[case + " (process)"] = round(PROCESS_CPU[case] / n * 1e6, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
