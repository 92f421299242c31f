"""TLS on every listener, with certificates made in the test: aio-pika with an SSL context, paho
``tls_set``, stomp.py ``set_ssl``; client certificates; identity as user name; SIGHUP reload."""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import socket
import ssl
import time

import aio_pika
import boto3
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import pytest
import stomp
from botocore.config import Config
from paho.mqtt.enums import CallbackAPIVersion

from tests.daemon import start_daemon, stop_daemon
from tests.pki import free_port, make_pki

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)


@pytest.fixture
def pki(tmp_path):
    pki = make_pki(tmp_path / "pki")
    pki.server = pki.issue("localhost", server=True)
    return pki


def tls_broker(make_broker, pki, **tls):
    cert, key = pki.server
    return make_broker(tls={"cert_file": str(cert), "key_file": str(key),
                            "ca_file": str(pki.ca_cert), "amqps_port": free_port(),
                            "mqtts_port": free_port(), "stomps_port": free_port(),
                            "wss_port": free_port(), "handshake_timeout_s": 20.0, **tls})


def paho_connect(port, context, username=None, password=None, transport="tcp", path="/mqtt"):
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         protocol=mqtt.MQTTv311, transport=transport)
    connacks, messages = queue.Queue(), queue.Queue()
    client.on_connect = lambda c, u, flags, rc, props: connacks.put(rc)
    client.on_message = lambda c, u, m: messages.put(m)
    if transport == "websockets":
        client.ws_set_options(path=path)
    if context is not None:
        client.tls_set_context(context)
    if username is not None:
        client.username_pw_set(username, password)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    rc = connacks.get(timeout=WAIT)
    return client, rc, messages


def test_amqps_with_aio_pika(make_broker, pki):
    rb = tls_broker(make_broker, pki)

    async def run():
        connection = await aio_pika.connect(host="127.0.0.1", port=rb.ports["amqps"],
                                            login="guest", password="guest", ssl=True,
                                            ssl_context=pki.client_context(), timeout=WAIT)
        async with connection:
            channel = await connection.channel()
            queue_ = await channel.declare_queue("tls-q")
            await channel.default_exchange.publish(aio_pika.Message(b"over tls"), "tls-q")
            message = await queue_.get(fail=False, no_ack=True)
            for _ in range(100):
                if message is not None:
                    break
                await asyncio.sleep(0.05)
                message = await queue_.get(fail=False, no_ack=True)
            return message.body
    assert asyncio.run(run()) == b"over tls"


def test_mqtts_with_paho_tls_set(make_broker, pki, tmp_path):
    rb = tls_broker(make_broker, pki)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    connacks, messages = queue.Queue(), queue.Queue()
    client.on_connect = lambda c, u, flags, rc, props: connacks.put(rc)
    client.on_message = lambda c, u, m: messages.put(m)
    client.tls_set(ca_certs=str(pki.ca_cert))
    client.username_pw_set("guest", "guest")
    client.connect("127.0.0.1", rb.ports["mqtts"])
    client.loop_start()
    try:
        assert connacks.get(timeout=WAIT) == 0
        subscribed = queue.Queue()
        client.on_subscribe = lambda *a: subscribed.put(True)
        client.subscribe("secure/t", 1)
        subscribed.get(timeout=WAIT)
        client.publish("secure/t", b"hello", 1)
        message = messages.get(timeout=WAIT)
        assert (message.topic, message.payload) == ("secure/t", b"hello")
    finally:
        client.loop_stop()
        client.disconnect()


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.messages, self.errors = queue.Queue(), queue.Queue()

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)


def test_stomps_with_stomp_py_set_ssl(make_broker, pki):
    rb = tls_broker(make_broker, pki)
    conn = stomp.Connection12([("127.0.0.1", rb.ports["stomps"])], heartbeats=(0, 0))
    conn.set_ssl([("127.0.0.1", rb.ports["stomps"])], ca_certs=str(pki.ca_cert))
    listener = Listener()
    conn.set_listener("l", listener)
    conn.connect("guest", "guest", wait=True)
    try:
        conn.subscribe("/queue/stomps", id="1")
        conn.send("/queue/stomps", "over tls", receipt="r1")
        assert listener.messages.get(timeout=WAIT).body == "over tls"
    finally:
        conn.disconnect()


