"""Kinesis PutRecords/GetRecords throughput and SNS fan-out to 10 SQS queues, Manifold side by
side with moto's server (``pip install 'moto[server]'``, for this benchmark only), both driven by
the same boto3 code.

    .venv/bin/python benchmarks/aws_streams.py --rounds 3 --records 20000 --publishes 500

Each round starts both servers fresh and runs every case on each, servers in rotating order;
the table shows medians. Manifold runs with its default ``fsync = "always"`` (every answered
call is on disk) unless ``--fsync`` says otherwise; moto keeps everything in memory.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import free_port  # noqa: E402


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not open port {port}")


def start_manifold(data_dir: str, fsync: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "MANIFOLD_HTTP_PORT": str(port), "MANIFOLD_MANAGEMENT_PORT": "0",
           "MANIFOLD_PERSISTENCE_FSYNC": fsync}
    cmd = [str(Path(sys.executable).parent / "manifold"), "serve", "--data-dir", data_dir,
           "--log-level", "warning", "--amqp-port", str(free_port()),
           "--mqtt-port", str(free_port()), "--stomp-port", str(free_port())]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wait_port(port, proc, "manifold")
    return proc, port


def start_moto() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(port, proc, "moto")
    return proc, port


def client(service: str, port: int):
    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="guest", aws_secret_access_key="guest",
                        config=Config(retries={"max_attempts": 1}, read_timeout=120))


def kinesis_case(port: int, records: int) -> dict[str, float]:
    kinesis = client("kinesis", port)
    kinesis.create_stream(StreamName="bench", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="bench",
                                             WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    payload = b"x" * 100
    batches = records // 500
    started = time.perf_counter()
    for b in range(batches):
        kinesis.put_records(StreamName="bench", Records=[
            {"Data": payload, "PartitionKey": f"k{b}-{i}"} for i in range(500)])
    put_s = time.perf_counter() - started
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName="bench")["Shards"]]
    started = time.perf_counter()
    read = 0
    for shard in shards:
        it = kinesis.get_shard_iterator(StreamName="bench", ShardId=shard,
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = kinesis.get_records(ShardIterator=it, Limit=10000)
            read += len(page["Records"])
            if not page["Records"]:
                break
            it = page.get("NextShardIterator")
    get_s = time.perf_counter() - started
    assert read == batches * 500, (read, batches * 500)
    return {"kinesis PutRecords (records/s)": batches * 500 / put_s,
            "kinesis GetRecords (records/s)": read / get_s}


def sns_case(port: int, publishes: int) -> dict[str, float]:
    sns, sqs = client("sns", port), client("sqs", port)
    topic = sns.create_topic(Name="fanout")["TopicArn"]
    urls = []
    for i in range(10):
        urls.append(sqs.create_queue(QueueName=f"fan{i}")["QueueUrl"])
        sns.subscribe(TopicArn=topic, Protocol="sqs",
                      Endpoint=f"arn:aws:sqs:us-east-1:000000000000:fan{i}",
                      Attributes={"RawMessageDelivery": "true"})
    started = time.perf_counter()
    for i in range(publishes):
        sns.publish(TopicArn=topic, Message=f"message {i}")
    publish_s = time.perf_counter() - started
    received = 0
    for url in urls:
        got = 0
        deadline = time.monotonic() + 120
        while got < publishes and time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", [])
            got += len(messages)
            if messages:
                sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(messages)])
        received += got
    total_s = time.perf_counter() - started
    assert received == 10 * publishes, (received, 10 * publishes)
    return {"SNS Publish, 10 SQS subscribers (publishes/s)": publishes / publish_s,
            "SNS fan-out end to end, publish to 10 queues drained (deliveries/s)":
                received / total_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--publishes", type=int, default=500)
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"manifold": {}, "moto": {}}
    for round_no in range(args.rounds):
        order = ["manifold", "moto"] if round_no % 2 == 0 else ["moto", "manifold"]
        for name in order:
            with tempfile.TemporaryDirectory() as data_dir:
                proc, port = (start_manifold(data_dir, args.fsync) if name == "manifold"
                              else start_moto())
                try:
                    for case in (kinesis_case(port, args.records),
                                 sns_case(port, args.publishes)):
                        for key, value in case.items():
                            results[name].setdefault(key, []).append(value)
                finally:
                    proc.terminate()
                    proc.wait(20)
        print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    print(f"| case | Manifold (fsync={args.fsync}) | moto server | Manifold / moto |")
    print("|---|---:|---:|---:|")
    for key in results["manifold"]:
        ours = statistics.median(results["manifold"][key])
        theirs = statistics.median(results["moto"][key])
        print(f"| {key} | {ours:,.0f} | {theirs:,.0f} | **{ours / theirs:.2f}** |")


if __name__ == "__main__":
    main()
