"""Pure-function tests of the side-by-side benchmark harness (benchmarks/compare.py, peers.py,
gen_mqtt.py). No broker or peer is started here: benchmarks are run by hand."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import compare  # noqa: E402
import gen_mqtt  # noqa: E402
import peers  # noqa: E402

CASE = {c.key: c for c in compare.CASES}


@pytest.mark.parametrize("stdout, expected", [
    ('{"msgs_per_s": 1234.5, "complete": true}\n', 1234.5),
    ('starting\n{"messages_per_second": 10}\n', 10.0),
    ("4321.0\n", 4321.0),
    ('{"result": {"throughput": 99}}', 99.0),
    ('{"qos": 0, "publish_per_s": 5.0}', 5.0),
    ('{"qos": 0}\n{"qos": 1, "msgs_per_s": 7}\n', 7.0),  # the last JSON line counts
])
def test_extract_rate_finds_the_rate(stdout, expected):
    rate, how = compare.extract_rate(stdout)
    assert rate == expected, how


@pytest.mark.parametrize("stdout", [
    "", "not json", '{"qos": 1, "messages": 10}', '{"error": "refused", "msgs_per_s": 3}',
    "true", '[1, 2]',
])
def test_extract_rate_reports_why_not(stdout):
    rate, why = compare.extract_rate(stdout)
    assert rate is None and why


def test_extract_rate_with_explicit_key():
    assert compare.extract_rate('{"a": 1, "b": 2}', key="b") == (2.0, "b")


def test_rotation_lets_each_target_lead():
    targets = ["manifold", "mosquitto", "rabbitmq", "amqtt"]
    leaders = [compare.rotation(targets, r)[0] for r in range(4)]
    assert leaders == targets
    assert sorted(compare.rotation(targets, 5)) == sorted(targets)
    assert compare.rotation(["a", "b"], 1) == ["b", "a"]
    assert compare.rotation([], 3) == []


def test_median_ratio_and_formatting():
    assert compare.median([3.0, None, 1.0, 2.0]) == 2.0
    assert compare.median([None, None]) is None
    assert compare.ratio(10.0, 4.0) == 2.5
    assert compare.ratio(None, 4.0) is None and compare.ratio(1.0, 0.0) is None
    assert compare.fmt_rate(12345.6) == "12,346" and compare.fmt_rate(None) == "n/a"
    assert compare.fmt_ratio(0.4321) == "0.43"


def test_render_table_rows_ratios_and_footnotes():
    case = compare.Case("mqtt-qos0", "MQTT QoS 0", "mqtt", (("--qos", "0"),),
                        ("mosquitto", "amqtt"))
    outcomes = {
        ("mqtt-qos0", "manifold"): compare.Outcome(rates=[200.0, 100.0, 300.0]),
        ("mqtt-qos0", "mosquitto"): compare.Outcome(rates=[100.0]),
        ("mqtt-qos0", "amqtt"): compare.Outcome(unavailable="amqtt: exited with code 1\nlog"),
    }
    table, notes = compare.render_table([case], outcomes, "manifold", compare.PEER_LABELS)
    lines = table.splitlines()
    assert lines[0].startswith("| Benchmark | Peer | Manifold msg/s")
    assert "| MQTT QoS 0 | Mosquitto | 200 | 100 | 2.00 |" in lines
    assert "| MQTT QoS 0 | amqtt | 200 | n/a [1] | n/a |" in lines
    assert notes == ["amqtt: exited with code 1"]


def test_render_table_failed_runs_give_first_error():
    case = compare.Case("amqp", "AMQP", "amqp", peers=("rabbitmq",))
    outcomes = {("amqp", "manifold"): compare.Outcome(rates=[None], errors=["timeout 180 s"]),
                ("amqp", "rabbitmq"): compare.Outcome(rates=[5.0])}
    table, notes = compare.render_table([case], outcomes, "manifold", compare.PEER_LABELS)
    assert "| AMQP | RabbitMQ | n/a [1] | 5 | n/a |" in table
    assert notes == ["timeout 180 s"]


def test_generator_command_passes_only_understood_options():
    case = CASE["mqtt-qos1"]
    full = compare.Generator(Path("g.py"), frozenset({"--host", "--port", "--qos",
                                                      "--messages"}), own=True)
    cmd = compare.generator_command("py", full, case, "127.0.0.1", 1234, 500)
    assert cmd == ["py", "g.py", "--host", "127.0.0.1", "--port", "1234", "--qos", "1",
                   "--messages", "500"]
    bare = compare.Generator(Path("g.py"), frozenset({"--host", "--port"}), own=False)
    assert compare.generator_command("py", bare, CASE["amqp"], "h", 1, 500) == \
        ["py", "g.py", "--host", "h", "--port", "1"]
    flags = compare.Generator(Path("g.py"), frozenset({"--host", "--port", "--ack",
                                                       "--confirm"}), own=False)
    amqp_ack = next(c for c in compare.CASES if c.key == "amqp-ack")
    assert compare.generator_command("py", flags, amqp_ack, "h", 1, None) == \
        ["py", "g.py", "--host", "h", "--port", "1", "--ack", "--confirm"]


def test_pick_generator_falls_back_when_an_option_is_missing():
    case = CASE["mqtt-qos1"]  # needs --qos
    adapter = compare.Generator(Path("mqtt_throughput.py"), frozenset({"--host", "--port"}),
                                own=False)
    own = compare.Generator(Path("gen_mqtt.py"), frozenset({"--host", "--port", "--qos"}),
                            own=True)
    assert compare.pick_generator(case, [adapter, own])[0] is own
    gen, why = compare.pick_generator(case, [adapter])
    assert gen is None and "--qos" in why
    gen, why = compare.pick_generator(case, [])
    assert gen is None and "no generator" in why


def test_cases_cover_every_protocol_and_peer():
    assert set(compare.DEFAULT_CASES) == {"amqp", "mqtt-qos0", "mqtt-qos1", "stomp"}
    assert set(compare.DEFAULT_CASES) <= {c.key for c in compare.CASES}
    for case in compare.CASES:
        for peer in case.peers:
            assert peer in peers.PEER_CLASSES


def test_free_ports_are_distinct_and_not_manifold_defaults():
    ports = {peers.free_port() for _ in range(20)}
    assert len(ports) == 20
    assert not ports & peers.MANIFOLD_DEFAULT_PORTS


def test_mqtt_frames():
    assert gen_mqtt._varint(0) == b"\x00"
    assert gen_mqtt._varint(127) == b"\x7f"
    assert gen_mqtt._varint(128) == b"\x80\x01"
    assert gen_mqtt._varint(16383) == b"\xff\x7f"
    assert gen_mqtt.publish_frame(b"t", b"xy", 0) == b"\x30\x05\x00\x01txy"
    assert gen_mqtt.publish_frame(b"t", b"xy", 1, 258) == b"\x32\x07\x00\x01t\x01\x02xy"
    assert gen_mqtt.subscribe_frame(1, b"a/b", 1) == b"\x82\x08\x00\x01\x00\x03a/b\x01"
    connect = gen_mqtt.connect_frame("c")
    assert connect[0] == 0x10 and connect[2:10] == b"\x00\x04MQTT\x04\x02"


def test_mqtt_reader_counts_and_acks_split_packets():
    import asyncio

    class FakeTransport:
        def __init__(self):
            self.written = []

        def write(self, data):
            self.written.append(data)

    async def scenario():
        reader = gen_mqtt.MqttReader(asyncio.Event())
        reader.connection_made(FakeTransport())
        stream = (gen_mqtt.publish_frame(b"t", b"x" * 200, 1, 7)
                  + gen_mqtt.publish_frame(b"t", b"y", 0) + b"\x40\x02\x00\x07"
                  + b"\x90\x03\x00\x01\x01")
        for i in range(0, len(stream), 5):  # arbitrary fragmentation
            reader.data_received(stream[i:i + 5])
        return reader

    reader = asyncio.run(scenario())
    assert reader.publishes == 2 and reader.pubacks == 1
    assert b"".join(reader.transport.written) == b"\x40\x02\x00\x07"
    assert reader.control.get_nowait() == b"\x90\x03\x00\x01\x01"


def test_replace_marked_keeps_what_is_around_the_markers():
    text = f"intro\n{compare.BEGIN_MARK}\nold table\n{compare.END_MARK}\nafter\n"
    out = compare.replace_marked(text, "new table\n")
    assert out == f"intro\n{compare.BEGIN_MARK}\nnew table\n{compare.END_MARK}\nafter\n"
    assert compare.replace_marked(out, "new table") == out
    with pytest.raises(ValueError):
        compare.replace_marked("no markers", "x")


def test_mqtt5_frames_and_connack_receive_maximum():
    assert gen_mqtt.publish_frame(b"t", b"xy", 0, version=5) == b"\x30\x06\x00\x01t\x00xy"
    assert gen_mqtt.publish_frame(b"t", b"xy", 1, 258, 5) == b"\x32\x08\x00\x01t\x01\x02\x00xy"
    assert gen_mqtt.subscribe_frame(1, b"a", 1, 5) == b"\x82\x07\x00\x01\x00\x00\x01a\x01"
    assert gen_mqtt.connect_frame("c", version=5)[8:10] == b"\x05\x02"
    # CONNACK 5.0: flags 0, reason 0, properties: receive maximum 20, assigned client id "ab"
    connack = b"\x20\x0a\x00\x00\x07\x21\x00\x14\x12\x00\x02ab"
    assert gen_mqtt.parse_connack(connack, 5) == (0, {0x21: 20, 0x12: b"ab"})
    assert gen_mqtt.parse_connack(b"\x20\x02\x00\x05", 4) == (5, {})
    assert gen_mqtt.parse_connack(b"\x20\x03\x00\x87\x00", 5) == (0x87, {})


def test_render_cpu_table_shares_footnotes():
    case = CASE["stomp"]
    outcomes = {("stomp", "manifold"): compare.Outcome(rates=[10.0, 20.0], cpu_us=[12.0, 14.0]),
                ("stomp", "rabbitmq"): compare.Outcome(unavailable="rabbitmq: not listening")}
    _, notes = compare.render_table([case], outcomes, "manifold", compare.PEER_LABELS)
    table, notes = compare.render_table([case], outcomes, "manifold", compare.PEER_LABELS,
                                        "cpu", notes)
    assert "| Benchmark | Peer | Manifold µs CPU/msg | Peer µs CPU/msg | Manifold / peer |" in table
    assert "| STOMP 1.2 | RabbitMQ | 13.0 | n/a [1] | n/a |" in table
    assert notes == ["rabbitmq: not listening"]


def test_group_cpu_seconds_of_our_own_group():
    import os
    cpu = peers.group_cpu_seconds(os.getpgrp())  # this process is in it, and has run
    assert cpu is not None and cpu > 0
    assert peers.group_cpu_seconds(2 ** 22 + 12345) is None  # no such group


BURN = """
import sys, time
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""


def test_group_cpu_seconds_counts_what_a_group_burnt():
    import subprocess
    proc = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == "burnt\n"
        cpu = peers.group_cpu_seconds(proc.pid)  # its own group: start_new_session
        # 0.3 s of CPU burnt, plus the interpreter's start; clock ticks round down
        assert cpu is not None and 0.28 <= cpu < 30
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert peers.group_cpu_seconds(proc.pid) is None  # gone
