"""STOMP 1.2 throughput: 64-byte bodies, one publisher connection, one subscriber connection.

A raw-socket load generator (asyncio streams, uvloop when available): SEND frames are encoded
once up front and written in batches; the subscriber only counts frame terminators (NUL octets:
the 64-byte bodies contain none), so the generator spends little CPU and the broker is what is
measured. At most --window messages are published and not yet received (end-to-end flow control,
so no broker is pushed into unbounded queueing). Destination: a fresh ``/queue/<name>``;
subscription ``ack:auto`` (or ``--ack client-individual`` with ``prefetch-count``, acking every
message). A warm-up of --warmup messages runs first and is not timed.

With ``--port`` it measures a broker that is already running (Manifold, RabbitMQ's STOMP plugin:
anything speaking STOMP 1.2 with guest/guest); without, it starts ``manifold serve`` on a free
loopback port, measures, and stops it. Prints one JSON object on stdout, e.g.

    {"protocol": "stomp", "messages": 50000, "received": 50000, "seconds": 1.2,
     "msgs_per_s": 41000.0, "complete": true, "broker": "manifold"}

    .venv/bin/python benchmarks/stomp_throughput.py                       # Manifold
    .venv/bin/python benchmarks/stomp_throughput.py --host 127.0.0.1 --port 61613
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
import tempfile
import time
from benchkit import free_port, install_uvloop, start_manifold, stop_manifold  # noqa: E402


def connect_frame(login: str, passcode: str, vhost: str) -> bytes:
    return (f"CONNECT\naccept-version:1.2\nhost:{vhost}\nlogin:{login}\npasscode:{passcode}\n"
            "heart-beat:0,0\n\n\x00").encode()


async def _read_frame(reader: asyncio.StreamReader, timeout: float) -> bytes:
    data = await asyncio.wait_for(reader.readuntil(b"\x00"), timeout)
    return data.lstrip(b"\r\n")


async def _open(args: argparse.Namespace) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), 10)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(connect_frame(args.login, args.passcode, args.vhost))
    frame = await _read_frame(reader, 10)
    if not frame.startswith(b"CONNECTED"):
        raise RuntimeError(f"CONNECT refused: {frame[:300]!r}")
    return reader, writer


_ACK_ID = re.compile(rb"\nack:([^\n]*)\n")


async def run(args: argparse.Namespace) -> dict:
    queue_name = f"stomp-bench-{os.getpid()}-{int(time.time() * 1000)}"
    sub_r, sub_w = await _open(args)
    pub_r, pub_w = await _open(args)
    sub = (f"SUBSCRIBE\nid:0\ndestination:/queue/{queue_name}\nack:{args.ack}\n"
           + (f"prefetch-count:{args.window}\n" if args.ack != "auto" else "")
           + "receipt:sub\n\n\x00").encode()
    sub_w.write(sub)
    frame = await _read_frame(sub_r, 10)
    if not frame.startswith(b"RECEIPT"):
        raise RuntimeError(f"SUBSCRIBE refused: {frame[:300]!r}")

    body = b"x" * args.size
    send = (f"SEND\ndestination:/queue/{queue_name}\ncontent-length:{len(body)}\n\n").encode() \
        + body + b"\x00"
    total = args.warmup + args.messages
    received = 0
    progress = asyncio.Event()
    done = asyncio.Event()
    ack_client = args.ack != "auto"

    async def consume() -> None:
        nonlocal received
        tail = b""
        while received < total:
            data = await sub_r.read(1 << 18)
            if not data:
                raise RuntimeError("subscriber connection closed by the broker")
            received += data.count(b"\x00")
            if ack_client:
                # ack every message: find the ack ids (a header may straddle two reads)
                chunk = tail + data
                cut = chunk.rfind(b"\x00") + 1
                ids = _ACK_ID.findall(chunk[:cut])
                tail = chunk[cut:]
                if ids:
                    sub_w.write(b"".join(b"ACK\nid:" + i + b"\n\n\x00" for i in ids))
            progress.set()
        done.set()

    async def drain_publisher() -> None:
        while True:
            data = await pub_r.read(65536)
            if not data:
                return
            if b"ERROR" in data:
                raise RuntimeError(f"broker error on publisher: {data[:300]!r}")

    consumer = asyncio.ensure_future(consume())
    drainer = asyncio.ensure_future(drain_publisher())
    batch = args.batch

    async def publish(count: int, upto_received: int) -> None:
        sent = 0
        base = upto_received
        while sent < count:
            while sent - (received - base) >= args.window:
                progress.clear()
                await asyncio.wait_for(progress.wait(), args.idle_timeout)
                if consumer.done():
                    consumer.result()
            n = min(batch, count - sent, args.window - (sent - (received - base)))
            pub_w.write(send * n)
            sent += n
            await pub_w.drain()

    try:
        await publish(args.warmup, 0)
        while received < args.warmup:
            progress.clear()
            await asyncio.wait_for(progress.wait(), args.idle_timeout)
        start = time.perf_counter()
        await publish(args.messages, args.warmup)
        await asyncio.wait_for(done.wait(), args.idle_timeout)
        seconds = time.perf_counter() - start
        complete = True
    except asyncio.TimeoutError:
        seconds = time.perf_counter() - start if "start" in locals() else 0.0
        complete = False
    finally:
        consumer.cancel()
        drainer.cancel()
        for w in (sub_w, pub_w):
            try:
                w.write(b"DISCONNECT\n\n\x00")
                w.close()
            except Exception:
                pass
    timed = max(0, received - args.warmup)
    return {"protocol": "stomp", "version": "1.2", "ack": args.ack, "size": args.size,
            "messages": args.messages, "received": timed, "seconds": round(seconds, 4),
            "msgs_per_s": round(timed / seconds, 1) if seconds > 0 else 0.0,
            "complete": complete and timed >= args.messages}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None,
                   help="broker to measure; default: start Manifold on a free port")
    p.add_argument("--messages", type=int, default=50000)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--size", type=int, default=64, help="body bytes (default 64)")
    p.add_argument("--window", type=int, default=2000,
                   help="most messages published and not yet received")
    p.add_argument("--batch", type=int, default=100, help="SEND frames per write")
    p.add_argument("--ack", choices=("auto", "client-individual"), default="auto")
    p.add_argument("--login", default="guest")
    p.add_argument("--passcode", default="guest")
    p.add_argument("--vhost", default="/")
    p.add_argument("--idle-timeout", type=float, default=10.0,
                   help="give up when nothing arrives for this long")
    p.add_argument("--broker", default=None, help="name printed in the JSON")
    args = p.parse_args(argv)
    install_uvloop()
    proc = None
    name = args.broker or ("manifold" if args.port is None else f"{args.host}:{args.port}")
    tmp = tempfile.TemporaryDirectory()
    if args.port is None:
        args.port = free_port()
        proc = start_manifold("stomp", args.port, os.path.join(tmp.name, "data"))
    try:
        try:
            result = asyncio.run(asyncio.wait_for(run(args), 300))
        except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
            result = {"protocol": "stomp", "error": str(exc), "complete": False}
        result["broker"] = name
        print(json.dumps(result), flush=True)
    finally:
        stop_manifold(proc)
        tmp.cleanup()
    return 0 if result.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
