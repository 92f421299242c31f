"""`manifold serve` as a real child process on free ports, for tests that kill it with SIGKILL or
start it under resource limits."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable


def start_daemon(data_dir, *, timeout_s: float = 20.0,
                 preexec_fn: Callable[[], None] | None = None
                 ) -> tuple[subprocess.Popen, dict[str, int]]:
    """Start the daemon with every listener on a free port; returns the process and the ports by
    listener name, as the startup line lists them."""
    # Port 0 on the command line is a free port for the protocols but disables the HTTP and
    # WebSocket listeners; in the environment it picks a free port for those too, so no default
    # port held by something else on the host can stop the test.
    env = {**os.environ, "MANIFOLD_HTTP_PORT": "0", "MANIFOLD_MANAGEMENT_PORT": "0",
           "MANIFOLD_WEBSOCKET_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "manifold.broker.cli", "serve", "--data-dir", str(data_dir),
         "--amqp-port", "0", "--mqtt-port", "0", "--stomp-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=preexec_fn)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "manifold listening" in line:
            # keep draining the log so the daemon never blocks on a full pipe
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, {name: int(port)
                          for name, port in re.findall(r"(\w+) [\d.]+:(\d+)", line)}
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("daemon did not start")


def stop_daemon(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM must end it cleanly; a daemon that does not exit is killed, never left behind."""
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout_s) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
