"""Data larger than memory: a persistent backlog in a durable queue, and a stream with retention.

    .venv/bin/python benchmarks/backlog.py queue --messages 1000000 [--peers rabbitmq,rabbitmq-lazy]
    .venv/bin/python benchmarks/backlog.py stream --gib 2 --retention-mib 256 [--reader none|behind]
    .venv/bin/python benchmarks/backlog.py stream-core --records 40000 --read-delay-ms 5

``queue``: for each broker (Manifold, and RabbitMQ 3.10 classic queues when installed: default
and ``x-queue-mode: lazy``), publish ``--messages`` persistent 64-byte messages into one durable
queue with publisher confirms (pipelined windows), then report the broker's RSS growth per
waiting message, the publish rate, the time from ``kill -9`` to a restarted broker that reports
the whole backlog and delivers its first message, the RSS after that recovery, and the drain
rate of the recovered backlog (read from disk). RSS is the broker's whole process group
(``/proc/<pid>/status`` VmRSS; RabbitMQ's shell wrapper plus beam.smp).

``stream``: publish ``--gib`` of 4 KiB records into a stream with ``x-max-length-bytes`` set to
``--retention-mib``, while a reader reads from ``first``; report the publish rate, the reader's
rate, the broker's peak RSS and the data directory's size at the end.

``stream-core``: in this process, a writer's publish rate into a stream alone and while a reader
from ``first`` reads what is on disk, every ``pread`` made slower by ``--read-delay-ms`` (a cold
disk): whether a reader behind the tail slows the writer.

CPU heavy: run it by hand on a quiet machine, never in CI. Results go to stdout as Markdown.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amqp_throughput import expect, open_client, publish_frames  # noqa: E402
from benchkit import wait_for_progress  # noqa: E402
from pamqp import commands  # noqa: E402
from pamqp import frame as pframe  # noqa: E402
from peers import HOST, ManifoldPeer, Peer, RabbitPeer, port_open  # noqa: E402

WINDOW = 5000  # publishes in flight before waiting for their confirms


def group_rss(pid: int) -> int:
    """Resident bytes of every process in the process group ``pid`` leads."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pid:  # pgrp
                continue
            with open(f"/proc/{entry}/status") as fh:
                match = re.search(r"VmRSS:\s+(\d+) kB", fh.read())
            total += int(match.group(1)) * 1024 if match else 0
        except (OSError, IndexError, ValueError):
            continue
    return total


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def url(peer: Peer) -> str:
    return f"amqp://guest:guest@{HOST}:{peer.ports['amqp']}/"


class BenchManifold(ManifoldPeer):
    def environment(self) -> dict[str, str]:
        env = super().environment()
        # The HTTP listeners are not measured here; port 0 keeps them out of the way.
        # (Nor is WebSocket: a fixed port could be taken by another broker between restarts.)
        env.update(MANIFOLD_HTTP_PORT="0", MANIFOLD_MANAGEMENT_PORT="0",
                   MANIFOLD_WEBSOCKET_PORT="0")
        return env


def restart(peer: Peer, cmd: list[str], timeout_s: float = 120) -> float:
    """Start ``cmd`` again in the peer's work directory (same data); seconds until AMQP listens."""
    started = time.monotonic()
    log = open(peer.log_path, "ab")
    peer.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=peer.workdir,
                                 env=peer.environment(), start_new_session=True)
    log.close()
    while not port_open(peer.ports["amqp"]):
        if time.monotonic() - started > timeout_s or peer.proc.poll() is not None:
            raise RuntimeError(f"{peer.name} did not come back")
        time.sleep(0.05)
    return time.monotonic() - started


def kill9(peer: Peer) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(peer.proc.pid, signal.SIGKILL)
    peer.proc.wait(30)
    if isinstance(peer, RabbitPeer):
        peer.after_stop()  # its epmd


async def connect(peer: Peer, manual_ack: bool = False):
    """A raw-socket AMQP client (benchmarks/amqp_throughput.py's), so the broker is measured,
    not a Python client library."""
    progress = asyncio.Event()
    args = argparse.Namespace(host=HOST, port=peer.ports["amqp"], user="guest",
                              password="guest", vhost="/", timeout=60)
    return await open_client(args, progress, manual_ack), progress


