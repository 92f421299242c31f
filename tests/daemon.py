"""`manifold serve` as a real child process on free ports, for tests that kill it with SIGKILL or
start it under resource limits."""
from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, TextIO


class DaemonOutput:
    """The daemon's log, read line by line by a thread for as long as the daemon lives (so it
    never blocks on a full pipe), for tests that wait for a line with a deadline."""

    def __init__(self, stream: TextIO):
        self._unread: collections.deque[str] = collections.deque()
        self._recent: collections.deque[str] = collections.deque(maxlen=30)  # for failures
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            with self._changed:
                self._unread.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float) -> str:
        """The next line matching ``pattern`` (lines before it are passed over), else
        AssertionError after ``timeout_s`` or once the daemon's output ended."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                while self._unread:
                    line = self._unread.popleft()
                    self._recent.append(line)
                    if re.search(pattern, line):
                        return line
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    break
                self._changed.wait(remaining)
        raise AssertionError(f"no line matching {pattern!r} from the daemon within {timeout_s} s; "
                             "its last lines:\n" + "".join(self._recent))


def start_daemon(data_dir, *extra_args: str, timeout_s: float = 90.0,
                 preexec_fn: Callable[[], None] | None = None
                 ) -> tuple[subprocess.Popen, dict[str, int]]:
    """Start the daemon with every listener on a free port; returns the process and the ports by
    listener name, as the startup line lists them. ``proc.output`` is its :class:`DaemonOutput`.
    (Generous time-box: on a loaded machine the child's imports alone can take many seconds.)"""
    # Port 0 on the command line is a free port for the protocols but disables the HTTP and
    # WebSocket listeners; in the environment it picks a free port for those too, so no default
    # port held by something else on the host can stop the test.
    env = {**os.environ, "MANIFOLD_HTTP_PORT": "0", "MANIFOLD_MANAGEMENT_PORT": "0",
           "MANIFOLD_WEBSOCKET_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "manifold.broker.cli", "serve", "--data-dir", str(data_dir),
         "--amqp-port", "0", "--mqtt-port", "0", "--stomp-port", "0", *extra_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=preexec_fn)
    proc.output = DaemonOutput(proc.stdout)  # type: ignore[attr-defined]
    try:
        line = proc.output.wait_for("manifold listening", timeout_s)  # type: ignore[attr-defined]
    except AssertionError:
        proc.kill()
        proc.wait(10)
        raise
    return proc, {name: int(port) for name, port in re.findall(r"(\w+) [\d.]+:(\d+)", line)}


def stop_daemon(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM must end it cleanly; a daemon that does not exit is killed, never left behind."""
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout_s) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
