"""End-to-end latency at a fixed rate: p50 / p99 / max, Manifold side by side with its peers.

For each case (AMQP, MQTT 3.1.1 QoS 0 and QoS 1, MQTT 5.0 QoS 1, STOMP) and each broker that
speaks it, one publisher connection and one consumer connection (the raw-socket clients of the
throughput generators) exchange 64-byte messages at a paced ``--rate`` (default 5,000 msg/s).
Each message carries the time it was written, ``<ts:NANOSECONDS>`` padded to 64 bytes; the
consumer finds those stamps in what it reads and records now - stamp. Publisher and consumer are
in the same process, so both ends read the same clock. A second of warm-up is not recorded.

Pacing: the publisher wakes on the event loop's timer (1 ms resolution), writes the messages that
are due by then (about 5 at 5,000 msg/s), each stamped when written. So a sample is what the
broker, the loopback network and the consumer's event loop add, not the pacing.

    .venv/bin/python benchmarks/latency.py                             # every case and broker
    .venv/bin/python benchmarks/latency.py --cases amqp,mqtt-qos1 --peers mosquitto --seconds 10

Brokers are started by benchmarks/peers.py (free loopback ports, temporary directories) and
stopped at the end. Prints a Markdown table and writes it to benchmarks/results/latency.md (and
latency.json); a run that loses messages or stalls is reported as failed with the reason.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import amqp_throughput as amqp  # noqa: E402
import gen_mqtt  # noqa: E402
import peers as peers_mod  # noqa: E402
import stomp_throughput as stomp  # noqa: E402
from benchkit import install_uvloop, write_report  # noqa: E402
from pamqp import commands  # noqa: E402
from pamqp import frame as pframe  # noqa: E402

STAMP = re.compile(rb"<ts:(\d{19})>")

#: case -> (title, protocol, peers that speak it, options)
CASES = {
    "amqp": ("AMQP 0-9-1, transient, no-ack", "amqp", ("rabbitmq",), {}),
    "mqtt-qos0": ("MQTT 3.1.1 QoS 0", "mqtt", ("mosquitto", "rabbitmq"), {"qos": 0}),
    "mqtt-qos1": ("MQTT 3.1.1 QoS 1", "mqtt", ("mosquitto", "rabbitmq"), {"qos": 1}),
    "mqtt5-qos1": ("MQTT 5.0 QoS 1", "mqtt", ("mosquitto",), {"qos": 1, "version": 5}),
    "stomp": ("STOMP 1.2, ack auto", "stomp", ("rabbitmq",), {}),
}


def stamped(size: int) -> bytes:
    """A 64-byte (or ``size``) body holding the current monotonic time in nanoseconds."""
    stamp = b"<ts:%019d>" % time.perf_counter_ns()
    return stamp + b"x" * (size - len(stamp))


class Samples:
    """Latencies found in a byte stream; stamps may straddle two reads."""

    def __init__(self) -> None:
        self.tail = b""
        self.values: list[int] = []
        self.recording = False
        self.seen = 0
        self.progress = asyncio.Event()

    def feed(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        chunk = self.tail + data
        last_end = 0
        for m in STAMP.finditer(chunk):
            self.seen += 1
            if self.recording:
                self.values.append(now - int(m.group(1)))
            last_end = m.end()
        # keep what could be the start of a stamp cut by the read
        self.tail = chunk[max(last_end, len(chunk) - 23):]
        self.progress.set()


# ------------------------------------------------------------------------ protocol clients
# Each *_pair connects a consumer (its reads fed to ``samples``) and a publisher, and returns
# (write(bodies): one message per body, close()).
async def amqp_pair(host: str, port: int, samples: Samples, opts: dict, timeout: float):
    args = argparse.Namespace(host=host, port=port, user="guest", password="guest", vhost="/",
                              timeout=timeout)
    progress = asyncio.Event()

    class Consumer(amqp.Client):
        def data_received(self, data: bytes) -> None:
            samples.feed(data)
            super().data_received(data)

    queue = f"latency-{time.time_ns()}"
    sub = await amqp.open_client(args, progress, client_class=Consumer)
    sub.transport.write(pframe.marshal(commands.Queue.Declare(queue=queue, auto_delete=True), 1))
    await amqp.expect(sub, commands.Queue.DeclareOk, timeout)
    sub.transport.write(pframe.marshal(commands.Basic.Consume(
        queue=queue, consumer_tag="latency", no_ack=True), 1))
    await amqp.expect(sub, commands.Basic.ConsumeOk, timeout)
    pub = await amqp.open_client(args, progress)

    def write(bodies: list[bytes]) -> None:
        pub.transport.write(b"".join(amqp.publish_frames(queue, b) for b in bodies))

    def close() -> None:
        for c in (pub, sub):
            c.transport.close()
    return write, close


async def mqtt_pair(host: str, port: int, samples: Samples, opts: dict, timeout: float):
    qos, version = opts.get("qos", 0), opts.get("version", 4)
    progress = asyncio.Event()
    topic = f"latency/{time.time_ns()}".encode()

    class Consumer(gen_mqtt.MqttReader):
        def data_received(self, data: bytes) -> None:
            samples.feed(data)
            super().data_received(data)

    loop = asyncio.get_running_loop()
    _, sub = await asyncio.wait_for(loop.create_connection(lambda: Consumer(progress), host,
                                                           port), timeout)
    sub.transport.write(gen_mqtt.connect_frame(f"lat-sub-{time.time_ns()}", version=version))
    reply = await asyncio.wait_for(sub.control.get(), timeout)
    if not reply or reply[0] >> 4 != 2:
        raise RuntimeError(f"no CONNACK: {reply!r}")
    sub.transport.write(gen_mqtt.subscribe_frame(1, topic, qos, version))
    reply = await asyncio.wait_for(sub.control.get(), timeout)
    if not reply or reply[0] >> 4 != 9 or reply[-1] >= 0x80:
        raise RuntimeError(f"SUBSCRIBE refused: {reply!r}")
    pub = await gen_mqtt.open_client(host, port, f"lat-pub-{time.time_ns()}", progress, timeout,
                                     version)
    pid = 0

    def write(bodies: list[bytes]) -> None:
        nonlocal pid
        frames = []
        for body in bodies:
            if qos:
                pid = pid % 65535 + 1
            frames.append(gen_mqtt.publish_frame(topic, body, qos, pid, version))
        pub.transport.write(b"".join(frames))

    def close() -> None:
        for c in (pub, sub):
            c.transport.write(gen_mqtt.DISCONNECT)
            c.transport.close()
    return write, close


async def stomp_pair(host: str, port: int, samples: Samples, opts: dict, timeout: float):
    args = argparse.Namespace(host=host, port=port, login="guest", passcode="guest", vhost="/")
    sub_r, sub_w = await stomp._open(args)
    pub_r, pub_w = await stomp._open(args)
    dest = f"/queue/latency-{time.time_ns()}"
    sub_w.write(f"SUBSCRIBE\nid:0\ndestination:{dest}\nack:auto\nreceipt:s\n\n\x00".encode())
    frame = await stomp._read_frame(sub_r, timeout)
    if not frame.startswith(b"RECEIPT"):
        raise RuntimeError(f"SUBSCRIBE refused: {frame[:200]!r}")

    async def read() -> None:
        while True:
            data = await sub_r.read(1 << 16)
            if not data:
                return
            samples.feed(data)

    reader = asyncio.ensure_future(read())
    head = f"SEND\ndestination:{dest}\ncontent-length:".encode()

    def write(bodies: list[bytes]) -> None:
        pub_w.write(b"".join(head + b"%d\n\n" % len(b) + b + b"\x00" for b in bodies))

    def close() -> None:
        reader.cancel()
        for w in (sub_w, pub_w):
            w.close()
    return write, close


PAIRS = {"amqp": amqp_pair, "mqtt": mqtt_pair, "stomp": stomp_pair}


async def measure(protocol: str, host: str, port: int, opts: dict, rate: float, seconds: float,
                  warmup: float, size: int, timeout: float) -> dict:
    samples = Samples()
    write, close = await PAIRS[protocol](host, port, samples, opts, timeout)
    sent = 0
    try:
        for recording, duration in ((False, warmup), (True, seconds)):
            samples.recording = recording
            base_sent = sent
            start = time.perf_counter()
            interval = 1.0 / rate
            while True:
                now = time.perf_counter()
                due = min(int((now - start) * rate) + 1, int(duration * rate)) - (sent - base_sent)
                if due > 0:
                    write([stamped(size) for _ in range(due)])
                    sent += due
                if sent - base_sent >= int(duration * rate):
                    break
                next_at = start + (sent - base_sent) * interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            # wait for the stragglers of this phase
            deadline = time.monotonic() + timeout
            while samples.seen < sent and time.monotonic() < deadline:
                samples.progress.clear()
                try:
                    await asyncio.wait_for(samples.progress.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
        lost = sent - samples.seen
        wall = time.perf_counter() - start
    finally:
        close()
    values = sorted(samples.values)
    if not values:
        return {"error": "no message arrived"}

    def pct(p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] / 1000.0

    result = {"samples": len(values), "sent": sent, "lost": lost,
              "p50_us": round(pct(0.50), 1), "p99_us": round(pct(0.99), 1),
              "p999_us": round(pct(0.999), 1), "max_us": round(values[-1] / 1000.0, 1),
              "achieved_rate": round(len(values) / wall, 1)}
    if lost:
        result["error"] = f"{lost} of {sent} messages did not arrive within {timeout:.0f} s"
    return result


def fmt_us(v) -> str:
    if v is None:
        return "n/a"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--peers", default="rabbitmq,mosquitto",
                   help="peers to measure besides Manifold (default rabbitmq,mosquitto)")
    p.add_argument("--rate", type=float, default=5000.0, help="messages per second (5000)")
    p.add_argument("--seconds", type=float, default=5.0, help="recorded seconds per run (5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first (1)")
    p.add_argument("--size", type=int, default=64, help="body bytes (64)")
    p.add_argument("--timeout", type=float, default=10.0, help="wait for stragglers, s")
    p.add_argument("--output", default=str(HERE / "results" / "latency.md"))
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}")
    wanted = [x.strip() for x in args.peers.split(",") if x.strip()]
    targets = ["manifold"] + sorted({x for c in cases for x in CASES[c][2] if x in wanted})
    install_uvloop()
    started = datetime.now(timezone.utc)
    load_before = peers_mod.os.getloadavg()
    rows, results = [], []
    with peers_mod.running(targets, log=lambda s: print(s, file=sys.stderr, flush=True)) as up:
        versions = [pr.version for pr in up.values() if pr.version]
        for key in cases:
            title, protocol, peers, opts = CASES[key]
            for name in ["manifold"] + [x for x in peers if x in wanted]:
                peer = up[name]
                if not peer.serves(protocol):
                    res = {"error": peer.why_not(protocol).splitlines()[0]}
                else:
                    try:
                        res = asyncio.run(asyncio.wait_for(measure(
                            protocol, peers_mod.HOST, peer.ports[protocol], opts, args.rate,
                            args.seconds, args.warmup, args.size, args.timeout),
                            args.seconds + args.warmup + 3 * args.timeout + 30))
                    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
                        res = {"error": f"{type(exc).__name__}: {exc}"}
                res.update(case=key, broker=name)
                results.append(res)
                print(json.dumps(res), file=sys.stderr, flush=True)
                label = compare_label(name)
                if "p50_us" in res and not res.get("error"):
                    rows.append(f"| {title} | {label} | {res['achieved_rate']:,.0f} | "
                                f"{fmt_us(res['p50_us'])} | {fmt_us(res['p99_us'])} | "
                                f"{fmt_us(res['p999_us'])} | {fmt_us(res['max_us'])} |")
                else:
                    rows.append(f"| {title} | {label} | n/a | n/a | n/a | n/a | "
                                f"{res.get('error', '?')[:80]} |")
    load_after = peers_mod.os.getloadavg()
    md = "\n".join([
        f"Latency measured {started:%Y-%m-%d %H:%M} UTC, {args.rate:,.0f} msg/s for "
        f"{args.seconds:g} s per run ({args.warmup:g} s warm-up), {args.size}-byte bodies, one "
        f"publisher and one consumer; 1-minute load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after. Versions: {'; '.join(versions)}.",
        "",
        "| Benchmark | Broker | msg/s recorded | p50 | p99 | p99.9 | max |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Command: `python benchmarks/latency.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
    ])
    write_report(args.output, md, results)
    return 0


def compare_label(name: str) -> str:
    return {"manifold": "Manifold", "rabbitmq": "RabbitMQ", "mosquitto": "Mosquitto"}.get(
        name, name)


if __name__ == "__main__":
    sys.exit(main())