async def publish(peer: Peer, queue: str, count: int, body: bytes, arguments: dict,
                  persistent: bool = True) -> float:
    """Publish with confirms, at most WINDOW unconfirmed; returns confirmed messages/second."""
    client, progress = await connect(peer)
    client.transport.write(pframe.marshal(commands.Confirm.Select(), 1))
    await expect(client, commands.Confirm.SelectOk, 60)
    client.transport.write(pframe.marshal(commands.Queue.Declare(
        queue=queue, durable=True, arguments=arguments), 1))
    await expect(client, commands.Queue.DeclareOk, 60)
    frames = publish_frames(queue, body, persistent)
    started = time.monotonic()
    sent = 0
    while client.confirmed < count:
        room = min(WINDOW - (sent - client.confirmed), count - sent)
        if room >= WINDOW // 4 or (room > 0 and sent + room == count):
            client.transport.write(frames * room)
            sent += room
        await next_turn(peer, client, progress)
    rate = count / (time.monotonic() - started)
    client.transport.close()
    return rate


async def next_turn(peer: Peer, client: Any, progress: asyncio.Event) -> None:
    """Wait for the client's progress, at most 10 ms (confirms do not set it: poll); a closed
    connection ends the run."""
    await wait_for_progress(progress, 0.01)
    if client.closed.done():
        raise RuntimeError(f"{peer.name} closed the connection")


