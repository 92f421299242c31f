"""AMQP 0-9-1 with pika's BlockingConnection (unmodified) against a real broker."""
from __future__ import annotations

import pika
import pika.exceptions
import pytest

T = 30  # seconds: the bound on every wait (generous: only a failing wait takes that long)


def params(rb, user="guest", password="guest", **kw):
    return pika.ConnectionParameters(host=rb.host, port=rb.ports["amqp"],
                                     credentials=pika.PlainCredentials(user, password),
                                     blocked_connection_timeout=T, socket_timeout=T, **kw)


@pytest.fixture
def conn(running_broker):
    connection = pika.BlockingConnection(params(running_broker))
    yield connection
    if connection.is_open:
        connection.close()


def test_publish_confirm_consume_ack(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-")
    for i in range(20):
        ch.basic_publish("", q, b"m%d" % i, pika.BasicProperties(content_type="text/plain",
                                                                  headers={"i": i}))
    bodies = []
    for method, props, body in ch.consume(q, inactivity_timeout=T):
        assert method is not None, "timed out"
        assert props.content_type == "text/plain"
        assert props.headers == {"i": len(bodies)}
        bodies.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(bodies) == 20:
            break
    ch.cancel()
    assert bodies == [b"m%d" % i for i in range(20)]


def test_mandatory_unroutable_raises(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", "nobody-home", b"x", mandatory=True)
    ch.basic_publish("amq.direct", "nobody-home", b"fine without mandatory")


def test_basic_get_and_redelivery(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert ch.basic_get(q) == (None, None, None)
    ch.basic_publish("", q, b"one")
    method, props, body = ch.basic_get(q)
    assert body == b"one" and not method.redelivered and method.message_count == 0
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = ch.basic_get(q)
    assert body == b"one" and method.redelivered
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert ch.basic_get(q) == (None, None, None)


def test_transactions_hold_publishes_and_acks_until_commit(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.tx_select()
    ch.basic_publish("", q, b"tx1")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    ch.basic_publish("", q, b"tx2")
    ch.tx_rollback()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    method, _, body = ch.basic_get(q)
    assert body == b"tx1"
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()  # the ack is undone: still unacked on this channel
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_tx_and_confirm_do_not_mix(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.tx_select()
    assert err.value.reply_code == 406
    assert conn.channel().is_open


def test_channel_error_reply_code_and_text(conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_declare("absent", passive=True)
    assert err.value.reply_code == 404
    assert err.value.reply_text == "NOT_FOUND - no queue 'absent' in vhost '/'"
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.exchange_declare("x1", exchange_type="direct")
        ch.exchange_declare("x1", exchange_type="fanout")
    assert err.value.reply_code == 406
    assert "inequivalent arg 'type' for exchange 'x1'" in err.value.reply_text
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_bind("amq.gen-none", "amq.direct", "k")
    assert err.value.reply_code == 404
    assert conn.is_open


def test_queue_purge_delete_unbind_and_flags(conn):
    ch = conn.channel()
    ch.exchange_declare("pex", "direct", auto_delete=False)
    q = ch.queue_declare("pq", durable=True).method.queue
    ch.queue_bind(q, "pex", "k")
    for _ in range(3):
        ch.basic_publish("pex", "k", b"x")
    assert ch.queue_purge(q).method.message_count == 3
    ch.queue_unbind(q, "pex", "k")
    ch.basic_publish("pex", "k", b"x")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.basic_publish("", q, b"y")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        ch.queue_delete(q, if_empty=True)
    assert err.value.reply_code == 406
    ch = conn.channel()
    assert ch.queue_delete(q).method.message_count == 1
    ch.exchange_delete("pex", if_unused=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.exchange_declare("pex", passive=True)


def test_recover_requeues_unacked(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"r")
    method, _, _ = ch.basic_get(q)
    ch.basic_recover(requeue=True)
    method, _, body = ch.basic_get(q)
    assert body == b"r" and method.redelivered


def test_wrong_password(running_broker):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as err:
        pika.BlockingConnection(params(running_broker, password="nope"))
    assert "ACCESS_REFUSED" in str(err.value)


def test_channel_max_and_frame_max_are_negotiated(make_broker):
    rb = make_broker(amqp={"frame_max_bytes": 8192, "channel_max": 8})
    connection = pika.BlockingConnection(params(rb, frame_max=8192, channel_max=8))
    try:
        ch = connection.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        body = bytes(range(256)) * 100  # 25600 bytes: several body frames each way
        ch.basic_publish("", q, body)
        method, _, got = ch.basic_get(q, auto_ack=True)
        assert got == body
    finally:
        connection.close()


def test_close_from_client_gives_close_ok(conn):
    ch = conn.channel()
    ch.close()
    assert ch.is_closed
    conn.close()
    assert conn.is_closed


def test_exclusive_consumer_conflict_is_403(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
        other.basic_consume(q, lambda *a: None)
    assert err.value.reply_code == 403
    assert err.value.reply_text == f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"


def test_pika_heartbeats_keep_an_idle_connection(make_broker):
    rb = make_broker(amqp={"heartbeat_s": 1})
    connection = pika.BlockingConnection(params(rb, heartbeat=1))
    try:
        connection.process_data_events(time_limit=2.5)  # idle: only heartbeats flow
        ch = connection.channel()
        assert ch.queue_declare("", exclusive=True).method.queue
    finally:
        connection.close()
