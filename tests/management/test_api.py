"""The management API with requests: RabbitMQ's paths, field names, status codes, auth rules."""
from __future__ import annotations

import pika
import pytest

from .helpers import TIMEOUT_S, base_url, session, wait_for


@pytest.fixture
def api(running_broker):
    return base_url(running_broker), session()


def test_no_credentials_is_401_with_basic_challenge(running_broker):
    import requests
    resp = requests.get(base_url(running_broker) + "/api/overview", timeout=TIMEOUT_S)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


def test_wrong_password_is_401_with_json_error(running_broker):
    resp = session("guest", "wrong").get(base_url(running_broker) + "/api/overview",
                                         timeout=TIMEOUT_S)
    assert resp.status_code == 401
    assert resp.json()["error"] == "not_authorised"
    assert "WWW-Authenticate" not in resp.headers


def test_user_without_management_tag_gets_403(running_broker):
    base, admin = base_url(running_broker), session()
    assert admin.put(base + "/api/users/app", json={"password": "pw", "tags": ""},
                     timeout=TIMEOUT_S).status_code == 201
    resp = session("app", "pw").get(base + "/api/queues", timeout=TIMEOUT_S)
    assert resp.status_code == 403


def test_monitoring_reads_but_cannot_change(running_broker):
    base, admin = base_url(running_broker), session()
    admin.put(base + "/api/users/watcher", json={"password": "pw", "tags": "monitoring"},
              timeout=TIMEOUT_S).raise_for_status()
    watcher = session("watcher", "pw")
    assert watcher.get(base + "/api/queues", timeout=TIMEOUT_S).status_code == 200
    assert watcher.put(base + "/api/queues/%2F/nope", json={},
                       timeout=TIMEOUT_S).status_code == 403
    assert watcher.get(base + "/api/users", timeout=TIMEOUT_S).status_code == 403
    assert watcher.get(base + "/api/whoami", timeout=TIMEOUT_S).json() == {
        "name": "watcher", "tags": ["monitoring"]}


def test_declare_queue_created_then_exists_then_conflict(api):
    base, s = api
    assert s.put(base + "/api/queues/%2F/jobs", json={"durable": "true", "auto_delete": "false"},
                 timeout=TIMEOUT_S).status_code == 201
    assert s.put(base + "/api/queues/%2F/jobs", json={"durable": True},
                 timeout=TIMEOUT_S).status_code == 204
    conflict = s.put(base + "/api/queues/%2F/jobs", json={"durable": "false"}, timeout=TIMEOUT_S)
    assert conflict.status_code == 400
    assert "inequivalent arg 'durable'" in conflict.json()["reason"]
    queue = s.get(base + "/api/queues/%2F/jobs", timeout=TIMEOUT_S).json()
    assert queue["name"] == "jobs" and queue["vhost"] == "/" and queue["durable"] is True
    for field in ("messages", "messages_ready", "messages_unacknowledged", "consumers", "memory",
                  "arguments", "message_stats"):
        assert field in queue


def test_unknown_queue_is_404_json(api):
    base, s = api
    resp = s.get(base + "/api/queues/%2F/missing", timeout=TIMEOUT_S)
    assert resp.status_code == 404
    assert resp.json()["error"] == "Object Not Found"
    assert s.get(base + "/api/queues/nohost", timeout=TIMEOUT_S).status_code == 404


def test_publish_get_with_ackmodes_and_purge(api):
    base, s = api
    s.put(base + "/api/queues/%2F/work", json={}, timeout=TIMEOUT_S).raise_for_status()
    for i in range(3):
        resp = s.post(base + "/api/exchanges/%2F/amq.default/publish", timeout=TIMEOUT_S,
                      json={"routing_key": "work", "payload": f"m{i}", "payload_encoding": "string",
                            "properties": {"content_type": "text/plain", "headers": {"n": i}}})
        assert resp.json() == {"routed": True}
    unrouted = s.post(base + "/api/exchanges/%2F/amq.default/publish", timeout=TIMEOUT_S,
                      json={"routing_key": "nowhere", "payload": "x", "payload_encoding": "string",
                            "properties": {}})
    assert unrouted.json() == {"routed": False}
    peek = s.post(base + "/api/queues/%2F/work/get", timeout=TIMEOUT_S,
                  json={"count": "2", "ackmode": "ack_requeue_true", "encoding": "auto"}).json()
    assert [m["payload"] for m in peek] == ["m0", "m1"]
    assert peek[0]["properties"] == {"content_type": "text/plain", "headers": {"n": 0}}
    taken = s.post(base + "/api/queues/%2F/work/get", timeout=TIMEOUT_S,
                   json={"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64"}).json()
    assert taken[0]["payload"] == "bTA=" and taken[0]["payload_encoding"] == "base64"
    assert taken[0]["redelivered"] is True and taken[0]["message_count"] == 2
    assert s.delete(base + "/api/queues/%2F/work/contents", timeout=TIMEOUT_S).status_code == 204
    assert s.get(base + "/api/queues/%2F/work", timeout=TIMEOUT_S).json()["messages"] == 0


