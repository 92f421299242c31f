"""Side-by-side throughput: Manifold against RabbitMQ, Mosquitto and amqtt, same run, same machine.

For each benchmark (AMQP, MQTT QoS 0, MQTT QoS 1, STOMP) the protocol's load generator runs
against Manifold and against every peer that speaks the protocol, --rounds times, the order of
the targets rotating each round (so no broker always runs first or last on a warm machine). The
median messages/second of each target and the ratio Manifold / peer go into a Markdown table,
printed and written to benchmarks/results/latest.md (and latest.json with every run).

Every step is time-boxed: a peer that does not start, a protocol Manifold does not serve yet, a
generator that fails or exceeds --run-timeout are all reported as "n/a" with the reason.

    .venv/bin/python benchmarks/compare.py                         # everything, 3 rounds
    .venv/bin/python benchmarks/compare.py --protocols mqtt --rounds 5 --messages 50000
    .venv/bin/python benchmarks/compare.py --protocols mqtt --baseline mosquitto   # harness check

Generators: benchmarks/<proto>_throughput.py (written with each adapter) when present, else this
harness's own raw-socket benchmarks/gen_<proto>.py (--generator own|adapter|auto chooses). Each
takes --host --port (and --messages, --qos when it has them) and prints messages/second as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers as peers_mod  # noqa: E402
from benchkit import write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

PEER_LABELS = {"manifold": "Manifold", "rabbitmq": "RabbitMQ", "mosquitto": "Mosquitto",
               "amqtt": "amqtt"}


@dataclass(frozen=True)
class Case:
    key: str             # "mqtt-qos1"
    title: str           # "MQTT 3.1.1 QoS 1"
    protocol: str        # port key and generator family: "amqp" | "mqtt" | "stomp"
    extra: tuple = ()    # generator arguments for this case: ((option, value or None), ...)
    peers: tuple = ()    # peers that speak the protocol
    needs: tuple = ()    # generator options this case cannot do without (e.g. "--qos")


CASES = (  # table order; DEFAULT_CASES below are what runs without --cases
    Case("amqp", "AMQP 0-9-1", "amqp", peers=("rabbitmq",)),
    Case("amqp-ack", "AMQP 0-9-1 manual ack + confirms", "amqp", (("--ack", None),
         ("--confirm", None)), ("rabbitmq",), needs=("--ack", "--confirm")),
    # Durable queue, persistent messages, publisher confirms, manual acks: Manifold with its
    # default fsync "always" (nothing confirmed before it is on disk), RabbitMQ with its own.
    Case("amqp-persistent", "AMQP 0-9-1 persistent + confirms (fsync)", "amqp",
         (("--ack", None), ("--confirm", None), ("--persistent", None)), ("rabbitmq",),
         needs=("--ack", "--confirm", "--persistent")),
    Case("mqtt-qos0", "MQTT 3.1.1 QoS 0", "mqtt", (("--qos", "0"),),
         ("mosquitto", "rabbitmq", "amqtt")),
    Case("mqtt-qos1", "MQTT 3.1.1 QoS 1", "mqtt", (("--qos", "1"),),
         ("mosquitto", "rabbitmq", "amqtt"), needs=("--qos",)),
    # MQTT 5: RabbitMQ 3.10 and amqtt speak 3.1.1 only.
    Case("mqtt5-qos0", "MQTT 5.0 QoS 0", "mqtt", (("--qos", "0"), ("--mqtt-version", "5")),
         ("mosquitto",), needs=("--qos", "--mqtt-version")),
    Case("mqtt5-qos1", "MQTT 5.0 QoS 1", "mqtt", (("--qos", "1"), ("--mqtt-version", "5")),
         ("mosquitto",), needs=("--qos", "--mqtt-version")),
    Case("stomp", "STOMP 1.2", "stomp", peers=("rabbitmq",)),
    Case("stomp-ack", "STOMP 1.2 client-individual ack", "stomp",
         (("--ack", "client-individual"),), ("rabbitmq",), needs=("--ack",)),
)
DEFAULT_CASES = ("amqp", "mqtt-qos0", "mqtt-qos1", "stomp")

# Keys a generator's JSON may use for messages/second, most specific first.
RATE_KEYS = ("msgs_per_s", "messages_per_second", "messages_per_s", "msgs_per_sec",
             "messages_per_sec", "msg_per_s", "msg_per_sec", "msgs/s", "messages/s", "msg/s",
             "consume_rate", "consumed_per_s", "received_per_s", "throughput", "rate", "mps")


# --------------------------------------------------------------------------- pure helpers
def extract_rate(stdout: str, key: str | None = None) -> tuple[float | None, str]:
    """messages/second from a generator's stdout: the last line that parses as JSON.

    Accepts a bare number or an object (searched recursively) holding one of RATE_KEYS, or any
    key that looks like a per-second rate. Returns (rate, how) or (None, why not).
    """
    doc = None
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
            break
        except ValueError:
            continue
    if doc is None:
        try:
            doc = json.loads(stdout)
        except ValueError:
            return None, "no JSON on stdout"
    if isinstance(doc, bool):
        return None, "JSON is a boolean"
    if isinstance(doc, (int, float)):
        return float(doc), "number"
    if not isinstance(doc, dict):
        return None, f"unexpected JSON {type(doc).__name__}"
    if doc.get("error"):
        return None, f"generator error: {doc['error']}"
    flat = dict(_flatten(doc))
    if key is not None:
        value = flat.get(key)
        if _is_number(value):
            return float(value), key
        return None, f"no numeric key {key!r} in {sorted(flat)}"
    lowered = {k.lower(): k for k in flat}
    for wanted in RATE_KEYS:
        for path_lower, path in lowered.items():
            if path_lower == wanted or path_lower.endswith("." + wanted):
                if _is_number(flat[path]):
                    return float(flat[path]), path
    for path_lower, path in lowered.items():
        leaf = path_lower.rsplit(".", 1)[-1]
        if _is_number(flat[path]) and re.search(r"(per_?s(ec(ond)?)?$|/s$|_rate$|^rate)", leaf):
            return float(flat[path]), path
    return None, f"no messages/second key in {sorted(flat)}"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0


def _flatten(doc: dict, prefix: str = ""):
    for k, v in doc.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, path + ".")
        else:
            yield path, v


def rotation(targets: list[str], round_index: int) -> list[str]:
    """The run order for one round: rotate by the round number, so each target leads in turn."""
    if not targets:
        return []
    k = round_index % len(targets)
    return targets[k:] + targets[:k]


def median(values: list[float]) -> float | None:
    good = [v for v in values if v is not None]
    return statistics.median(good) if good else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def fmt_rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


@dataclass
class Outcome:
    """Every run of one (case, target): rates (None for a failed run) and reasons."""
    rates: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    unavailable: str | None = None   # never ran: peer down, protocol not served, no generator
    generator: str = ""
    #: per successful run: broker CPU microseconds per timed message (warm-up and connection
    #: setup included: the same overhead for every broker measured by the same generator)
    cpu_us: list = field(default_factory=list)
    #: per run, for the details table: (broker CPU %, generator CPU %) of the run's wall time
    busy: list = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return median(self.rates)

    @property
    def cpu_median(self) -> float | None:
        return median(self.cpu_us)

    def reason(self) -> str:
        if self.unavailable:
            return self.unavailable
        if self.median is None and self.errors:
            return self.errors[0]
        if not self.rates:
            return "not run (interrupted)"
        return ""


BEGIN_MARK = "<!-- latest-results: written by compare.py --update-readme -->"
END_MARK = "<!-- /latest-results -->"


def replace_marked(text: str, content: str) -> str:
    """text with what lies between BEGIN_MARK and END_MARK replaced by content."""
    start = text.find(BEGIN_MARK)
    end = text.find(END_MARK)
    if start < 0 or end < start:
        raise ValueError("latest-results markers not found")
    return text[:start + len(BEGIN_MARK)] + "\n" + content.strip() + "\n" + text[end:]


def render_table(cases, outcomes: dict, baseline: str, labels: dict[str, str],
                 metric: str = "rate", notes: list | None = None) -> tuple[str, list]:
    """Markdown table, one row per (case, peer); footnotes for every n/a. Pure function.

    metric "rate": median messages/second; "cpu": median broker CPU microseconds per message.
    """
    base = labels.get(baseline, baseline)
    unit, value_of, fmt = {
        "rate": ("msg/s", lambda o: o.median, fmt_rate),
        "cpu": ("µs CPU/msg", lambda o: o.cpu_median,
                lambda v: "n/a" if v is None else f"{v:.1f}"),
    }[metric]
    lines = [f"| Benchmark | Peer | {base} {unit} | Peer {unit} | {base} / peer |",
             "| --- | --- | ---: | ---: | ---: |"]
    notes = [] if notes is None else notes

    def cell(outcome: Outcome | None, value: str) -> str:
        why = outcome.reason() if outcome else "not run"
        if value != "n/a" or not why:
            return value
        short = why.splitlines()[0]
        if short not in notes:
            notes.append(short)
        return f"n/a [{notes.index(short) + 1}]"

    for case in cases:
        mine = outcomes.get((case.key, baseline))
        peers = [p for p in case.peers if p != baseline]
        for peer in peers:
            theirs = outcomes.get((case.key, peer))
            m = value_of(mine) if mine else None
            t = value_of(theirs) if theirs else None
            lines.append(f"| {case.title} | {labels.get(peer, peer)} | "
                         f"{cell(mine, fmt(m))} | {cell(theirs, fmt(t))} | "
                         f"{fmt_ratio(ratio(m, t))} |")
    return "\n".join(lines), notes


# --------------------------------------------------------------------------- generators
@dataclass
class Generator:
    path: Path
    options: frozenset   # long options its --help mentions
    own: bool

    @property
    def name(self) -> str:
        return self.path.name


def probe_options(python: str, path: Path) -> frozenset:
    try:
        out = subprocess.run([python, str(path), "--help"], capture_output=True, text=True,
                             timeout=60, cwd=HERE.parent)
        return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout + out.stderr))
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()


def find_generators(protocol: str, mode: str, python: str) -> list[Generator]:
    """Candidates in order of preference for a protocol."""
    adapter = HERE / f"{protocol}_throughput.py"
    own = HERE / f"gen_{protocol}.py"
    order = {"auto": (adapter, own), "adapter": (adapter,), "own": (own,)}[mode]
    found = []
    for path in order:
        if path.is_file():
            found.append(Generator(path, probe_options(python, path), own=path == own))
    return found


def pick_generator(case: Case, candidates: list[Generator]) -> tuple[Generator | None, str]:
    for gen in candidates:
        missing = [opt for opt in ("--host", "--port") + case.needs if opt not in gen.options]
        if not missing:
            return gen, ""
    if not candidates:
        return None, f"no generator for {case.protocol} (benchmarks/{case.protocol}_throughput.py " \
                     f"or benchmarks/gen_{case.protocol}.py)"
    return None, f"{candidates[0].name} lacks {', '.join(case.needs) or '--host/--port'}"


def generator_command(python: str, gen: Generator, case: Case, host: str, port: int,
                      messages: int | None) -> list[str]:
    cmd = [python, str(gen.path), "--host", host, "--port", str(port)]
    for option, value in case.extra:
        if option in gen.options:  # e.g. --qos only to a generator that has it
            cmd += [option] if value is None else [option, value]
    if messages and "--messages" in gen.options:
        cmd += ["--messages", str(messages)]
    return cmd


@dataclass
class Run:
    rate: float | None
    how: str
    raw: str = ""
    wall_s: float = 0.0
    gen_cpu_s: float | None = None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_generator(cmd: list[str], timeout_s: float) -> Run:
    """Run one generator to completion (or kill its process group), with its CPU time."""
    cpu0, t0 = _children_cpu(), time.monotonic()
    rate, how, raw = _run_generator(cmd, timeout_s)
    return Run(rate, how, raw, time.monotonic() - t0, _children_cpu() - cpu0)


def _run_generator(cmd: list[str], timeout_s: float) -> tuple[float | None, str, str]:
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=HERE.parent, start_new_session=True)
    except OSError as exc:
        return None, f"cannot run generator: {exc}", ""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return None, f"generator exceeded {timeout_s:.0f} s", (out or "")[-2000:]
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    rate, how = extract_rate(out or "")
    if rate is None:
        detail = (err or "").strip().splitlines()[-1:] or [""]
        return None, f"{how}; exit {proc.returncode} {detail[0][:200]}".strip(), (out or "")[-2000:]
    if proc.returncode not in (0, None):
        how += f" (exit {proc.returncode})"
    return rate, how, (out or "")[-2000:]


def _pct(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}%"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- machine info
def _loadavg() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def machine_description() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        pass
    return (f"{os.cpu_count()} cores ({cpu or platform.machine()}){mem}, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocols", default="amqp,mqtt,stomp",
                   help="comma list of amqp, mqtt, stomp (default all)")
    p.add_argument("--rounds", type=int, default=3, help="runs per target (median; default 3)")
    p.add_argument("--messages", type=int, default=20000,
                   help="messages per run, passed as --messages to generators that take it")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma list of {', '.join(c.key for c in CASES)} "
                        f"(default {','.join(DEFAULT_CASES)}), filtered by --protocols")
    p.add_argument("--peers", default="rabbitmq,mosquitto,amqtt",
                   help="comma list of peers to compare with (default all)")
    p.add_argument("--baseline", default="manifold",
                   help="the broker in the numerator of the ratio (default manifold)")
    p.add_argument("--generator", choices=("auto", "adapter", "own"), default="auto",
                   help="auto: <proto>_throughput.py if present, else gen_<proto>.py")
    p.add_argument("--run-timeout", type=float, default=180.0,
                   help="seconds one generator run may take (default 180)")
    p.add_argument("--start-timeout", type=float, default=None,
                   help="seconds each broker may take to listen (default: 90 for RabbitMQ, "
                        "20 for the others)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between runs (default 1)")
    p.add_argument("--output", default=str(RESULTS / "latest.md"))
    p.add_argument("--update-readme", action="store_true",
                   help="also put the table into benchmarks/README.md between its "
                        "latest-results markers")
    args = p.parse_args(argv)

    python = str(peers_mod.VENV_BIN / "python") if (peers_mod.VENV_BIN / "python").exists() \
        else sys.executable
    protocols = [x.strip() for x in args.protocols.split(",") if x.strip()]
    bad = [x for x in protocols if x not in ("amqp", "mqtt", "stomp")]
    if bad:
        p.error(f"unknown protocol(s) {bad}; accepted: amqp, mqtt, stomp")
    wanted_peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    unknown = [x for x in wanted_peers + [args.baseline] if x not in peers_mod.PEER_CLASSES]
    if unknown:
        p.error(f"unknown broker(s) {unknown}; accepted: {', '.join(peers_mod.PEER_CLASSES)}")
    wanted_cases = [x.strip() for x in args.cases.split(",") if x.strip()]
    unknown = [x for x in wanted_cases if x not in {c.key for c in CASES}]
    if unknown:
        p.error(f"unknown case(s) {unknown}; accepted: {', '.join(c.key for c in CASES)}")
    cases = [c for c in CASES if c.protocol in protocols and c.key in wanted_cases]
    cases = [Case(c.key, c.title, c.protocol, c.extra,
                  tuple(x for x in c.peers if x in wanted_peers or x == args.baseline), c.needs)
             for c in cases]
    targets_needed = [args.baseline] + sorted({x for c in cases for x in c.peers} - {args.baseline},
                                             key=list(peers_mod.PEER_CLASSES).index)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = datetime.now(timezone.utc)
    load_before = _loadavg()
    log(f"compare: {', '.join(c.key for c in cases)}; targets {', '.join(targets_needed)}; "
        f"{args.rounds} rounds of {args.messages} messages")
    generators = {proto: find_generators(proto, args.generator, python) for proto in protocols}
    outcomes: dict[tuple[str, str], Outcome] = {}
    commands: dict[str, str] = {}
    versions: dict[str, str] = {}
    peer_info: dict[str, dict] = {}
    interrupted = False
    try:
        with peers_mod.running(targets_needed, log=log,
                                 start_timeout_s=args.start_timeout) as running:
            versions = {n: pr.version for n, pr in running.items()}
            peer_info = {n: {"ports": pr.ports, "error": pr.error, "unavailable": pr.unavailable,
                             "version": pr.version} for n, pr in running.items()}
            plan = {}
            for case in cases:
                gen, why = pick_generator(case, generators[case.protocol])
                targets = [args.baseline] + [x for x in case.peers if x != args.baseline]
                ready = []
                for name in targets:
                    out = outcomes[(case.key, name)] = Outcome(generator=gen.name if gen else "")
                    peer = running.get(name)
                    if gen is None:
                        out.unavailable = why
                    elif peer is None:
                        out.unavailable = f"{name} not started"
                    elif not peer.serves(case.protocol):
                        out.unavailable = peer.why_not(case.protocol).splitlines()[0]
                    else:
                        ready.append(name)
                if gen is not None:
                    shown = generator_command("python", gen, case, "HOST", 0, args.messages)
                    shown[1] = os.path.relpath(shown[1], HERE.parent)
                    commands[case.key] = " ".join(shown).replace("--port 0", "--port PORT")
                plan[case.key] = (case, gen, ready)
            for r in range(args.rounds):
                for case, gen, ready in plan.values():
                    for name in rotation(ready, r):
                        out = outcomes[(case.key, name)]
                        if running[name].error:  # it died earlier in this run: do not wait on it
                            out.rates.append(None)
                            out.errors.append(running[name].error)
                            continue
                        port = running[name].ports[case.protocol]
                        cmd = generator_command(python, gen, case, peers_mod.HOST, port,
                                                args.messages)
                        cpu_before = running[name].cpu_seconds()
                        run = run_generator(cmd, args.run_timeout)
                        cpu_after = running[name].cpu_seconds()
                        rate, how = run.rate, run.how
                        out.rates.append(rate)
                        broker_cpu = (cpu_after - cpu_before if None not in (cpu_before, cpu_after)
                                      else None)
                        if rate is None:
                            out.errors.append(how)
                        elif broker_cpu is not None and args.messages:
                            out.cpu_us.append(broker_cpu / args.messages * 1e6)
                        out.busy.append((
                            None if broker_cpu is None else 100 * broker_cpu / run.wall_s,
                            None if run.gen_cpu_s is None else 100 * run.gen_cpu_s / run.wall_s))
                        if running[name].proc is not None and running[name].proc.poll() is not None:
                            running[name].error = (f"{name} exited during the run (code "
                                                   f"{running[name].proc.returncode})")
                            log(f"  {running[name].error}")
                        b, g = out.busy[-1]
                        log(f"  round {r + 1}/{args.rounds} {case.key:10s} {name:10s} "
                            f"{fmt_rate(rate):>10s} msg/s  (broker CPU {_pct(b)}, "
                            f"generator CPU {_pct(g)}; {how})")
                        time.sleep(args.pause)
    except (KeyboardInterrupt, peers_mod._Terminate):
        interrupted = True
        log("compare: interrupted; peers stopped; reporting what was measured")

    labels = dict(PEER_LABELS)
    table, notes = render_table(cases, outcomes, args.baseline, labels)
    cpu_table, notes = render_table(cases, outcomes, args.baseline, labels, "cpu", notes)
    finished = datetime.now(timezone.utc)
    gen_lines = []
    for case in cases:
        o = outcomes.get((case.key, args.baseline))
        gen_name = o.generator if o and o.generator else "none"
        gen_lines.append(f"- {case.title}: `{commands.get(case.key, gen_name)}`")
    per_target = []
    for (key, name), o in outcomes.items():
        runs = ", ".join(f"{fmt_rate(v)} ({_pct(b)}/{_pct(g)})"
                         for v, (b, g) in zip(o.rates, o.busy)) or "-"
        per_target.append(f"| {key} | {labels.get(name, name)} | {runs} |")
    md = "\n".join([
        f"Measured {started:%Y-%m-%d %H:%M} UTC ({(finished - started).total_seconds():.0f} s) "
        f"on {machine_description()}.",
        f"{args.rounds} rounds (target order rotating each round), median messages/second, "
        f"{args.messages} messages per run{' (INTERRUPTED: partial)' if interrupted else ''}. "
        "Shared, noisy 2-core machine: compare the ratios, not the absolute numbers "
        f"(1-minute load average {load_before} before, {_loadavg()} after).",
        "",
        table,
        "",
        "Broker CPU time per message (median microseconds of user + system CPU of the broker's "
        "processes during a run, divided by the messages timed; lower is better). Less sensitive "
        "to the other jobs on the machine than messages/second; RabbitMQ may use both cores, "
        "Manifold, Mosquitto and amqtt use one:",
        "",
        cpu_table,
        "",
        *([f"[{i + 1}] {n}" for i, n in enumerate(notes)] + [""] if notes else []),
        "Versions: " + "; ".join(v or n for n, v in versions.items()) + ".",
        "",
        "Generators (each prints messages/second as JSON):",
        *gen_lines,
        "",
        "<details><summary>every run</summary>",
        "",
        "| Benchmark | Target | msg/s per round (broker CPU % / generator CPU % of the run) |",
        "| --- | --- | --- |",
        *per_target,
        "",
        "</details>",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/compare.py'] + (argv if argv is not None else sys.argv[1:]))}`",
    ])
    out_path = write_report(args.output, md, {
        "started": started.isoformat(), "machine": machine_description(),
        "rounds": args.rounds, "messages": args.messages, "baseline": args.baseline,
        "versions": versions, "interrupted": interrupted, "peers": peer_info,
        "results": [{"case": k, "target": n, "rates": o.rates, "median": o.median,
                     "errors": o.errors, "unavailable": o.unavailable, "generator": o.generator,
                     "cpu_us_per_msg": o.cpu_us, "cpu_us_median": o.cpu_median,
                     "busy_pct_broker_generator": o.busy}
                    for (k, n), o in outcomes.items()],
    })
    log(f"compare: wrote {out_path} and {out_path.with_suffix('.json')}")
    if args.update_readme and not interrupted:
        readme = HERE / "README.md"
        try:
            readme.write_text(replace_marked(readme.read_text(), md))
            log(f"compare: updated {readme}")
        except (OSError, ValueError) as exc:
            log(f"compare: README not updated: {exc}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