def test_plaintext_client_on_tls_port_costs_one_log_line(make_broker, pki, caplog):
    rb = tls_broker(make_broker, pki)
    caplog.set_level(logging.INFO, logger="manifold.connection")
    with socket.create_connection(("127.0.0.1", rb.ports["amqps"]), timeout=WAIT) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        assert sock.recv(100) == b""  # dropped, no AMQP answer in the clear
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and "ended before its handshake" not in caplog.text:
        time.sleep(0.05)
    lines = [r for r in caplog.records if r.name == "manifold.connection"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "TLS handshake failed" in lines[0].getMessage()
    # the plaintext listener beside it still works
    client, rc, _ = paho_connect(rb.ports["mqtt"], None)
    client.loop_stop()
    client.disconnect()
    assert rc == 0


def test_tls_below_1_2_is_refused(make_broker, pki):
    rb = tls_broker(make_broker, pki)
    context = pki.client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", rb.ports["mqtts"]), timeout=WAIT) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="localhost")


def test_handshake_timeout_drops_a_silent_client(make_broker, pki):
    rb = tls_broker(make_broker, pki, handshake_timeout_s=0.3)
    with socket.create_connection(("127.0.0.1", rb.ports["stomps"]), timeout=WAIT) as sock:
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - start < WAIT


def test_client_certificate_required_and_verified(make_broker, pki, tmp_path):
    rb = tls_broker(make_broker, pki, verify="required")
    good = pki.issue("device1")
    client, rc, _ = paho_connect(rb.ports["mqtts"], pki.client_context(good), "guest", "guest")
    client.loop_stop()
    client.disconnect()
    assert rc == 0
    # no certificate, and a certificate from another CA: the handshake fails
    other = make_pki(tmp_path / "other")
    stranger = other.issue("device1")
    for context in (pki.client_context(), pki.client_context(stranger)):
        with socket.create_connection(("127.0.0.1", rb.ports["mqtts"]), timeout=WAIT) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                tls = context.wrap_socket(raw, server_hostname="localhost")
                tls.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00")
                if not tls.recv(10):
                    raise ConnectionError("closed")


def test_identity_as_username_mqtt_and_stomp(make_broker, pki):
    rb = tls_broker(make_broker, pki, identity_as_username=True)
    rb.call(lambda: rb.broker.access.add_user("device1", "unused-password"))
    rb.call(lambda: rb.broker.access.set_permissions("device1", "/", ".*", ".*", ".*"))
    cert = pki.issue("device1")
    client, rc, _ = paho_connect(rb.ports["mqtts"], pki.client_context(cert))
    assert rc == 0
    assert users_connected(rb) == ["device1"]  # the CN, not the guest default
    client.loop_stop()
    client.disconnect()
    # without a certificate, no password is no login
    client, rc, _ = paho_connect(rb.ports["mqtts"], pki.client_context(), "device1")
    client.loop_stop()
    client.disconnect()
    assert str(rc) == "Bad user name or password"  # CONNACK 4
    conn = stomp.Connection12([("127.0.0.1", rb.ports["stomps"])], heartbeats=(0, 0))
    conn.set_ssl([("127.0.0.1", rb.ports["stomps"])], ca_certs=str(pki.ca_cert),
                 cert_file=str(cert[0]), key_file=str(cert[1]))
    conn.connect(wait=True)
    assert conn.is_connected()
    assert "device1" in users_connected(rb)
    conn.disconnect()


def users_connected(rb) -> list[str]:
    def names():
        return sorted(c.session.user.name for c in rb.service.connections
                      if c.session is not None and getattr(c.session, "user", None))
    deadline = time.monotonic() + WAIT
    while not rb.call(names) and time.monotonic() < deadline:
        time.sleep(0.02)
    return rb.call(names)


def test_amqp_external_mechanism(make_broker, pki):
    rb = tls_broker(make_broker, pki, identity_as_username=True)
    rb.call(lambda: rb.broker.access.add_user("device1", "unused-password"))
    rb.call(lambda: rb.broker.access.set_permissions("device1", "/", ".*", ".*", ".*"))

    def connect(cert):
        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", rb.ports["amqps"], credentials=pika.credentials.ExternalCredentials(),
            ssl_options=pika.SSLOptions(pki.client_context(cert), "localhost"),
            connection_attempts=1, socket_timeout=30))
    conn = connect(pki.issue("device1"))
    conn.channel().queue_declare("external-q")
    assert "device1" in users_connected(rb)
    conn.close()
    # a verified certificate whose CN is no user is refused
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(pki.issue("stranger"))


