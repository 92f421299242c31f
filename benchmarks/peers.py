"""Start and stop the brokers that benchmarks/compare.py measures side by side.

Each peer runs as a child process of this one (no systemd, no init system, as the current user),
with its data, logs and generated configuration in a temporary directory, on free loopback ports
chosen at start (so nothing collides with Manifold's defaults, a running test suite, or another
peer). Starting is time-boxed: a peer that does not accept connections on every port in time is
stopped and reported with the reason (its log tail), never waited on forever.

Peers:
    manifold   ``manifold serve`` (AMQP, MQTT, STOMP: only the protocols whose adapter exports
               ``make_server`` open a port; the others are reported as not served)
    rabbitmq   ``rabbitmq-server`` with the rabbitmq_mqtt and rabbitmq_stomp plugins
    mosquitto  ``mosquitto -c generated.conf``
    amqtt      ``amqtt -c generated.yaml`` (amqtt's broker, from the project venv)

By hand:
    .venv/bin/python benchmarks/peers.py check                 # start each, report ports, stop
    .venv/bin/python benchmarks/peers.py run mosquitto amqtt   # start, print ports, Ctrl-C stops
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(os.environ.get("BENCH_VENV", ROOT / ".venv")) / "bin"
HOST = "127.0.0.1"

#: protocol ports of Manifold's defaults, never handed out to a peer
MANIFOLD_DEFAULT_PORTS = {5672, 1883, 61613, 8883, 15672, 25672, 4369, 61614}

#: ``manifold serve`` options that switch off the listeners a benchmark does not use
DISABLED_LISTENERS = ("--http-port", "0", "--management-port", "0", "--ws-port", "0")

_given_ports: set[int] = set()
_random = random.SystemRandom()


def free_port() -> int:
    """A loopback TCP port nobody listens on now, not handed out before by this process, and
    below the kernel's ephemeral range: a port the kernel hands to a port-0 listener or an
    outgoing connection could be taken again between this call and the caller's bind, so CI
    saw "address already in use" now and then."""
    low = _ephemeral_range_start()
    for _ in range(500):
        port = _random.randrange(10_000, low)
        if port in _given_ports or port in MANIFOLD_DEFAULT_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:  # something on the host listens there
                continue
        _given_ports.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def _ephemeral_range_start() -> int:
    """The first port of Linux's ephemeral range (32768 by default; elsewhere assume that)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, 11_000)


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU seconds of the live processes in process group pgid (Linux /proc)."""
    total = 0
    found = False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # fields after "pid (comm) ": state ppid pgrp ... utime(14) stime(15), 1-based
        fields = data[data.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
            found = True
    return total / CLK_TCK if found else None


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def which(name: str, *extra: Path) -> str | None:
    for candidate in extra:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


@dataclass
class Peer:
    """One broker process. ``ports`` maps a protocol ("amqp", "mqtt", "stomp") to its port."""

    name: str
    start_timeout_s: float = 20.0
    stop_timeout_s: float = 15.0
    ports: dict[str, int] = field(default_factory=dict)
    #: protocol -> why it is not served (e.g. Manifold adapter not written yet)
    unavailable: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    version: str = ""

    # -- to override ------------------------------------------------------------------------
    def prepare(self) -> list[str]:
        """Write configuration into self.workdir, fill self.ports; return the command line."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def stop_signal(self) -> int:
        return signal.SIGTERM

    def after_stop(self) -> None:
        pass

    def required_ports(self) -> dict[str, int]:
        return self.ports

    def after_ready(self) -> None:
        pass

    # -- lifecycle --------------------------------------------------------------------------
    def serves(self, protocol: str) -> bool:
        return self.error is None and protocol in self.ports and protocol not in self.unavailable

    def why_not(self, protocol: str) -> str:
        if self.error:
            return self.error
        if protocol in self.unavailable:
            return self.unavailable[protocol]
        if protocol not in self.ports:
            return f"{self.name} does not speak {protocol}"
        return ""

    def start(self) -> bool:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"manifold-bench-{self.name}-"))
        self.log_path = self.workdir / "output.log"
        try:
            cmd = self.prepare()
        except Exception as exc:  # missing binary, unwritable dir...: report, do not raise
            self.error = f"cannot prepare: {exc}"
            return False
        log = open(self.log_path, "wb")
        try:
            # A session of its own: Ctrl-C in the terminal reaches only this script, which then
            # stops every peer in order (and the peer's helpers die with its process group).
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir,
                                         env=self.environment(), start_new_session=True,
                                         preexec_fn=_default_signals)
        except OSError as exc:
            self.error = f"cannot run {cmd[0]}: {exc}"
            return False
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        waiting = dict(self.required_ports())
        while waiting:
            if self.proc.poll() is not None:
                self.fail(f"exited with code {self.proc.returncode} before listening")
                self.stop()
                return False
            for proto, port in list(waiting.items()):
                if port_open(port):
                    del waiting[proto]
            if waiting and time.monotonic() > deadline:
                self.fail(f"not listening on {', '.join(f'{p} {n}' for p, n in waiting.items())}"
                          f" after {self.start_timeout_s:.0f} s")
                self.stop()
                return False
            if waiting:
                time.sleep(0.2)
        try:
            self.after_ready()
        except Exception as exc:
            self.error = f"started but not usable: {exc}"
            self.stop()
            return False
        return True

    def fail(self, summary: str) -> None:
        """Record why the peer is unusable: one summary line (with the log's last line), then
        the log tail for whoever reads the details."""
        log_tail = tail(self.log_path) if self.log_path else ""
        last = log_tail.splitlines()[-1].strip()[:160] if log_tail else ""
        self.error = summary + (f" (last log line: {last})" if last else " (empty log)")
        if log_tail:
            self.error += "\nlog tail:\n" + log_tail

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, self.stop_signal())
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            # Whatever is left in the peer's own process group (erlang port programs...).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            self.after_stop()
        self.proc = None

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the broker (its whole process group: RabbitMQ's shell
        wrapper and beam.smp, ...)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return group_cpu_seconds(self.proc.pid)

    def cleanup(self) -> None:
        if self.workdir and not os.environ.get("BENCH_KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self) -> str:
        if self.error:
            return f"{self.name}: n/a ({self.error.splitlines()[0]})"
        served = ", ".join(f"{p} {HOST}:{port}" for p, port in sorted(self.ports.items())
                           if p not in self.unavailable)
        missing = "".join(f"; {p}: {why}" for p, why in sorted(self.unavailable.items()))
        version = f" [{self.version}]" if self.version else ""
        return f"{self.name}{version}: {served or 'no protocol'}{missing}"


class ManifoldPeer(Peer):
    """``manifold serve`` on free ports; a protocol whose adapter has no make_server opens none."""

    def __init__(self, **kw):
        super().__init__("manifold", start_timeout_s=kw.pop("start_timeout_s", 20.0), **kw)

    def prepare(self) -> list[str]:
        exe = which("manifold", VENV_BIN / "manifold")
        if exe is None:
            raise RuntimeError("manifold console script not found (pip install -e .)")
        self.ports = {p: free_port() for p in ("amqp", "mqtt", "stomp")}
        self.version = git_describe()
        return [exe, "serve", "--data-dir", str(self.workdir / "data"),
                "--bind", HOST, "--amqp-port", str(self.ports["amqp"]),
                "--mqtt-port", str(self.ports["mqtt"]), "--stomp-port", str(self.ports["stomp"]),
                # Listeners not measured are off: their fixed default ports (15672, 15675,
                # 4566) may be taken by another broker on the machine.
                *DISABLED_LISTENERS,
                "--log-level", "info"]  # info: its "listening" line says it is ready

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The default, said explicitly: confirms of persistent messages wait for an fsync.
        env.setdefault("MANIFOLD_PERSISTENCE_FSYNC", "always")
        return env

    def required_ports(self) -> dict[str, int]:
        # Manifold opens only the protocols whose adapter exists, so readiness is its log line
        # "manifold listening: amqp 127.0.0.1:P, mqtt ...", not every port.
        return {}

    def start(self) -> bool:
        if not super().start():
            return False
        deadline = time.monotonic() + self.start_timeout_s
        line = None
        while time.monotonic() < deadline:
            m = re.search(r"manifold listening: (.*?); data dir", self.log_path.read_text(
                errors="replace"))
            if m:
                line = m.group(1)
                break
            if self.proc.poll() is not None:
                self.fail(f"exited with code {self.proc.returncode}")
                self.stop()
                return False
            time.sleep(0.1)
        if line is None:
            self.fail(f"no 'manifold listening' line after {self.start_timeout_s:.0f} s")
            self.stop()
            return False
        listening = {m.group(1) for m in re.finditer(r"(\w+) [\d.]+:\d+", line)}
        for proto, port in self.ports.items():
            if proto not in listening:
                self.unavailable[proto] = (f"Manifold opens no {proto} port (adapters.{proto} "
                                           "exports no make_server yet)")
            elif not port_open(port):
                self.unavailable[proto] = f"Manifold logged {proto} but port {port} refuses"
        return True


class RabbitPeer(Peer):
    """rabbitmq-server run directly as root (not via /usr/sbin's su wrapper) in a temp dir."""

    def __init__(self, **kw):
        super().__init__("rabbitmq", start_timeout_s=kw.pop("start_timeout_s", 90.0),
                         stop_timeout_s=30.0, **kw)
        self.epmd_port = 0

    def prepare(self) -> list[str]:
        # /usr/sbin/rabbitmq-server would `su rabbitmq` and drop our environment; the real
        # script lives in /usr/lib/rabbitmq/bin.
        exe = which("rabbitmq-server", Path("/usr/lib/rabbitmq/bin/rabbitmq-server"))
        if exe is None:
            raise RuntimeError("rabbitmq-server not installed (benchmarks/install_peers.sh)")
        self.ports = {"amqp": free_port(), "mqtt": free_port(), "stomp": free_port()}
        self.epmd_port = free_port()
        self.dist_port = free_port()
        d = self.workdir
        (d / "rabbitmq.conf").write_text(
            "# generated by benchmarks/peers.py\n"
            f"listeners.tcp.1 = {HOST}:{self.ports['amqp']}\n"
            f"mqtt.listeners.tcp.1 = {HOST}:{self.ports['mqtt']}\n"
            f"stomp.listeners.tcp.1 = {HOST}:{self.ports['stomp']}\n"
            # Defaults otherwise: guest/guest allowed from loopback only, MQTT anonymous
            # connections map to guest, vhost '/'.
            "mqtt.allow_anonymous = true\n"
            "disk_free_limit.absolute = 50MB\n"
            "log.console = false\n"
            "log.file.level = warning\n")
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt,rabbitmq_stomp].\n")
        (d / "rabbitmq-env.conf").write_text("")
        (d / "mnesia").mkdir()
        (d / "log").mkdir()
        self.version = debian_version("rabbitmq-server")
        return [exe]

    def environment(self) -> dict[str, str]:
        d = self.workdir
        env = dict(os.environ)
        env.update({
            "HOME": str(d),  # .erlang.cookie goes here, not in root's home
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": f"manifoldbench{os.getpid()}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.ports["amqp"]),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            # Erlang distribution listens on loopback only (default: every interface).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def after_stop(self) -> None:
        # erl started an epmd daemon (its own session) on our private port: stop that one only.
        if self.epmd_port:
            epmd = which("epmd", *Path("/usr/lib/erlang/erts-").parent.glob("erts-*/bin/epmd"))
            if epmd:
                subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                               env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)})

    def start(self) -> bool:
        ok = super().start()
        if not ok:
            logs = sorted((self.workdir / "log").glob("*.log")) if self.workdir else []
            if logs and self.error:
                self.error += "\nrabbit log tail:\n" + tail(logs[-1])
        return ok


