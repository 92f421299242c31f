"""The ``manifold`` operations CLI, run as a subprocess against a live broker."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pika

from .helpers import TIMEOUT_S, base_url, session

MANIFOLD = [sys.executable, "-m", "manifold.broker.cli"]


def manifold(broker, *args: str, env: dict | None = None, stdin: str | None = None,
             url: bool = True) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MANIFOLD_")}
    if url:
        environ["MANIFOLD_URL"] = base_url(broker)
    environ.update(env or {})
    return subprocess.run([*MANIFOLD, *args], capture_output=True, text=True, input=stdin,
                          timeout=180, env=environ)  # generous: a loaded machine


def json_out(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # nothing but JSON on stdout


def test_declare_publish_list_get_purge_delete(running_broker):
    assert manifold(running_broker, "declare", "queue", "tasks").returncode == 0
    published = manifold(running_broker, "publish", "--routing-key", "tasks", "--body", "job 1",
                         "--content-type", "text/plain", "-H", "trace=abc")
    assert published.returncode == 0 and "published" in published.stdout
    # options after the subcommand words, and before them
    queues = json_out(manifold(running_broker, "list", "queues", "--format", "json"))
    assert [(q["name"], q["messages"]) for q in queues] == [("tasks", 1)]
    queues = json_out(manifold(running_broker, "--format", "json", "list", "queues"))
    assert queues[0]["messages_ready"] == 1
    table = manifold(running_broker, "list", "queues")
    assert "tasks" in table.stdout and "messages" in table.stdout
    got = json_out(manifold(running_broker, "get", "tasks", "-f", "json"))
    assert got[0]["payload"] == "job 1"
    assert got[0]["properties"]["headers"] == {"trace": "abc"}
    purged = json_out(manifold(running_broker, "-f", "json", "purge", "queue", "tasks"))
    assert purged == {"name": "tasks", "vhost": "/", "message_count": 1}
    assert manifold(running_broker, "delete", "queue", "tasks").returncode == 0
    assert json_out(manifold(running_broker, "list", "queues", "-f", "json")) == []


def test_exchange_and_binding(running_broker):
    assert manifold(running_broker, "declare", "exchange", "events", "--type", "topic").returncode == 0
    assert manifold(running_broker, "declare", "queue", "audit").returncode == 0
    assert manifold(running_broker, "declare", "binding", "events", "audit", "-k",
                    "user.*").returncode == 0
    bindings = json_out(manifold(running_broker, "list", "bindings", "-f", "json"))
    assert {(b["source"], b["destination"], b["routing_key"]) for b in bindings} >= {
        ("events", "audit", "user.*")}
    routed = json_out(manifold(running_broker, "publish", "-e", "events", "-k", "user.new",
                               "--body", "{}", "-f", "json"))
    assert routed == {"routed": True}
    assert manifold(running_broker, "delete", "binding", "events", "audit", "-k",
                    "user.*").returncode == 0
    routed = json_out(manifold(running_broker, "publish", "-e", "events", "-k", "user.new",
                               "--body", "{}", "-f", "json"))
    assert routed == {"routed": False}


def test_status_users_permissions(running_broker):
    status = json_out(manifold(running_broker, "status", "-f", "json"))
    assert status["product_name"] == "Manifold"
    assert "publish" in manifold(running_broker, "status").stdout
    assert manifold(running_broker, "users", "add", "ann", "-P", "pw1",
                    "--tags", "management").returncode == 0
    assert manifold(running_broker, "permissions", "set", "ann").returncode == 0
    perms = json_out(manifold(running_broker, "permissions", "list", "-f", "json"))
    assert {"user": "ann", "vhost": "/", "configure": ".*", "write": ".*",
            "read": ".*"} in perms
    assert manifold(running_broker, "users", "passwd", "ann", "-P", "pw2").returncode == 0
    users = json_out(manifold(running_broker, "users", "list", "-f", "json"))
    assert ["management"] == next(u["tags"] for u in users if u["name"] == "ann")
    whoami = session("ann", "pw2").get(base_url(running_broker) + "/api/whoami",
                                       timeout=TIMEOUT_S)
    assert whoami.json()["name"] == "ann"
    listed = json_out(manifold(running_broker, "list", "queues", "-f", "json", "--user", "ann",
                               "--password", "pw2"))
    assert listed == []
    assert manifold(running_broker, "users", "delete", "ann").returncode == 0


def test_definitions_export_import(running_broker, tmp_path):
    manifold(running_broker, "declare", "queue", "kept")
    target = tmp_path / "defs.json"
    assert manifold(running_broker, "definitions", "export", str(target)).returncode == 0
    doc = json.loads(target.read_text())
    assert [q["name"] for q in doc["queues"]] == ["kept"]
    doc["queues"].append({"name": "added", "vhost": "/", "durable": True, "auto_delete": False,
                          "arguments": {}})
    doc["global_parameters"] = [{"name": "cluster_name", "value": "rabbit@old"}]
    target.write_text(json.dumps(doc))
    imported = manifold(running_broker, "definitions", "import", str(target))
    assert imported.returncode == 6  # done, but something was not honoured
    assert "cluster_name" in imported.stderr
    names = {q["name"] for q in json_out(manifold(running_broker, "list", "queues", "-f",
                                                  "json"))}
    assert names == {"kept", "added"}


def test_messages_export_import_keeps_order_and_properties(running_broker, tmp_path):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1",
                                                             running_broker.ports["amqp"]))
    ch = conn.channel()
    ch.queue_declare("source")
    ch.queue_declare("copy")
    for i in range(30):
        ch.basic_publish("", "source", f"m{i}".encode(), pika.BasicProperties(
            content_type="application/json", headers={"i": i}))
    ch.basic_publish("", "source", b"\xff\x00binary", pika.BasicProperties(headers={"i": 30}))
    conn.close()
    dump = tmp_path / "source.jsonl"
    exported = manifold(running_broker, "messages", "export", "source", str(dump))
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == ""  # no progress bar when not on a terminal
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(lines) == 31
    assert lines[-1]["payload_encoding"] == "base64"
    queue = session().get(base_url(running_broker) + "/api/queues/%2F/source",
                          timeout=TIMEOUT_S).json()
    assert queue["messages"] == 31  # export without --remove leaves them
    imported = manifold(running_broker, "messages", "import", str(dump), "copy")
    assert imported.returncode == 0, imported.stderr
    got = session().post(base_url(running_broker) + "/api/queues/%2F/copy/get",
                         json={"count": 40, "ackmode": "ack_requeue_false",
                               "encoding": "base64"}, timeout=TIMEOUT_S).json()
    import base64
    assert [base64.b64decode(m["payload"]) for m in got] == (
        [f"m{i}".encode() for i in range(30)] + [b"\xff\x00binary"])
    assert got[0]["properties"] == {"content_type": "application/json", "headers": {"i": 0}}
    moved = manifold(running_broker, "messages", "export", "source", str(dump), "--remove")
    assert moved.returncode == 0
    assert session().get(base_url(running_broker) + "/api/queues/%2F/source",
                         timeout=TIMEOUT_S).json()["messages"] == 0


def test_close_connection(running_broker):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1",
                                                             running_broker.ports["amqp"]))
    try:
        rows = json_out(manifold(running_broker, "list", "connections", "-f", "json"))
        closed = manifold(running_broker, "close", "connection", rows[0]["name"], "--reason",
                          "bye")
        assert closed.returncode == 0, closed.stderr
    finally:
        try:
            conn.close()
        except pika.exceptions.AMQPError:
            pass
    assert json_out(manifold(running_broker, "list", "connections", "-f", "json")) == []


def test_exit_codes_and_messages(running_broker):
    missing = manifold(running_broker, "purge", "queue", "nope")
    assert missing.returncode == 5 and "no queue 'nope'" in missing.stderr
    assert missing.stdout == ""
    refused = manifold(running_broker, "status", "--password", "wrong")
    assert refused.returncode == 4 and "--password" in refused.stderr
    unreachable = manifold(running_broker, "status", "--url", "http://127.0.0.1:9", url=False)
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr
    usage = manifold(running_broker, "list", "bananas")
    assert usage.returncode == 2
