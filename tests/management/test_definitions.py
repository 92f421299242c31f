"""Definitions in RabbitMQ's format, both ways, with a RabbitMQ 3.10 export as the fixture."""
from __future__ import annotations

import json
from pathlib import Path

import pika
import pytest

from .helpers import TIMEOUT_S, base_url, session

FIXTURE = Path(__file__).parent / "fixtures" / "rabbitmq-3.10-definitions.json"


def amqp_login(broker, user: str, password: str) -> None:
    params = pika.ConnectionParameters("127.0.0.1", broker.ports["amqp"],
                                       credentials=pika.PlainCredentials(user, password),
                                       connection_attempts=1, socket_timeout=TIMEOUT_S)
    pika.BlockingConnection(params).close()


def import_fixture(broker) -> dict:
    resp = session().post(base_url(broker) + "/api/definitions", timeout=TIMEOUT_S,
                          data=FIXTURE.read_bytes(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_rabbitmq_export_imports_and_reports_what_it_cannot_honour(running_broker):
    report = import_fixture(running_broker)
    assert report["imported"] == {"vhosts": 2, "users": 4, "permissions": 4,
                                  "topic_permissions": 1, "exchanges": 2, "queues": 4,
                                  "bindings": 3, "policies": 1}
    skipped = "\n".join(report["not_honoured"])
    for expected in ("cluster_name", "internal_cluster_id", "'capped': limits", "ha-mode",
                     "applied to 1 existing queue"):
        assert expected in skipped, expected
    assert len(report["not_honoured"]) == 5, report["not_honoured"]
    base, s = base_url(running_broker), session()
    queues = {q["name"]: q for q in s.get(base + "/api/queues", timeout=TIMEOUT_S).json()}
    assert set(queues) == {"orders", "payments", "events", "staging-jobs"}
    assert queues["staging-jobs"]["vhost"] == "staging"
    assert queues["payments"]["type"] == "quorum" and queues["events"]["type"] == "stream"
    assert queues["orders"]["arguments"]["x-max-length"] == 100000
    routed = s.post(base + "/api/exchanges/%2F/shop/publish", timeout=TIMEOUT_S,
                    json={"routing_key": "order.created", "payload": "{}",
                          "payload_encoding": "string", "properties": {}}).json()
    assert routed == {"routed": True}
    assert s.get(base + "/api/queues/%2F/orders", timeout=TIMEOUT_S).json()["messages"] == 1


@pytest.mark.parametrize("user,password", [("migrated", "test12"),        # sha256
                                           ("reporting", "reports-2022"),  # sha512
                                           ("legacy", "old-app-pw")])      # md5
def test_imported_users_log_in_with_their_rabbitmq_password(running_broker, user, password):
    import_fixture(running_broker)
    amqp_login(running_broker, user, password)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp_login(running_broker, user, password + "-wrong")


def test_imported_tags_apply_to_the_management_api(running_broker):
    import_fixture(running_broker)
    base = base_url(running_broker)
    admin = session("migrated", "test12")
    assert admin.get(base + "/api/whoami", timeout=TIMEOUT_S).json() == {
        "name": "migrated", "tags": ["administrator"]}
    monitor = session("reporting", "reports-2022")
    assert monitor.get(base + "/api/queues", timeout=TIMEOUT_S).status_code == 200
    assert monitor.get(base + "/api/users", timeout=TIMEOUT_S).status_code == 403
    # its imported permission has configure "" and write "": deleting is refused
    refused = monitor.delete(base + "/api/queues/%2F/orders", timeout=TIMEOUT_S)
    assert refused.status_code == 403 and "configure access" in refused.json()["reason"]
    assert session("legacy", "old-app-pw").get(base + "/api/overview",
                                               timeout=TIMEOUT_S).status_code == 403


def test_round_trip_between_brokers(make_broker):
    first, second = make_broker(), make_broker()
    import_fixture(first)
    exported = session().get(base_url(first) + "/api/definitions", timeout=TIMEOUT_S).json()
    hashes = {u["name"]: (u["password_hash"], u["hashing_algorithm"]) for u in exported["users"]}
    assert hashes["migrated"] == ("kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
                                  "rabbit_password_hashing_sha256")
    report = session().post(base_url(second) + "/api/definitions", json=exported,
                            timeout=TIMEOUT_S).json()
    # guest's password came in plaintext from the configuration: only an HMAC is in memory
    assert report["not_honoured"] == [
        "user 'guest': no password_hash (the existing user is kept)"]
    again = session().get(base_url(second) + "/api/definitions", timeout=TIMEOUT_S).json()
    for section in ("queues", "exchanges", "bindings", "permissions"):
        key = json.dumps
        assert sorted(map(key, again[section])) == sorted(map(key, exported[section])), section
    assert {u["name"]: u["password_hash"] for u in again["users"]} == {
        u["name"]: u["password_hash"] for u in exported["users"]}
    amqp_login(second, "migrated", "test12")


def test_bad_hash_is_reported_not_imported(running_broker):
    doc = {"users": [{"name": "broken", "password_hash": "not base64!",
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []},
                     {"name": "odd", "password_hash": "AAAA",
                      "hashing_algorithm": "rabbit_password_hashing_bcrypt", "tags": []}]}
    report = session().post(base_url(running_broker) + "/api/definitions", json=doc,
                            timeout=TIMEOUT_S).json()
    assert report["imported"] == {}
    assert any("'broken'" in r and "base64" in r for r in report["not_honoured"])
    assert any("'odd'" in r and "unknown hashing_algorithm" in r for r in report["not_honoured"])