class MosquittoPeer(Peer):
    def __init__(self, **kw):
        super().__init__("mosquitto", **kw)

    def prepare(self) -> list[str]:
        exe = which("mosquitto")
        if exe is None:
            raise RuntimeError("mosquitto not installed (benchmarks/install_peers.sh)")
        self.ports = {"mqtt": free_port()}
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "# generated by benchmarks/peers.py\n"
            f"listener {self.ports['mqtt']} {HOST}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\n"
            # Keep every message a slow subscriber has not taken yet (default: drop QoS 1/2
            # above 1000 queued), so a run measures throughput, not losses.
            "max_queued_messages 0\n")
        self.version = debian_version("mosquitto")
        return [exe, "-c", str(conf)]


class AmqttPeer(Peer):
    def __init__(self, **kw):
        super().__init__("amqtt", **kw)

    def prepare(self) -> list[str]:
        exe = which("amqtt", VENV_BIN / "amqtt")
        if exe is None:
            raise RuntimeError("amqtt not found in the venv (pip install amqtt)")
        self.ports = {"mqtt": free_port()}
        conf = self.workdir / "amqtt.yaml"
        # No event/packet logger plugins and no $SYS publisher: they only cost time.
        conf.write_text(
            "# generated by benchmarks/peers.py\n"
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {HOST}:{self.ports['mqtt']}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n")
        self.version = pip_version("amqtt")
        return [exe, "-c", str(conf)]

    def stop_signal(self) -> int:
        # amqtt's script shuts the broker down on KeyboardInterrupt only.
        return signal.SIGINT


PEER_CLASSES = {"manifold": ManifoldPeer, "rabbitmq": RabbitPeer, "mosquitto": MosquittoPeer,
                "amqtt": AmqttPeer}


def make_peer(name: str) -> Peer:
    try:
        return PEER_CLASSES[name]()
    except KeyError:
        raise SystemExit(f"unknown peer {name!r}; known: {', '.join(PEER_CLASSES)}") from None


def debian_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                             text=True, timeout=10)
        return f"{package} {out.stdout.strip()}" if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def pip_version(dist: str) -> str:
    try:
        from importlib.metadata import version
        return f"{dist} {version(dist)}"
    except Exception:
        try:
            out = subprocess.run([str(VENV_BIN / "python"), "-c",
                                  f"import importlib.metadata as m; print(m.version('{dist}'))"],
                                 capture_output=True, text=True, timeout=20)
            return f"{dist} {out.stdout.strip()}" if out.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""