def test_sighup_reload_keeps_connections(make_broker, pki):
    rb = tls_broker(make_broker, pki)
    first_client, rc, messages = paho_connect(rb.ports["mqtts"], pki.client_context(),
                                              "guest", "guest")
    assert rc == 0
    new_cert, new_key = pki.issue("localhost", server=True)  # overwrites the files
    assert rb.call(rb.service.reload_tls) is True
    # a new connection gets the new certificate, the old one still works
    with socket.create_connection(("127.0.0.1", rb.ports["mqtts"]), timeout=WAIT) as raw:
        with pki.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            served = tls.getpeercert(binary_form=True)
    assert served == ssl.PEM_cert_to_DER_cert(new_cert.read_text())
    subscribed = queue.Queue()
    first_client.on_subscribe = lambda *a: subscribed.put(True)
    first_client.subscribe("reload/t", 0)
    subscribed.get(timeout=WAIT)
    first_client.publish("reload/t", b"still here")
    assert messages.get(timeout=WAIT).payload == b"still here"
    first_client.loop_stop()
    first_client.disconnect()


def test_daemon_reloads_certificate_on_sighup(tmp_path, pki):
    """``kill -HUP``: new connections get the new certificate, the open one stays."""
    cert, key = pki.server
    port = free_port()
    proc, ports = start_daemon(
        tmp_path / "data", "--http-port", "0", "--management-port", "0", "--ws-port", "0",
        "--tls-cert", str(cert), "--tls-key", str(key), "--mqtts-port", str(port),
        "--amqps-port", "0", "--stomps-port", "0", "--wss-port", "0")
    try:
        assert ports["mqtts"] == port
        old_client, rc, messages = paho_connect(port, pki.client_context(), "guest", "guest")
        assert rc == 0
        new_cert, _ = pki.issue("localhost", server=True)  # rewrites both files
        os.kill(proc.pid, signal.SIGHUP)
        proc.output.wait_for("TLS certificate reloaded", 60)
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
            with pki.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
                served = tls.getpeercert(binary_form=True)
        assert served == ssl.PEM_cert_to_DER_cert(new_cert.read_text())
        subscribed = queue.Queue()
        old_client.on_subscribe = lambda *a: subscribed.put(True)
        old_client.subscribe("hup/t", 0)
        subscribed.get(timeout=WAIT)
        old_client.publish("hup/t", b"after reload")
        assert messages.get(timeout=WAIT).payload == b"after reload"
        old_client.loop_stop()
        old_client.disconnect()
    finally:
        stop_daemon(proc)


def test_aws_api_over_https_with_boto3(make_broker, pki):
    rb = tls_broker(make_broker, pki, https=True)
    sqs = boto3.client("sqs", endpoint_url=f"https://localhost:{rb.ports['http']}",
                       region_name="us-east-1", aws_access_key_id="guest",
                       aws_secret_access_key="guest", verify=str(pki.ca_cert),
                       config=Config(retries={"max_attempts": 1}))
    url = sqs.create_queue(QueueName="over-https")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="secret")
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]["Body"] == "secret"
    # plaintext HTTP on that port gets nothing
    with socket.create_connection(("127.0.0.1", rb.ports["http"]), timeout=WAIT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not sock.recv(100).startswith(b"HTTP/1.1 200")