def test_exchange_binding_lifecycle(api):
    base, s = api
    assert s.put(base + "/api/exchanges/%2F/events", json={"type": "topic", "durable": "true"},
                 timeout=TIMEOUT_S).status_code == 201
    s.put(base + "/api/queues/%2F/audit", json={}, timeout=TIMEOUT_S).raise_for_status()
    created = s.post(base + "/api/bindings/%2F/e/events/q/audit", json={"routing_key": "a.#"},
                     timeout=TIMEOUT_S)
    assert created.status_code == 201
    rows = s.get(base + "/api/bindings/%2F/e/events/q/audit", timeout=TIMEOUT_S).json()
    assert [(r["routing_key"], r["properties_key"]) for r in rows] == [("a.#", "a.#")]
    routed = s.post(base + "/api/exchanges/%2F/events/publish", timeout=TIMEOUT_S,
                    json={"routing_key": "a.b", "payload": "e", "payload_encoding": "string",
                          "properties": {}}).json()
    assert routed == {"routed": True}
    assert s.delete(base + "/api/bindings/%2F/e/events/q/audit/a.%23",
                    timeout=TIMEOUT_S).status_code == 204
    assert s.get(base + "/api/bindings/%2F/e/events/q/audit", timeout=TIMEOUT_S).json() == []
    assert s.delete(base + "/api/exchanges/%2F/events", timeout=TIMEOUT_S).status_code == 204
    assert s.delete(base + "/api/exchanges/%2F/amq.direct", timeout=TIMEOUT_S).status_code == 403


def test_paging_sorting_and_columns(api):
    base, s = api
    for name in ("c", "a", "b"):
        s.put(base + f"/api/queues/%2F/{name}", json={}, timeout=TIMEOUT_S).raise_for_status()
    page = s.get(base + "/api/queues?page=2&page_size=2&sort=name&columns=name,messages",
                 timeout=TIMEOUT_S).json()
    assert page["items"] == [{"name": "c", "messages": 0}]
    assert (page["page"], page["page_count"], page["total_count"], page["filtered_count"]) == (
        2, 2, 3, 3)
    rows = s.get(base + "/api/queues?sort=name&sort_reverse=true&columns=name",
                 timeout=TIMEOUT_S).json()
    assert rows == [{"name": "c"}, {"name": "b"}, {"name": "a"}]
    bad = s.get(base + "/api/queues?page=0", timeout=TIMEOUT_S)
    assert bad.status_code == 400


def test_connection_listed_and_closed_with_reason(running_broker):
    base, s = base_url(running_broker), session()
    params = pika.ConnectionParameters("127.0.0.1", running_broker.ports["amqp"])
    conn = pika.BlockingConnection(params)
    conn.channel()
    rows = wait_for(lambda: [r for r in s.get(base + "/api/connections", timeout=TIMEOUT_S).json()
                             if r["user"] == "guest"], what="the connection in the list")
    row = rows[0]
    assert row["protocol"] == "amqp" and row["vhost"] == "/" and row["channels"] == 1
    assert row["peer_host"] == "127.0.0.1" and row["peer_port"] > 0
    channels = s.get(base + "/api/channels", timeout=TIMEOUT_S).json()
    assert channels and channels[0]["connection_details"]["name"] == row["name"]
    import urllib.parse
    resp = s.delete(base + "/api/connections/" + urllib.parse.quote(row["name"], safe=""),
                    headers={"X-Reason": "maintenance window"}, timeout=TIMEOUT_S)
    assert resp.status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(50):
            conn.process_data_events(0.1)
    assert closed.value.reply_code == 320
    assert "maintenance window" in closed.value.reply_text
    wait_for(lambda: s.get(base + "/api/connections", timeout=TIMEOUT_S).json() == [],
             what="the connection to leave the list")


def test_consumers_and_overview(make_broker):
    running_broker = make_broker(management={"sample_interval_s": 0.2})
    base, s = base_url(running_broker), session()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1",
                                                             running_broker.ports["amqp"]))
    try:
        ch = conn.channel()
        ch.queue_declare("watched")
        ch.basic_consume("watched", lambda *a: None, consumer_tag="ctag-1")
        consumers = wait_for(lambda: s.get(base + "/api/consumers", timeout=TIMEOUT_S).json(),
                             what="the consumer")
        assert consumers[0]["consumer_tag"] == "ctag-1"
        assert consumers[0]["queue"] == {"name": "watched", "vhost": "/"}
        # the overview's queue figures are sampled (every sample_interval_s), as in RabbitMQ
        overview = wait_for(lambda: (o := s.get(base + "/api/overview", timeout=TIMEOUT_S).json())
                            ["object_totals"]["consumers"] == 1 and o, what="sampled totals")
        assert overview["object_totals"]["connections"] == 1
        assert "publish_details" in overview["message_stats"]
    finally:
        conn.close()


def test_health_and_aliveness(api):
    base, s = api
    assert s.get(base + "/api/health/checks/alarms", timeout=TIMEOUT_S).json() == {"status": "ok"}
    assert s.get(base + "/api/aliveness-test/%2F", timeout=TIMEOUT_S).json() == {"status": "ok"}
    assert [v["name"] for v in s.get(base + "/api/vhosts", timeout=TIMEOUT_S).json()] == ["/"]


def test_bad_json_is_400_not_500(api):
    base, s = api
    resp = s.put(base + "/api/queues/%2F/x", data="{nope", timeout=TIMEOUT_S,
                 headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["reason"]
    resp = s.post(base + "/api/exchanges/%2F/amq.default/publish", timeout=TIMEOUT_S,
                  json={"routing_key": "x", "payload": "!!", "payload_encoding": "base64"})
    assert resp.status_code == 400
