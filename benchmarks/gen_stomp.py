"""Minimal raw-socket STOMP 1.2 load generator: SEND -> MESSAGE messages per second.

One consumer connection (SUBSCRIBE ack:auto, or client-individual with --ack) and one producer
connection sending pre-encoded SEND frames (no receipts) to a fresh destination (default
/queue/manifold-bench-<tag>, which RabbitMQ and Manifold both map to a queue of that name). The
consumer only splits frames at their NUL terminator and counts MESSAGE frames, so the broker is
what is measured. At most --window messages are sent and not yet consumed (end-to-end flow
control). The clock runs from the first timed SEND to the last MESSAGE; --warmup messages run
first, untimed.

Prints one JSON object on stdout, e.g.
    {"protocol": "stomp", "messages": 20000, "received": 20000, "seconds": 0.9,
     "msgs_per_s": 22000.0, "complete": true}
Exit status 0 when every message arrived, 1 otherwise.

    .venv/bin/python benchmarks/gen_stomp.py --host 127.0.0.1 --port 61613 --messages 20000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time


def frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = command + "\n" + "".join(f"{k}:{v}\n" for k, v in headers.items()) + "\n"
    return head.encode() + body + b"\x00"


class StompReader(asyncio.Protocol):
    """Splits frames at NUL; counts MESSAGE frames (acks them if asked); queues the others."""

    def __init__(self, progress: asyncio.Event, ack_individual: bool = False):
        self.buffer = b""
        self.transport = None
        self.messages = 0
        self.control: asyncio.Queue = asyncio.Queue()
        self.progress = progress
        self.ack_individual = ack_individual
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
        # Bodies here never contain NUL (hex payloads), so NUL always ends a frame.
        parts = (self.buffer + data).split(b"\x00")
        self.buffer = parts.pop()
        count = 0
        acks = []
        for part in parts:
            part = part.lstrip(b"\r\n")  # heart-beat EOLs between frames
            if part.startswith(b"MESSAGE\n") or part.startswith(b"MESSAGE\r\n"):
                count += 1
                if self.ack_individual:
                    start = part.find(b"\nack:")
                    if start >= 0:
                        end = part.find(b"\n", start + 5)
                        acks.append(b"ACK\nid:" + part[start + 5:end] + b"\n\n\x00")
            elif part:
                self.control.put_nowait(part)
        if acks:
            self.transport.write(b"".join(acks))
        if count:
            self.messages += count
            self.progress.set()


async def open_client(args, progress, ack_individual=False) -> StompReader:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: StompReader(progress, ack_individual), args.host,
                               args.port), args.timeout)
    proto.transport.write(frame("CONNECT", {"accept-version": "1.2", "host": args.vhost,
                                            "login": args.user, "passcode": args.password,
                                            "heart-beat": "0,0"}))
    reply = await asyncio.wait_for(proto.control.get(), args.timeout)
    if not reply or not reply.startswith(b"CONNECTED"):
        raise RuntimeError(f"no CONNECTED from {args.host}:{args.port}: {reply!r:.300}")
    return proto


async def run(args) -> dict:
    tag = f"{os.getpid()}-{int(time.time() * 1000) % 100000000}"
    destination = args.destination or f"/queue/manifold-bench-{tag}"
    progress = asyncio.Event()
    result = {"protocol": "stomp", "destination": destination, "ack": args.ack,
              "messages": args.messages, "received": 0, "payload_bytes": args.size,
              "window": args.window, "seconds": None, "msgs_per_s": None, "complete": False}
    individual = args.ack == "client-individual"
    sub = await open_client(args, progress, individual)
    sub.transport.write(frame("SUBSCRIBE", {"id": "0", "destination": destination,
                                            "ack": args.ack, "receipt": "sub-0"}))
    reply = await asyncio.wait_for(sub.control.get(), args.timeout)
    if not reply or not reply.startswith(b"RECEIPT"):
        raise RuntimeError(f"SUBSCRIBE failed: {reply!r:.300}")
    pub = await open_client(args, progress)

    payload = os.urandom(args.size // 2 + 1).hex()[:args.size].encode()
    send = frame("SEND", {"destination": destination, "content-type": "text/plain",
                          "content-length": str(len(payload))}, payload)
    window = max(1, args.window)
    batch = max(1, args.batch)

    async def phase(count: int, deadline: float):
        base = sub.messages
        sent = 0
        t_first = time.perf_counter()
        last_seen, last_progress = 0, time.monotonic()
        while True:
            received = sub.messages - base
            if received >= count:
                break
            if sub.closed.done() or pub.closed.done():
                raise RuntimeError("the broker closed a connection")
            while not pub.control.empty():
                err = pub.control.get_nowait()
                if err and err.startswith(b"ERROR"):
                    raise RuntimeError(f"broker sent {err!r:.300}")
            now = time.monotonic()
            if received != last_seen:
                last_seen, last_progress = received, now
            if now > deadline or now - last_progress > args.idle_timeout:
                break
            allowed = min(count - sent, window - (sent - received), batch)
            if allowed > 0 and pub.can_write.is_set():
                pub.transport.write(send * allowed)
                sent += allowed
                await asyncio.sleep(0)
                continue
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return sub.messages - base, t_first, time.perf_counter()

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
            proto.transport.write(frame("DISCONNECT", {}))
            proto.transport.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=61613)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--size", type=int, default=64, help="body bytes (default 64)")
    p.add_argument("--destination", default=None, help="default /queue/manifold-bench-<tag>")
    p.add_argument("--ack", choices=("auto", "client-individual"), default="auto")
    p.add_argument("--window", type=int, default=1000,
                   help="most messages sent and not yet consumed (default 1000)")
    p.add_argument("--batch", type=int, default=100, help="frames per write (default 100)")
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
        result = {"protocol": "stomp", "messages": args.messages, "msgs_per_s": None,
                  "complete": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
