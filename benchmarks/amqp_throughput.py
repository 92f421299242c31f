"""AMQP 0-9-1 throughput: transient 64-byte messages, one pipelined publisher, one consumer.

The load generator is a raw-socket client (handshake encoded with pamqp, then pre-encoded
Basic.Publish + content header + body frames written in batches; the consumer only walks frame
headers and counts Basic.Deliver), so the broker is what is measured, not the client. At most
``--window`` messages are in flight (published, not yet delivered), which keeps the broker's
queue short and the run honest about end-to-end throughput.

With ``--port`` it measures a broker that is already running (Manifold, RabbitMQ: anything that
speaks AMQP 0-9-1); without, it starts ``manifold serve`` on a free loopback port, measures, and
stops it. Prints one JSON object on stdout:

    {"broker": "manifold", "ack": "no-ack", "messages": 200000, "msgs_per_s": 52000.0, ...}

    .venv/bin/python benchmarks/amqp_throughput.py                       # Manifold, no-ack
    .venv/bin/python benchmarks/amqp_throughput.py --ack                 # manual acks
    .venv/bin/python benchmarks/amqp_throughput.py --host 127.0.0.1 --port 5672   # RabbitMQ
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time

from pamqp import body as pbody
from pamqp import commands
from pamqp import frame as pframe
from pamqp import header as pheader
from benchkit import (GeneratorProtocol, cpu_seconds, free_port, install_uvloop,  # noqa: E402
                      start_manifold, stop_manifold, wait_for_progress, warm_then_measure)

DELIVER = (60 << 16) | 60
ACK = (60 << 16) | 80
NACK = (60 << 16) | 120


class Client(GeneratorProtocol):
    """One AMQP connection: counts deliveries (and confirms), queues every other frame."""

    def __init__(self, progress: asyncio.Event, manual_ack: bool = False):
        super().__init__(progress)
        self.deliveries = 0
        self.confirmed = 0
        self.last_confirm_tag = 0
        self.manual_ack = manual_ack

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos, end = 0, len(buf)
        count = 0
        confirmed = self.confirmed
        last_tag = None
        while end - pos >= 7:
            kind = buf[pos]
            if kind == 0x41:  # "AMQP...": the server refused our protocol version
                self.control.put_nowait(bytes(buf[pos:pos + 8]))
                pos = end
                break
            size = int.from_bytes(buf[pos + 3:pos + 7], "big")
            stop = pos + 8 + size
            if stop > end:
                break
            if kind == 1:
                ids = int.from_bytes(buf[pos + 7:pos + 11], "big")
                if ids == DELIVER:
                    count += 1
                    if self.manual_ack:
                        at = pos + 12 + buf[pos + 11]
                        last_tag = int.from_bytes(buf[at:at + 8], "big")
                elif ids == ACK:
                    tag = int.from_bytes(buf[pos + 11:pos + 19], "big")
                    multiple = buf[pos + 19] & 1
                    self.confirmed += (tag - self.last_confirm_tag) if multiple else 1
                    self.last_confirm_tag = max(tag, self.last_confirm_tag)
                elif ids == NACK:
                    self.control.put_nowait(bytes(buf[pos:stop]))
                else:
                    self.control.put_nowait(bytes(buf[pos:stop]))
            elif kind == 8:
                pass  # heartbeat
            pos = stop
        if pos:
            del buf[:pos]
        if last_tag is not None:
            # One Basic.Ack(multiple) per read, as a well-behaved high-rate consumer does.
            self.transport.write(pframe.marshal(commands.Basic.Ack(last_tag, True), 1))
        if count:
            self.deliveries += count
        if count or self.confirmed != confirmed:
            self.progress.set()


async def expect(client: Client, kinds, timeout: float):
    raw = await asyncio.wait_for(client.control.get(), timeout)
    if raw is None:
        raise RuntimeError("connection closed by the broker")
    if raw.startswith(b"AMQP"):
        raise RuntimeError(f"broker refused the protocol version: {raw!r}")
    _, _, obj = pframe.unmarshal(raw)
    if not isinstance(obj, kinds):
        raise RuntimeError(f"expected {kinds}, got {obj!r:.300}")
    return obj


async def open_client(args, progress: asyncio.Event, manual_ack: bool = False,
                      client_class: type = Client) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(loop.create_connection(
        lambda: client_class(progress, manual_ack), args.host, args.port), args.timeout)
    sock = client.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.transport.write(b"AMQP\x00\x00\x09\x01")
    await expect(client, commands.Connection.Start, args.timeout)
    client.transport.write(pframe.marshal(commands.Connection.StartOk(
        client_properties={"product": "manifold-amqp-bench"}, mechanism="PLAIN",
        response=f"\0{args.user}\0{args.password}", locale="en_US"), 0))
    tune = await expect(client, commands.Connection.Tune, args.timeout)
    client.transport.write(pframe.marshal(commands.Connection.TuneOk(
        channel_max=tune.channel_max or 2047, frame_max=tune.frame_max or 131072,
        heartbeat=0), 0))
    client.transport.write(pframe.marshal(commands.Connection.Open(virtual_host=args.vhost), 0))
    await expect(client, commands.Connection.OpenOk, args.timeout)
    client.transport.write(pframe.marshal(commands.Channel.Open(), 1))
    await expect(client, commands.Channel.OpenOk, args.timeout)
    return client


def publish_frames(routing_key: str, payload: bytes, persistent: bool = False) -> bytes:
    props = commands.Basic.Properties(content_type="application/octet-stream",
                                      delivery_mode=2 if persistent else 1)
    return (pframe.marshal(commands.Basic.Publish(exchange="", routing_key=routing_key), 1)
            + pframe.marshal(pheader.ContentHeader(0, len(payload), props), 1)
            + pframe.marshal(pbody.ContentBody(payload), 1))


async def run(args) -> dict:
    queue = f"amqp-bench-{os.getpid()}-{int(time.time() * 1000) % 100000000}"
    progress = asyncio.Event()
    result = {"protocol": "amqp", "broker": args.broker_name,
              "ack": "manual" if args.ack else "no-ack", "confirm": args.confirm,
              "persistent": args.persistent,
              "messages": args.messages, "payload_bytes": args.size, "window": args.window,
              "received": 0, "seconds": None, "msgs_per_s": None, "complete": False}
    sub = await open_client(args, progress, manual_ack=args.ack)
    sub.transport.write(pframe.marshal(commands.Queue.Declare(
        queue=queue, auto_delete=True, durable=args.persistent), 1))
    await expect(sub, commands.Queue.DeclareOk, args.timeout)
    if args.ack:
        sub.transport.write(pframe.marshal(commands.Basic.Qos(prefetch_count=args.prefetch), 1))
        await expect(sub, commands.Basic.QosOk, args.timeout)
    sub.transport.write(pframe.marshal(commands.Basic.Consume(
        queue=queue, consumer_tag="bench", no_ack=not args.ack), 1))
    await expect(sub, commands.Basic.ConsumeOk, args.timeout)
    pub = await open_client(args, progress)
    if args.confirm:
        pub.transport.write(pframe.marshal(commands.Confirm.Select(), 1))
        await expect(pub, commands.Confirm.SelectOk, args.timeout)

    payload = os.urandom(args.size // 2 + 1).hex()[:args.size].encode()
    one = publish_frames(queue, payload, args.persistent)
    window, batch = max(1, args.window), max(1, args.batch)

    async def phase(count: int, deadline: float):
        base, base_confirmed = sub.deliveries, pub.confirmed
        sent = 0
        t_first = time.perf_counter()
        last_seen, last_progress = 0, time.monotonic()
        while True:
            received = sub.deliveries - base
            # With confirms, a message counts once it is both delivered and confirmed, and the
            # window bounds what is unconfirmed too (as a publisher waiting on confirms would).
            done = min(received, pub.confirmed - base_confirmed) if args.confirm else received
            if done >= count:
                break
            if sub.closed.done() or pub.closed.done():
                raise RuntimeError("the broker closed a connection")
            for client in (pub, sub):
                while not client.control.empty():
                    raw = client.control.get_nowait()
                    if raw:
                        _, _, obj = pframe.unmarshal(raw)
                        raise RuntimeError(f"broker sent {obj!r:.300}")
            now = time.monotonic()
            if done != last_seen:
                last_seen, last_progress = done, now
            if now > deadline or now - last_progress > args.idle_timeout:
                break
            allowed = min(count - sent, window - (sent - done), batch)
            if allowed > 0 and pub.can_write.is_set():
                pub.transport.write(one * allowed)
                sent += allowed
                await asyncio.sleep(0)
                continue
            await wait_for_progress(progress)
        received = sub.deliveries - base
        if args.confirm:
            received = min(received, pub.confirmed - base_confirmed)
        return received, t_first, time.perf_counter()

    received = await warm_then_measure(phase, args, result)
    if args.confirm:
        result["confirmed"] = pub.confirmed
    if not result["complete"]:
        result["error"] = f"only {received} of {args.messages} messages arrived"
    for client in (pub, sub):
        if not client.closed.done():
            client.transport.write(pframe.marshal(commands.Connection.Close(200, "bye", 0, 0),
                                                  0))
            client.transport.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None,
                   help="measure the broker already listening here (default: start Manifold)")
    p.add_argument("--broker-name", default=None, help="label for the JSON output")
    p.add_argument("--messages", type=int, default=200000)
    p.add_argument("--size", type=int, default=64, help="body bytes (default 64)")
    p.add_argument("--ack", action="store_true",
                   help="manual acks (basic.qos --prefetch, one multiple ack per read)")
    p.add_argument("--prefetch", type=int, default=1000)
    p.add_argument("--confirm", action="store_true", help="publisher confirms on")
    p.add_argument("--persistent", action="store_true",
                   help="durable queue and persistent messages (default: transient)")
    p.add_argument("--window", type=int, default=5000,
                   help="most messages published and not yet delivered (default 5000)")
    p.add_argument("--batch", type=int, default=500, help="messages per write (default 500)")
    p.add_argument("--warmup", type=int, default=5000, help="untimed messages first")
    p.add_argument("--user", default="guest")
    p.add_argument("--password", default="guest")
    p.add_argument("--vhost", default="/")
    p.add_argument("--timeout", type=float, default=120.0, help="whole run limit, s")
    p.add_argument("--idle-timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    install_uvloop()
    proc = None
    tmp = None
    if args.port is None:
        tmp = tempfile.TemporaryDirectory(prefix="manifold-amqp-bench-")
        args.port = free_port()
        proc = start_manifold("amqp", args.port, tmp.name)
        args.broker_name = args.broker_name or "manifold"
    args.broker_name = args.broker_name or f"{args.host}:{args.port}"
    cpu_before = cpu_seconds(proc.pid) if proc is not None else None
    client_cpu = time.process_time()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout + 15))
        # the load generator's own CPU: near one full core would make it the bottleneck
        result["client_cpu_s"] = round(time.process_time() - client_cpu, 3)
        if cpu_before is not None:
            # CPU the broker spent, per message (warm-up included): stable on a busy machine
            used = cpu_seconds(proc.pid) - cpu_before
            result["broker_cpu_s"] = round(used, 3)
            result["broker_cpu_us_per_msg"] = round(
                used * 1e6 / (args.messages + args.warmup), 2)
    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
        result = {"protocol": "amqp", "broker": args.broker_name, "messages": args.messages,
                  "msgs_per_s": None, "complete": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        stop_manifold(proc)
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps(result), flush=True)
    return 0 if result.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