def git_describe() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return f"manifold {out.stdout.strip()}" if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _default_signals() -> None:
    # A shell starting us in the background ignores SIGINT, and ignored signals are inherited
    # across exec: give each peer the default dispositions so its own shutdown handlers work.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class _Terminate(Exception):
    pass


def _raise_terminate(signum, frame):
    raise _Terminate(f"signal {signum}")


@contextlib.contextmanager
def running(names: list[str], log=print, start_timeout_s: float | None = None):
    """Start the named peers (in order, each time-boxed), yield {name: Peer}, always stop them.

    SIGTERM is turned into an exception like Ctrl-C so the ``finally`` stops every peer.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminate)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    peers: dict[str, Peer] = {}
    try:
        for name in names:
            peer = make_peer(name)
            if start_timeout_s:
                peer.start_timeout_s = start_timeout_s
            peers[name] = peer
            t0 = time.monotonic()
            ok = peer.start()
            log(f"  started {peer.describe()} in {time.monotonic() - t0:.1f} s" if ok
                else f"  FAILED {peer.describe()}")
        yield peers
    finally:
        # Stop even if a second Ctrl-C arrives while stopping one peer.
        for peer in reversed(list(peers.values())):
            for _ in range(3):
                try:
                    peer.stop()
                    break
                except (KeyboardInterrupt, _Terminate):
                    continue
            peer.cleanup()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("check", "run"),
                        help="check: start each peer, report, stop; run: keep them up until Ctrl-C")
    parser.add_argument("peers", nargs="*", help=f"default: all ({', '.join(PEER_CLASSES)})")
    parser.add_argument("--json", action="store_true", help="print the ports as JSON")
    args = parser.parse_intermixed_args(argv)
    names = args.peers or list(PEER_CLASSES)
    status = 0
    try:
        with running(names, log=lambda s: print(s, file=sys.stderr, flush=True)) as peers:
            report = {n: {"ports": {p: port for p, port in peer.ports.items() if peer.serves(p)},
                          "error": peer.error, "unavailable": peer.unavailable,
                          "version": peer.version} for n, peer in peers.items()}
            if args.json:
                print(json.dumps(report, indent=2), flush=True)
            else:
                for peer in peers.values():
                    print(peer.describe(), flush=True)
                    if peer.error:
                        print("    " + peer.error.replace("\n", "\n    "), flush=True)
            if any(peer.error for peer in peers.values()):
                status = 1
            if args.action == "run":
                print("peers running; Ctrl-C stops them", file=sys.stderr, flush=True)
                while True:
                    time.sleep(3600)
    except (KeyboardInterrupt, _Terminate):
        print("stopping peers", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
