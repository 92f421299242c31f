"""/metrics parsed with prometheus_client's own text parser."""
from __future__ import annotations

import pika
import requests
from prometheus_client.parser import text_string_to_metric_families

from .helpers import TIMEOUT_S, base_url, session, wait_for


def scrape(broker) -> dict:
    resp = session().get(base_url(broker) + "/metrics", timeout=TIMEOUT_S)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


def sample(families: dict, family: str, name: str | None = None, **labels) -> float:
    for s in families[family].samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v
                                                     for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name or family} {labels}")


def test_queue_connection_memory_and_fsync_metrics(make_broker):
    broker = make_broker(persistence={"fsync": "always"})
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.ports["amqp"]))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("metered", durable=True)
        for i in range(5):
            ch.basic_publish("", "metered", b"x" * 10,
                             pika.BasicProperties(delivery_mode=2))
        method, _, _ = ch.basic_get("metered")
        ch.basic_ack(method.delivery_tag)
        ch.basic_get("metered")  # left unacked
        ch.queue_declare("log", durable=True, arguments={"x-queue-type": "stream"})
        ch.basic_publish("", "log", b"entry")
        families = scrape(broker)
        q = {"vhost": "/", "queue": "metered"}
        assert sample(families, "manifold_queue_messages", **q) == 4
        assert sample(families, "manifold_queue_messages_ready", **q) == 3
        assert sample(families, "manifold_queue_messages_unacked", **q) == 1
        assert sample(families, "manifold_queue_published", "manifold_queue_published_total",
                      **q) == 5
        assert sample(families, "manifold_queue_delivered", "manifold_queue_delivered_total",
                      **q) == 2
        assert sample(families, "manifold_queue_acked", "manifold_queue_acked_total", **q) == 1
        assert sample(families, "manifold_connections", protocol="amqp") == 1
        assert sample(families, "manifold_connections", protocol="mqtt") == 0
        assert sample(families, "manifold_memory_message_bytes") > 0
        assert sample(families, "manifold_disk_free_bytes") > 0
        fsyncs = sample(families, "manifold_fsync_seconds", "manifold_fsync_seconds_count")
        assert fsyncs >= 1
        assert sample(families, "manifold_fsync_seconds", "manifold_fsync_seconds_bucket",
                      le="+Inf") == fsyncs
        assert sample(families, "manifold_stream_bytes", vhost="/", stream="log") > 5
        assert sample(families, "manifold_stream_last_offset", vhost="/", stream="log") == 0
    finally:
        conn.close()


def test_metrics_need_monitoring_rights(running_broker):
    assert requests.get(base_url(running_broker) + "/metrics",
                        timeout=TIMEOUT_S).status_code == 401
    s = session()
    s.put(base_url(running_broker) + "/api/users/ops", json={"password": "pw",
                                                              "tags": "management"},
          timeout=TIMEOUT_S).raise_for_status()
    assert session("ops", "pw").get(base_url(running_broker) + "/metrics",
                                    timeout=TIMEOUT_S).status_code == 403


def test_rates_appear_after_a_sample(make_broker):
    broker = make_broker(management={"sample_interval_s": 0.2})
    base, s = base_url(broker), session()
    s.put(base + "/api/queues/%2F/busy", json={}, timeout=TIMEOUT_S).raise_for_status()
    published = 0

    def publish_and_read_rate() -> bool:
        nonlocal published
        s.post(base + "/api/exchanges/%2F/amq.default/publish", timeout=TIMEOUT_S,
               json={"routing_key": "busy", "payload": "x", "payload_encoding": "string",
                     "properties": {}}).raise_for_status()
        published += 1
        queue = s.get(base + "/api/queues/%2F/busy", timeout=TIMEOUT_S).json()
        return queue["message_stats"]["publish_details"]["rate"] > 0

    wait_for(publish_and_read_rate, what="a publish rate while publishing")
    wait_for(lambda: s.get(base + "/api/manifold/history", timeout=TIMEOUT_S).json()
             ["samples"][-1]["messages"] == published, what="the history to catch up")


def test_label_values_are_escaped(running_broker):
    name = 'odd "name" \\ with\nnewline'
    import urllib.parse
    session().put(base_url(running_broker) + "/api/queues/%2F/" + urllib.parse.quote(name, safe=""),
                  json={}, timeout=TIMEOUT_S).raise_for_status()
    families = scrape(running_broker)
    assert sample(families, "manifold_queue_messages", vhost="/", queue=name) == 0
