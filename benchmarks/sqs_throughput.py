"""SQS throughput with boto3: Manifold side by side with moto's server (``moto_server``).

Two phases per run, on a fresh standard queue, with the same boto3 load for every server:
- send: ``--workers`` processes, each with its own boto3 client, SendMessageBatch of 10 messages
  (``--body-bytes`` each) until ``--messages`` are in;
- receive: the same processes ReceiveMessage (MaxNumberOfMessages 10) + DeleteMessageBatch until
  the queue is empty; the run fails unless every message came out; messages handed out twice
  (to two concurrent receivers) are counted as ``duplicates``.

Servers are started here as child processes on free loopback ports and stopped afterwards:
Manifold (``manifold serve``, its defaults: durable queue, persistent messages, fsync always, so a
send is answered only after its fsync) and moto (``moto_server``, in memory). Rounds alternate
the server order; the table shows the median messages/second per phase and the ratio
Manifold / moto, plus the server's CPU time per message (from /proc).

    .venv/bin/pip install 'moto[server]'          # benchmark only, not a Manifold dependency
    .venv/bin/python benchmarks/sqs_throughput.py --messages 20000 --workers 4 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import cpu_seconds, free_port  # noqa: E402


def wait_port(proc: subprocess.Popen, port: int, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout_s} s")


def start_manifold(data_dir: str, fsync: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    exe = Path(sys.executable).parent / "manifold"
    cmd = [str(exe), "serve", "--bind", "127.0.0.1", "--data-dir", data_dir, "--log-level",
           "warning", "--http-port", str(port), "--management-port", "0"]
    for name in ("amqp", "mqtt", "stomp"):
        cmd += [f"--{name}-port", str(free_port())]
    env = {**os.environ, "MANIFOLD_PERSISTENCE_FSYNC": fsync}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_port(proc, port, "manifold")
    return proc, port


def start_moto() -> tuple[subprocess.Popen, int]:
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(proc, port, "moto_server")
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


_WORKER_CLIENTS: dict = {}  # per worker process: clients are made once, outside the timing


def worker_client(port: int):
    if port not in _WORKER_CLIENTS:
        _WORKER_CLIENTS[port] = client(port)
    return _WORKER_CLIENTS[port]


def warm_worker(port: int) -> None:
    worker_client(port).list_queues()


def client(port: int):
    import boto3
    from botocore.config import Config
    return boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="guest", aws_secret_access_key="guest",
                        config=Config(retries={"max_attempts": 1}, max_pool_connections=4))


def send_worker(args: tuple) -> int:
    port, url, count, body_bytes, worker = args
    sqs = worker_client(port)
    body = "x" * body_bytes
    sent = 0
    while sent < count:
        n = min(10, count - sent)
        result = sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": body,
             "MessageAttributes": {"w": {"DataType": "Number", "StringValue": str(worker)}}}
            for i in range(n)])
        if result.get("Failed"):
            raise RuntimeError(f"send failed: {result['Failed'][:1]}")
        sent += n
    return sent


def receive_worker(args: tuple) -> list[str]:
    port, url = args
    sqs = worker_client(port)
    received: list[str] = []
    empty = 0
    while empty < 2:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            empty += 1
            continue
        empty = 0
        received += [m["MessageId"] for m in got]
        result = sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        if result.get("Failed"):
            raise RuntimeError(f"delete failed: {result['Failed'][:1]}")
    return received


def one_run(pool, port: int, pid: int, messages: int, workers: int, body_bytes: int) -> dict:
    sqs = client(port)
    # 12 h visibility: a slow server must not see messages come back (and counted twice).
    url = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:12]}",
                           Attributes={"VisibilityTimeout": "43200"})["QueueUrl"]
    shares = [messages // workers + (1 if i < messages % workers else 0) for i in range(workers)]
    cpu0 = cpu_seconds(pid)
    started = time.perf_counter()
    sent = sum(pool.map(send_worker, [(port, url, s, body_bytes, i)
                                      for i, s in enumerate(shares)]))
    send_s = time.perf_counter() - started
    cpu1 = cpu_seconds(pid)
    started = time.perf_counter()
    ids = [i for got in pool.map(receive_worker, [(port, url)] * workers) for i in got]
    receive_s = time.perf_counter() - started
    cpu2 = cpu_seconds(pid)
    if sent != messages or len(set(ids)) != messages:
        raise RuntimeError(f"sent {sent}, received {len(set(ids))} distinct, expected {messages}")
    sqs.delete_queue(QueueUrl=url)
    # Concurrent receivers may be handed the same message twice by a server that does not
    # serialise receives (moto does not): counted, reported, not fatal.
    return {"send_per_s": messages / send_s, "receive_per_s": messages / receive_s,
            "send_cpu_us": (cpu1 - cpu0) / messages * 1e6,
            "receive_cpu_us": (cpu2 - cpu1) / messages * 1e6,
            "duplicates": len(ids) - messages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--body-bytes", type=int, default=100)
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"),
                        help="Manifold's [persistence] fsync (default: its default, always)")
    parser.add_argument("--targets", default="manifold,moto")
    options = parser.parse_args()
    targets = options.targets.split(",")
    runs: dict[str, list[dict]] = {t: [] for t in targets}
    tmp = tempfile.mkdtemp(prefix="sqs-bench-")
    servers = {}
    try:
        if "manifold" in targets:
            servers["manifold"] = start_manifold(os.path.join(tmp, "data"), options.fsync)
        if "moto" in targets:
            servers["moto"] = start_moto()
        with multiprocessing.get_context("spawn").Pool(options.workers) as pool:
            # Warm-up (imports, clients, connections, first queue) on every server, untimed.
            for name, (proc, port) in servers.items():
                pool.map(warm_worker, [port] * options.workers * 4)
                one_run(pool, port, proc.pid, 500, options.workers, options.body_bytes)
            for round_no in range(options.rounds):
                order = targets[round_no % len(targets):] + targets[:round_no % len(targets)]
                for name in order:
                    proc, port = servers[name]
                    result = one_run(pool, port, proc.pid, options.messages, options.workers,
                                     options.body_bytes)
                    runs[name].append(result)
                    print(f"round {round_no + 1} {name}: " + ", ".join(
                        f"{k} {v:,.0f}" for k, v in result.items()), file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
               for name, results in runs.items() if results}
    print(json.dumps({"options": vars(options), "medians": medians, "runs": runs}, indent=1))
    if "manifold" in medians and "moto" in medians:
        m, o = medians["manifold"], medians["moto"]
        print(f"\n{options.messages} messages, {options.workers} workers, median of "
              f"{options.rounds} rounds; duplicates (median) Manifold {m['duplicates']:.0f}, "
              f"moto {o['duplicates']:.0f}")
        print("\n| phase | Manifold msg/s | moto msg/s | ratio | Manifold CPU us/msg | "
              "moto CPU us/msg |\n|---|---|---|---|---|---|")
        for phase, label in (("send", "SendMessageBatch"),
                             ("receive", "ReceiveMessage + DeleteMessageBatch")):
            print(f"| {label} | {m[phase + '_per_s']:,.0f} | {o[phase + '_per_s']:,.0f} | "
                  f"{m[phase + '_per_s'] / o[phase + '_per_s']:.1f}x | "
                  f"{m[phase + '_cpu_us']:.0f} | {o[phase + '_cpu_us']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
