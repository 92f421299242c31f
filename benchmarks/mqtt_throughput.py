"""MQTT QoS 0 / QoS 1 throughput: 64-byte payloads, one publisher, one subscriber.

The load generator is ``benchmarks/gen_mqtt.py`` (raw sockets, pre-encoded packets, bounded
window of unconsumed messages), so the broker is what is measured. With ``--port`` it measures a
broker that is already running (Manifold, Mosquitto, RabbitMQ, amqtt: anything speaking 3.1.1);
without, it starts ``manifold serve`` on a free loopback port, measures, and stops it.

Prints one JSON object per QoS on stdout, e.g.
    {"broker": "manifold", "qos": 0, "messages": 50000, "msgs_per_s": 61000.0, ...}

    .venv/bin/python benchmarks/mqtt_throughput.py                      # Manifold, QoS 0 and 1
    .venv/bin/python benchmarks/mqtt_throughput.py --host 127.0.0.1 --port 1883 --qos 1
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gen_mqtt  # noqa: E402  (the shared raw-socket generator)
from benchkit import free_port, install_uvloop, start_manifold, stop_manifold  # noqa: E402


def measure(host: str, port: int, qos: int, messages: int, window: int) -> dict:
    args = argparse.Namespace(host=host, port=port, qos=qos, messages=messages, size=64,
                              window=window, batch=100, warmup=min(2000, messages),
                              timeout=120.0, idle_timeout=10.0)
    return asyncio.run(asyncio.wait_for(gen_mqtt.run(args), args.timeout + 15))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None,
                   help="broker to measure; default: start Manifold on a free port")
    p.add_argument("--qos", type=int, choices=(0, 1), action="append",
                   help="QoS to measure (repeatable; default 0 and 1)")
    p.add_argument("--messages", type=int, default=50000)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--broker", default=None, help="name printed in the JSON")
    args = p.parse_args(argv)
    install_uvloop()
    proc = None
    port = args.port
    name = args.broker or ("manifold" if port is None else f"{args.host}:{port}")
    tmp = tempfile.TemporaryDirectory()
    if port is None:
        port = free_port()
        proc = start_manifold("mqtt", port, os.path.join(tmp.name, "data"))
    status = 0
    try:
        for qos in args.qos or [0, 1]:
            try:
                result = measure(args.host, port, qos, args.messages, args.window)
            except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
                result = {"qos": qos, "error": str(exc), "complete": False}
            result["broker"] = name
            print(json.dumps(result), flush=True)
            if not result.get("complete"):
                status = 1
    finally:
        stop_manifold(proc)
        tmp.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main())
