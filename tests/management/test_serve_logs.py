"""`manifold serve --log-format json`: one structured line per connection open and close."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pika

MANIFOLD = [sys.executable, "-m", "manifold.broker.cli"]


def read_json_lines(proc, until, timeout_s=90.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        entry = json.loads(line)  # every line is one JSON object
        lines.append(entry)
        if until(entry):
            return lines
    proc.kill()
    raise AssertionError(f"no expected log line within {timeout_s} s; got {lines}")


def test_connection_open_and_close_are_logged_as_json(tmp_path):
    proc = subprocess.Popen(
        MANIFOLD + ["serve", "--data-dir", str(tmp_path / "data"), "--amqp-port", "0",
                    "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "0",
                    "--management-port", "0", "--ws-port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MANIFOLD_")})
    try:
        started = read_json_lines(proc, lambda e: "manifold listening" in e["message"])[-1]
        port = int(re.search(r"amqp 127\.0\.0\.1:(\d+)", started["message"]).group(1))
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        local_port = conn._impl._transport._sock.getsockname()[1]
        opened = read_json_lines(proc, lambda e: e.get("event") == "connection.open")[-1]
        assert opened["protocol"] == "amqp" and opened["user"] == "guest"
        assert opened["vhost"] == "/" and opened["peer_host"] == "127.0.0.1"
        assert opened["peer_port"] == local_port
        assert f"127.0.0.1:{local_port}" in opened["message"]
        conn.close()
        closed = read_json_lines(proc, lambda e: e.get("event") == "connection.close")[-1]
        assert closed["peer_port"] == local_port and closed["user"] == "guest"
        assert closed["reason"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
