"""Pieces every load generator shares: free ports, a Manifold started on the spot, CPU time of a
process, and the asyncio.Protocol base the raw-socket generators read with."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from peers import free_port  # noqa: F401  (one port picker, shared by the throughput scripts)

PROTOCOLS = ("amqp", "mqtt", "stomp")


def start_manifold(protocol: str, port: int, data_dir: str) -> subprocess.Popen:
    """``manifold serve`` from this venv with ``protocol`` on ``port`` (the others on free ports);
    returns once that port accepts connections (15 s at most)."""
    exe = Path(sys.executable).parent / "manifold"
    cmd = [str(exe), "serve", "--bind", "127.0.0.1", "--data-dir", data_dir,
           "--log-level", "warning",
           # off: their fixed default ports may be taken by another broker on the machine
           "--http-port", "0", "--management-port", "0", "--ws-port", "0"]
    for name in PROTOCOLS:
        cmd += [f"--{name}-port", str(port if name == protocol else free_port())]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"manifold exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"manifold did not open its {protocol.upper()} port within 15 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class GeneratorProtocol(asyncio.Protocol):
    """A generator's connection: ``control`` gets the frames the handshake waits for (None when
    the connection is lost), ``progress`` is set whenever something arrived, ``can_write``
    follows the transport's flow control. Subclasses implement ``data_received``."""

    def __init__(self, progress: asyncio.Event):
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.control: asyncio.Queue = asyncio.Queue()
        self.progress = progress
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


def install_uvloop() -> None:
    """Generators run on uvloop when it is there, like the broker."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


async def warm_then_measure(phase, args, result: dict) -> int:
    """Run ``phase(n, deadline) -> (received, t_first, t_last)`` untimed for ``args.warmup``
    messages, then timed for ``args.messages``; fill ``result`` with the figures."""
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
    return received


def stop_manifold(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def wait_for_progress(progress: asyncio.Event, timeout_s: float = 0.5) -> None:
    """Sleep until the connection reports something new, or ``timeout_s`` passes."""
    progress.clear()
    try:
        await asyncio.wait_for(progress.wait(), timeout_s)
    except asyncio.TimeoutError:
        pass


def write_report(output: str, markdown: str, data: Any) -> Path:
    """Print the Markdown report and write it to ``output``, the raw results beside it as JSON
    (same name, ``.json``). Returns the report's path."""
    print(markdown, flush=True)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown + "\n")
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    return out