async def first_delivery(peer: Peer, queue: str, expected: int, deadline_s: float) -> None:
    """Wait until the broker reports the whole backlog and hands out its first message."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            conn = await aio_pika.connect(url(peer))
            break
        except Exception:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)
    async with conn:
        channel = await conn.channel()
        while True:
            declared = await channel.declare_queue(queue, passive=True)
            if declared.declaration_result.message_count >= expected:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"{peer.name}: only {declared.declaration_result.message_count}"
                                   f" of {expected} messages after recovery")
            await asyncio.sleep(0.05)
        message = await declared.get(no_ack=False, timeout=deadline_s)
        await message.nack(requeue=True)


async def drain(peer: Peer, queue: str, count: int) -> float:
    """Consume with manual acks (one multiple ack per read), prefetch 1000; messages/second."""
    client, progress = await connect(peer, manual_ack=True)
    client.transport.write(pframe.marshal(commands.Basic.Qos(prefetch_count=1000), 1))
    await expect(client, commands.Basic.QosOk, 60)
    client.transport.write(pframe.marshal(commands.Basic.Consume(queue=queue), 1))
    await expect(client, commands.Basic.ConsumeOk, 60)
    started = time.monotonic()
    while client.deliveries < count:
        await next_turn(peer, client, progress)
    rate = count / (time.monotonic() - started)
    client.transport.close()
    return rate


def make_peer(name: str) -> tuple[Peer, dict]:
    if name == "manifold":
        return BenchManifold(), {}
    if name == "rabbitmq":
        return RabbitPeer(), {}
    if name == "rabbitmq-lazy":
        peer = RabbitPeer()
        peer.name = "rabbitmq-lazy"
        return peer, {"x-queue-mode": "lazy"}
    raise SystemExit(f"unknown broker {name}")


async def queue_bench(name: str, count: int) -> dict:
    peer, arguments = make_peer(name)
    if not peer.start():
        return {"broker": name, "error": (peer.error or "").splitlines()[0]}
    cmd = peer.proc.args
    try:
        await asyncio.sleep(1.0)
        before = group_rss(peer.proc.pid)
        rate = await publish(peer, "backlog", count, b"m" * 64, arguments)
        await asyncio.sleep(2.0)  # let the broker settle (RabbitMQ pages lazily)
        after = group_rss(peer.proc.pid)
        kill9(peer)
        killed = time.monotonic()
        restart(peer, cmd)
        await first_delivery(peer, "backlog", count, 300)
        recovery = time.monotonic() - killed
        recovered_rss = group_rss(peer.proc.pid)
        peer.stop()  # a clean stop (SIGTERM) and start: Manifold writes its index files
        stopped = time.monotonic()
        restart(peer, cmd)
        await first_delivery(peer, "backlog", count, 300)
        clean_restart = time.monotonic() - stopped
        drain_rate = await drain(peer, "backlog", count)
        return {"broker": peer.name, "version": peer.version, "messages": count,
                "rss_before": before, "rss_after": after,
                "bytes_per_message": (after - before) / count, "publish_rate": rate,
                "recovery_s": recovery, "rss_recovered": recovered_rss,
                "clean_restart_s": clean_restart,
                "drain_rate": drain_rate}
    finally:
        peer.stop()
        peer.cleanup()


async def stream_bench(gib: float, retention_mib: int, reader_from: str = "first") -> dict:
    """``reader_from``: ``first`` (a reader from first of the empty stream, so at the tail),
    ``none`` (the writer alone), ``behind`` (the retention's worth published first, then a
    reader from first starts with the timed writer: it reads from disk until it catches up)."""
    peer = BenchManifold()
    if not peer.start():
        raise SystemExit(peer.error)
    size = 4096
    total = int(gib * (1 << 30)) // size
    args = {"x-queue-type": "stream", "x-max-length-bytes": retention_mib << 20}
    try:
        declare, _ = await connect(peer)
        declare.transport.write(pframe.marshal(commands.Queue.Declare(
            queue="events", durable=True, arguments=args), 1))
        await expect(declare, commands.Queue.DeclareOk, 60)
        if reader_from == "behind":
            await publish(peer, "events", (retention_mib << 20) // size, b"s" * size, args,
                          persistent=False)
        reader, _ = await connect(peer, manual_ack=True)
        if reader_from != "none":
            reader.transport.write(pframe.marshal(commands.Basic.Qos(prefetch_count=1000), 1))
            await expect(reader, commands.Basic.QosOk, 60)
            reader.transport.write(pframe.marshal(commands.Basic.Consume(
                queue="events", arguments={"x-stream-offset": "first"}), 1))
            await expect(reader, commands.Basic.ConsumeOk, 60)
        peak = group_rss(peer.proc.pid)
        sampler = asyncio.create_task(sample_rss(peer))
        # streams store every record (delivery mode 1 here); confirms pace the publisher
        rate = await publish(peer, "events", total, b"s" * size, args, persistent=False)
        read_during = reader.deliveries
        elapsed = total / rate
        sampler.cancel()
        peak = max(peak, PEAKS.get(peer.proc.pid, 0))
        reader.transport.close()
        # A second reader from first, now that the writer is done: everything it reads
        # (the retained 256 MiB) comes from the segment files, not from the tail cache.
        declare.transport.write(pframe.marshal(commands.Queue.Declare(
            queue="events", durable=True, passive=True), 1))
        retained = (await expect(declare, commands.Queue.DeclareOk, 60)).message_count
        late, progress = await connect(peer, manual_ack=True)
        late.transport.write(pframe.marshal(commands.Basic.Qos(prefetch_count=1000), 1))
        await expect(late, commands.Basic.QosOk, 60)
        started = time.monotonic()
        late.transport.write(pframe.marshal(commands.Basic.Consume(
            queue="events", arguments={"x-stream-offset": "first"}), 1))
        await expect(late, commands.Basic.ConsumeOk, 60)
        while late.deliveries < retained:
            await wait_for_progress(progress, 1)
            if late.closed.done():
                raise RuntimeError("the broker closed the late reader")
        late_rate = retained / (time.monotonic() - started)
        late.transport.close()
        declare.transport.close()
        data = dir_bytes(peer.workdir / "data" / "streams")
        return {"records": total, "bytes": total * size, "publish_rate": rate,
                "publish_mib_s": rate * size / (1 << 20),
                "reader_rate": read_during / elapsed, "peak_rss": peak, "stream_dir_bytes": data,
                "late_rate": late_rate, "retained": retained,
                "retention_bytes": retention_mib << 20}
    finally:
        peer.stop()
        peer.cleanup()


PEAKS: dict[int, int] = {}


async def sample_rss(peer: Peer) -> None:
    pid = peer.proc.pid
    while True:
        PEAKS[pid] = max(PEAKS.get(pid, 0), group_rss(pid))
        await asyncio.sleep(0.5)


async def core_bench(count: int, lazy: bool, data_dir: str, fsync: str, crash: bool) -> dict:
    """The broker core in this process (no network): RSS growth per waiting message once every
    write is done, and the publish rate into the core. ``crash``: end without closing the store
    (the files as ``kill -9`` leaves them: no index of the newest segment, no clean marker)."""
    from manifold.broker.core import Broker
    from manifold.broker.message import Message, Properties
    from manifold.config.settings import Settings
    from manifold.persistence.filestore import FileStore

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    broker = Broker(Settings(), store=FileStore(data_dir, fsync=fsync))
    await broker.start()
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True, arguments={"x-queue-mode": "lazy"} if lazy else None)
    props = Properties(delivery_mode=2)
    body = b"m" * 64
    before = rss()
    started = time.monotonic()
    for i in range(count):
        vhost.publish("", "q", Message("", "q", body, props))
        if i % 50_000 == 0:
            await asyncio.sleep(0)  # let the writer thread's batches complete
    rate = count / (time.monotonic() - started)
    store = broker.store
    while store._in_flight is not None or store._dirty_logs:  # every write done
        await asyncio.sleep(0.05)
    held = rss() - before
    if not crash:
        await broker.close()
    return {"messages": count, "bytes_per_message": held / count, "publish_rate": rate}


async def stream_core_bench(records: int, read_delay_ms: float, data_dir: str) -> dict:
    """The broker core in this process (no network): a writer publishes ``records`` 4 KiB
    records with confirms (awaited every 500) into a stream, once alone and once while a reader
    from ``first`` reads the records already on disk; every ``pread`` of the store takes
    ``read_delay_ms`` more (through its FileSystem seam: a disk whose reads miss the page cache).
    A read on the event loop stalls the writer for that long; one in a reader thread does not."""
    from manifold.broker.consumer import Consumer
    from manifold.broker.core import Broker
    from manifold.broker.message import Message
    from manifold.config.settings import Settings
    from manifold.persistence.filestore import FileStore
    from manifold.persistence.fs import FileSystem

    class SlowReads(FileSystem):
        def pread(self, fd: int, length: int, position: int) -> bytes:
            time.sleep(read_delay_ms / 1000)
            return super().pread(fd, length, position)

    class Counting(Consumer):
        count = 0

        def deliver(self, delivery) -> None:
            self.count += 1

    broker = Broker(Settings(), store=FileStore(data_dir, fs=SlowReads()))
    await broker.start()
    vhost = broker.vhosts["/"]
    vhost.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    body = b"s" * 4096

    async def publish() -> float:
        wait = None
        started = time.monotonic()
        for i in range(records):
            wait = vhost.publish("", "s", Message("", "", body)).wait or wait
            if i % 500 == 499:
                await wait
        await wait
        return records / (time.monotonic() - started)

    await publish()  # what the reader will read from disk
    alone = await publish()
    reader = Counting("reader", arguments={"x-stream-offset": "first"})
    vhost.consume("s", reader)
    with_reader = await publish()
    await broker.close()
    return {"alone": alone, "with_reader": with_reader,
            "reader_rate": reader.count / (records / with_reader)}


async def recover_bench(data_dir: str, fsync: str) -> dict:
    """Recover the backlog ``core`` left (run in a fresh process, so RSS starts clean)."""
    from manifold.broker.core import Broker
    from manifold.config.settings import Settings
    from manifold.persistence.filestore import FileStore

    with open("/proc/self/statm") as fh:
        base = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    broker = Broker(Settings(), store=FileStore(data_dir, fsync=fsync))
    started = time.monotonic()
    await broker.start()
    recovery = time.monotonic() - started
    with open("/proc/self/statm") as fh:
        now = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    queue = broker.vhosts["/"].queues["q"]
    result = {"messages": queue.ready_count, "cold": queue.cold_count, "recovery_s": recovery,
              "bytes_per_message": (now - base) / max(1, queue.ready_count),
              "indexed": queue.log.indexed_segments, "scanned": queue.log.scanned_segments}
    await broker.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("queue")
    q.add_argument("--messages", type=int, default=1_000_000)
    q.add_argument("--peers", default="rabbitmq,rabbitmq-lazy",
                   help="comma-separated: rabbitmq, rabbitmq-lazy (none: Manifold only)")
    q.add_argument("--without-manifold", action="store_true",
                   help="run only the peers (e.g. a long RabbitMQ run beside earlier figures)")
    c = sub.add_parser("core")
    c.add_argument("--messages", type=int, default=1_000_000)
    c.add_argument("--lazy", action="store_true")
    c.add_argument("--data-dir", default="")
    c.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    c.add_argument("--crash", action="store_true",
                   help="end without a clean close (the newest segment is scanned at recovery)")
    r = sub.add_parser("recover")
    r.add_argument("--data-dir", required=True)
    r.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    s = sub.add_parser("stream")
    s.add_argument("--gib", type=float, default=2.0)
    s.add_argument("--retention-mib", type=int, default=256)
    s.add_argument("--reader", choices=("first", "none", "behind"), default="first",
                   help="first: a reader from first of the empty stream (at the tail); none: "
                   "no reader; behind: the retention's worth published first, then a reader "
                   "from first (on disk until it catches up) while the timed writer runs")
    sc = sub.add_parser("stream-core")
    sc.add_argument("--records", type=int, default=40_000)
    sc.add_argument("--read-delay-ms", type=float, default=5.0)
    args = parser.parse_args()
    if args.what == "stream-core":
        import tempfile
        data_dir = tempfile.mkdtemp(prefix="manifold-stream-")
        try:
            r = asyncio.run(stream_core_bench(args.records, args.read_delay_ms, data_dir))
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        print(f"writer alone {r['alone']:,.0f} rec/s; with a reader from first "
              f"{r['with_reader']:,.0f} rec/s ({r['with_reader'] / r['alone']:.0%}); the reader "
              f"read {r['reader_rate']:,.0f} rec/s meanwhile (reads {args.read_delay_ms} ms slower)")
        return
    if args.what == "recover":
        r = asyncio.run(recover_bench(args.data_dir, args.fsync))
        print(f"recovered {r['messages']:,} ({r['cold']:,} in cold runs) in {r['recovery_s']:.1f}"
              f" s, {r['bytes_per_message']:.0f} B each; segments from index files "
              f"{r['indexed']}, scanned {r['scanned']}")
        return
    if args.what == "core":
        import tempfile
        data_dir = args.data_dir or tempfile.mkdtemp(prefix="manifold-backlog-")
        try:
            r = asyncio.run(core_bench(args.messages, args.lazy, data_dir, args.fsync,
                                       args.crash))
            print(f"{r['messages']:,} waiting messages: {r['bytes_per_message']:.0f} B each, "
                  f"published into the core at {r['publish_rate']:,.0f}/s", flush=True)
            for _ in range(2):  # after the core's end, then after a clean close
                subprocess.run([sys.executable, __file__, "recover", "--data-dir", data_dir,
                                "--fsync", args.fsync], check=True)
        finally:
            if not args.data_dir:
                shutil.rmtree(data_dir, ignore_errors=True)
        return
    if args.what == "queue":
        names = ["manifold"] + [p for p in args.peers.split(",") if p and p != "none"]
        if not shutil.which("rabbitmq-server") and not os.path.exists(
                "/usr/lib/rabbitmq/bin/rabbitmq-server"):
            names = ["manifold"]
        if args.without_manifold:
            names.remove("manifold")
        print("| broker | messages | RSS growth per waiting message | publish msg/s | "
              "kill -9 to first delivery | RSS before kill / after recovery | "
              "clean restart to first delivery | drain msg/s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name in names:
            r = asyncio.run(queue_bench(name, args.messages))
            if "error" in r:
                print(f"| {name} | n/a: {r['error']} ||||||")
                continue
            print(f"| {r['broker']} {r['version']} | {r['messages']:,} | "
                  f"{r['bytes_per_message']:.0f} B | {r['publish_rate']:,.0f} | "
                  f"{r['recovery_s']:.1f} s | {r['rss_after'] / 1e6:.0f} / "
                  f"{r['rss_recovered'] / 1e6:.0f} MB | {r['clean_restart_s']:.1f} s | "
                  f"{r['drain_rate']:,.0f} |", flush=True)
    else:
        r = asyncio.run(stream_bench(args.gib, args.retention_mib, args.reader))
        print("| measure | figure |\n|---|---:|")
        print(f"| records published (4 KiB) | {r['records']:,} ({r['bytes'] / (1 << 30):.1f} GiB) |")
        print(f"| publish rate | {r['publish_rate']:,.0f} rec/s ({r['publish_mib_s']:.0f} MiB/s) |")
        print(f"| reader from first ({args.reader}), while the writer runs | "
              f"{r['reader_rate']:,.0f} rec/s |")
        print(f"| a reader from first after the writer ({r['retained']:,} retained records, from "
              f"disk) | {r['late_rate']:,.0f} rec/s ({r['late_rate'] * 4096 / (1 << 20):.0f} MiB/s) |")
        print(f"| broker peak RSS | {r['peak_rss'] / 1e6:.0f} MB |")
        print(f"| stream directory at the end (retention {r['retention_bytes'] >> 20} MiB) | "
              f"{r['stream_dir_bytes'] / (1 << 20):.0f} MiB |")


if __name__ == "__main__":
    main()
