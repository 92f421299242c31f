"""Minimal raw-socket AMQP 0-9-1 load generator: basic.publish -> basic.deliver messages/second.

One consumer connection (a fresh auto-delete queue, basic.consume with no-ack, or manual acks
with --prefetch and one multiple ack per read with --ack) and one publisher connection writing
pre-encoded basic.publish + content header + body frames to the default exchange. The handshake
is encoded with pamqp; on the hot path the consumer only walks frame headers and counts
basic.deliver, so the broker is what is measured. At most --window messages are published and
not yet consumed (end-to-end flow control). The clock runs from the first timed publish to the
last delivery; --warmup messages run first, untimed.

Prints one JSON object on stdout, e.g.
    {"protocol": "amqp", "messages": 20000, "received": 20000, "seconds": 0.5,
     "msgs_per_s": 40000.0, "complete": true}
Exit status 0 when every message arrived, 1 otherwise.

    .venv/bin/python benchmarks/gen_amqp.py --host 127.0.0.1 --port 5672 --messages 20000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time

from pamqp import commands, frame as pframe, header as pheader, body as pbody

FRAME_END = 0xCE
DELIVER = (60 << 16) | 60


class AmqpReader(asyncio.Protocol):
    def __init__(self, progress: asyncio.Event, manual_ack: bool = False):
        self.buffer = bytearray()
        self.transport = None
        self.deliveries = 0
        self.control: asyncio.Queue = asyncio.Queue()
        self.progress = progress
        self.manual_ack = manual_ack
        self.closed = asyncio.get_running_loop().create_future()
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)
        self.progress.set()
        self.control.put_nowait(None)

    def pause_writing(self):
        self.can_write.clear()

    def resume_writing(self):
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos, end = 0, len(buf)
        count = 0
        last_tag = None
        while end - pos >= 8:
            kind = buf[pos]
            if kind == ord("A"):  # protocol header: the server refused our version
                self.control.put_nowait(bytes(buf[pos:pos + 8]))
                pos += 8
                continue
            size = int.from_bytes(buf[pos + 3:pos + 7], "big")
            stop = pos + 7 + size + 1
            if stop > end:
                break
            if kind == 1:
                ids = int.from_bytes(buf[pos + 7:pos + 11], "big")
                if ids == DELIVER:
                    count += 1
                    if self.manual_ack:
                        tag_len = buf[pos + 11]
                        at = pos + 12 + tag_len
                        last_tag = int.from_bytes(buf[at:at + 8], "big")
                else:
                    self.control.put_nowait(bytes(buf[pos:stop]))
            pos = stop
        if pos:
            del buf[:pos]
        if last_tag is not None:
            # basic.ack multiple=true up to the latest delivery tag: one ack per read.
            self.transport.write(pframe.marshal(commands.Basic.Ack(last_tag, True), 1))
        if count:
            self.deliveries += count
            self.progress.set()


async def expect(proto: AmqpReader, kinds, timeout: float):
    raw = await asyncio.wait_for(proto.control.get(), timeout)
    if raw is None:
        raise RuntimeError("connection closed by the broker")
    if raw.startswith(b"AMQP"):
        raise RuntimeError(f"broker refused protocol version: {raw!r}")
    _, _, obj = pframe.unmarshal(raw)
    if not isinstance(obj, kinds):
        raise RuntimeError(f"expected {kinds}, got {obj!r:.300}")
    return obj


async def open_connection(args, progress, manual_ack=False) -> AmqpReader:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: AmqpReader(progress, manual_ack), args.host, args.port),
        args.timeout)
    proto.transport.write(b"AMQP\x00\x00\x09\x01")
    await expect(proto, commands.Connection.Start, args.timeout)
    proto.transport.write(pframe.marshal(commands.Connection.StartOk(
        client_properties={"product": "manifold-bench"}, mechanism="PLAIN",
        response=f"\0{args.user}\0{args.password}", locale="en_US"), 0))
    tune = await expect(proto, commands.Connection.Tune, args.timeout)
    proto.transport.write(pframe.marshal(commands.Connection.TuneOk(
        channel_max=tune.channel_max or 2047, frame_max=tune.frame_max or 131072,
        heartbeat=0), 0))
    proto.transport.write(pframe.marshal(commands.Connection.Open(virtual_host=args.vhost), 0))
    await expect(proto, commands.Connection.OpenOk, args.timeout)
    proto.frame_max = tune.frame_max or 131072
    proto.transport.write(pframe.marshal(commands.Channel.Open(), 1))
    await expect(proto, commands.Channel.OpenOk, args.timeout)
    return proto


def publish_frames(routing_key: str, payload: bytes) -> bytes:
    props = commands.Basic.Properties(content_type="application/octet-stream", delivery_mode=1)
    return (pframe.marshal(commands.Basic.Publish(exchange="", routing_key=routing_key), 1)
            + pframe.marshal(pheader.ContentHeader(0, len(payload), props), 1)
            + pframe.marshal(pbody.ContentBody(payload), 1))


async def run(args) -> dict:
    tag = f"{os.getpid()}-{int(time.time() * 1000) % 100000000}"
    queue = f"manifold-bench-{tag}"
    progress = asyncio.Event()
    result = {"protocol": "amqp", "queue": queue, "ack": "manual" if args.ack else "no-ack",
              "messages": args.messages, "received": 0, "payload_bytes": args.size,
              "window": args.window, "seconds": None, "msgs_per_s": None, "complete": False}
    sub = await open_connection(args, progress, manual_ack=args.ack)
    sub.transport.write(pframe.marshal(commands.Queue.Declare(queue=queue, auto_delete=True), 1))
    await expect(sub, commands.Queue.DeclareOk, args.timeout)
    if args.ack:
        sub.transport.write(pframe.marshal(commands.Basic.Qos(prefetch_count=args.prefetch), 1))
        await expect(sub, commands.Basic.QosOk, args.timeout)
    sub.transport.write(pframe.marshal(commands.Basic.Consume(
        queue=queue, consumer_tag="bench", no_ack=not args.ack), 1))
    await expect(sub, commands.Basic.ConsumeOk, args.timeout)
    pub = await open_connection(args, progress)

    payload = os.urandom(args.size // 2 + 1).hex()[:args.size].encode()
    one = publish_frames(queue, payload)
    window = max(1, args.window)
    batch = max(1, args.batch)

    async def phase(count: int, deadline: float):
        base = sub.deliveries
        sent = 0
        t_first = time.perf_counter()
        last_seen, last_progress = 0, time.monotonic()
        while True:
            received = sub.deliveries - base
            if received >= count:
                break
            if sub.closed.done() or pub.closed.done():
                raise RuntimeError("the broker closed a connection")
            for proto in (pub, sub):
                while not proto.control.empty():
                    raw = proto.control.get_nowait()
                    if raw:
                        _, _, obj = pframe.unmarshal(raw)
                        raise RuntimeError(f"broker sent {obj!r:.300}")
            now = time.monotonic()
            if received != last_seen:
                last_seen, last_progress = received, now
            if now > deadline or now - last_progress > args.idle_timeout:
                break
            allowed = min(count - sent, window - (sent - received), batch)
            if allowed > 0 and pub.can_write.is_set():
                pub.transport.write(one * allowed)
                sent += allowed
                await asyncio.sleep(0)
                continue
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return sub.deliveries - base, t_first, time.perf_counter()

    deadline = time.monotonic() + args.timeout
    if args.warmup:
        got, _, _ = await phase(args.warmup, deadline)
        if got < args.warmup:
            raise RuntimeError(f"warm-up: only {got} of {args.warmup} messages arrived")
    received, t0, t1 = await phase(args.messages, deadline)
    seconds = t1 - t0
    result.update(received=received, seconds=round(seconds, 4),
                  msgs_per_s=round(received / seconds, 1) if seconds > 0 else None,
                  complete=received >= args.messages)
    if not result["complete"]:
        result["error"] = f"only {received} of {args.messages} messages arrived"
    for proto in (pub, sub):
        if not proto.closed.done():
            proto.transport.write(pframe.marshal(commands.Connection.Close(200, "bye", 0, 0), 0))
            proto.transport.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5672)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--size", type=int, default=64, help="body bytes (default 64)")
    p.add_argument("--ack", action="store_true",
                   help="manual acks (basic.qos --prefetch, multiple ack per read); "
                        "default no-ack")
    p.add_argument("--prefetch", type=int, default=1000)
    p.add_argument("--window", type=int, default=1000,
                   help="most messages published and not yet consumed (default 1000)")
    p.add_argument("--batch", type=int, default=100, help="messages per write (default 100)")
    p.add_argument("--warmup", type=int, default=1000, help="untimed messages first")
    p.add_argument("--user", default="guest")
    p.add_argument("--password", default="guest")
    p.add_argument("--vhost", default="/")
    p.add_argument("--timeout", type=float, default=120.0, help="whole run limit, s")
    p.add_argument("--idle-timeout", type=float, default=10.0,
                   help="give up when nothing arrives for this long, s")
    args = p.parse_args(argv)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout + 15))
    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
        result = {"protocol": "amqp", "messages": args.messages, "msgs_per_s": None,
                  "complete": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
