"""Permission matrix over AMQP 0-9-1 with pika: every operation allowed and denied, as RabbitMQ
(channel close 403 ACCESS_REFUSED; vhost refusal 530 NOT_ALLOWED; bad login 403)."""
from __future__ import annotations

import pika
import pika.exceptions
import pytest

USERS = {
    "users": [{"name": "lim", "password": "lim-pw"}],
    "vhosts": [{"name": "secret"}, {"name": "tiny", "max_connections": 1, "max_queues": 1}],
    "permissions": [
        {"user": "lim", "vhost": "/", "configure": "^lim\\.",
         "write": "^(lim\\..*|amq\\.topic)$", "read": "^(lim\\..*|amq\\.topic)$"},
        {"user": "lim", "vhost": "tiny", "configure": ".*", "write": ".*", "read": ".*"}],
    "topic_permissions": [{"user": "lim", "vhost": "/", "exchange": "amq.topic",
                           "write": "^sensors\\.", "read": "^sensors\\."}],
}


@pytest.fixture
def rb(make_broker):
    rb = make_broker(**USERS)
    # the resources "lim" may not touch, made by the administrator (guest)
    admin = connect(rb, "guest", "guest")
    ch = admin.channel()
    ch.queue_declare("other.q")
    ch.exchange_declare("other.x", "direct")
    admin.close()
    return rb


def connect(rb, user, password, vhost="/"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", rb.ports["amqp"], virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password), connection_attempts=1,
        socket_timeout=30, blocked_connection_timeout=30))


def connect_refused(rb, user, password, vhost="/") -> str:
    """The broker's Connection.Close as pika reports it: '(530) "NOT_ALLOWED - ..."'."""
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        connect(rb, user, password, vhost)
    return str(info.value)


def refused(conn, operation) -> int:
    """Run ``operation(channel)`` on a new channel; the reply code the broker closed it with."""
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        operation(ch)
        ch.basic_qos(prefetch_count=1)  # a round trip: a refused publish closes the channel
    assert "ACCESS_REFUSED" in info.value.reply_text
    return info.value.reply_code


def test_amqp_permission_matrix(rb):
    conn = connect(rb, "lim", "lim-pw")
    ch = conn.channel()
    # configure: declare and delete
    ch.queue_declare("lim.q")
    ch.exchange_declare("lim.x", "topic")
    assert refused(conn, lambda c: c.queue_declare("other.q2")) == 403
    assert refused(conn, lambda c: c.exchange_declare("other.x2", "direct")) == 403
    assert refused(conn, lambda c: c.queue_delete("other.q")) == 403
    assert refused(conn, lambda c: c.exchange_delete("other.x")) == 403
    ch.queue_declare("other.q", passive=True)  # passive: only looks
    # bind: write on the queue, read on the exchange, topic read on the key
    ch.queue_bind("lim.q", "lim.x", "k")
    ch.queue_bind("lim.q", "amq.topic", "sensors.#")
    assert refused(conn, lambda c: c.queue_bind("lim.q", "other.x", "k")) == 403
    assert refused(conn, lambda c: c.queue_bind("other.q", "lim.x", "k")) == 403
    assert refused(conn, lambda c: c.queue_bind("lim.q", "amq.topic", "actuators.#")) == 403
    assert refused(conn, lambda c: c.queue_unbind("other.q", "lim.x", "k")) == 403
    assert refused(conn, lambda c: c.exchange_bind("lim.x", "other.x", "k")) == 403
    # publish: write on the exchange, topic write on the routing key
    ch.basic_publish("lim.x", "k", b"to lim.x")
    ch.basic_publish("amq.topic", "sensors.t", b"to sensors")
    assert refused(conn, lambda c: c.basic_publish("other.x", "k", b"x")) == 403
    assert refused(conn, lambda c: c.basic_publish("", "lim.q", b"x")) == 403  # amq.default
    assert refused(conn, lambda c: c.basic_publish("amq.topic", "actuators.t", b"x")) == 403
    # consume, get, purge: read on the queue
    bodies = []
    for _ in range(2):
        method, _, body = ch.basic_get("lim.q", auto_ack=True)
        bodies.append(body)
    assert sorted(bodies) == [b"to lim.x", b"to sensors"]
    ch.basic_consume("lim.q", lambda *a: None, auto_ack=True)
    ch.queue_purge("lim.q")
    assert refused(conn, lambda c: c.basic_get("other.q")) == 403
    assert refused(conn, lambda c: c.basic_consume("other.q", lambda *a: None)) == 403
    assert refused(conn, lambda c: c.queue_purge("other.q")) == 403
    ch.queue_delete("lim.q")
    ch.exchange_delete("lim.x")
    # a refusal closes that channel only: the connection and other channels go on
    assert conn.is_open and ch.is_open
    conn.close()


def test_amqp_vhost_and_login_refusals(rb):
    # no permissions on the vhost
    assert "(530) \"NOT_ALLOWED - access to vhost 'secret' refused for user 'lim'" in \
        connect_refused(rb, "lim", "lim-pw", vhost="secret")
    # pika announces authentication_failure_close: Connection.Close 403
    assert "(403) 'ACCESS_REFUSED - Login was refused" in connect_refused(rb, "lim", "nope")
    assert "(403)" in connect_refused(rb, "nobody", "x")


def test_amqp_vhost_limits(rb):
    first = connect(rb, "lim", "lim-pw", vhost="tiny")
    assert "(530)" in connect_refused(rb, "lim", "lim-pw", vhost="tiny")
    ch = first.channel()
    ch.queue_declare("one")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare("two")
    assert info.value.reply_code == 406 and "queue limit" in info.value.reply_text
    first.close()
    connect(rb, "lim", "lim-pw", vhost="tiny").close()  # the slot came back


def test_amqp_runtime_user_persists_hashed(make_broker, tmp_path):
    rb = make_broker()
    rb.call(lambda: rb.broker.access.add_user("ops", "ops-pw", tags=["administrator"]))
    rb.call(lambda: rb.broker.access.set_permissions("ops", "/", ".*", ".*", ".*"))
    connect(rb, "ops", "ops-pw").close()
    rb.stop()
    rb.stop = lambda: None  # the fixture's teardown must not stop it twice
    data = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert b"ops-pw" not in data and b"$scrypt$" in data
    again = make_broker()
    connect(again, "ops", "ops-pw").close()
    again.call(lambda: again.broker.access.delete_user("ops"))
    assert "(403)" in connect_refused(again, "ops", "ops-pw")
