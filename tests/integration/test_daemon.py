"""`manifold serve` as a user runs it: a real subprocess, real signals."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

MANIFOLD = [sys.executable, "-m", "manifold.broker.cli"]


def start(tmp_path, *extra, env=None):
    return subprocess.Popen(
        MANIFOLD + ["serve", "--data-dir", str(tmp_path / "data"), "--amqp-port", "0",
                    "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "0", "--ws-port", "0",
                    "--management-port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})})


def wait_for_line(proc, pattern, timeout=90):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if re.search(pattern, line):
            return line
    proc.kill()
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_without_config_and_exits_zero_on_signal(tmp_path, sig):
    proc = start(tmp_path)
    try:
        line = wait_for_line(proc, "manifold listening")
        assert "data dir" in line and str(tmp_path / "data") in line
        assert (tmp_path / "data").is_dir()
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0  # exits, cleanly (generous: a loaded machine)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unknown_config_key_stops_startup_naming_it(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[amqp]\nheartbeat_seconds = 5\n")
    proc = start(tmp_path, "--config", str(config))
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 2
    assert "amqp.heartbeat_seconds" in out and "heartbeat_s" in out


def test_bad_environment_value_stops_startup(tmp_path):
    proc = start(tmp_path, env={"MANIFOLD_PERSISTENCE_FSYNC": "sometimes"})
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 2
    assert "persistence.fsync" in out and "always, interval, never" in out
