"""MQTT and STOMP over WebSocket (ws and wss) with unmodified clients: paho
``transport="websockets"`` and a STOMP-over-WebSocket client (websocket-client speaking STOMP
frames, as a browser's stomp.js does)."""
from __future__ import annotations

import logging
import os
import queue
import socket

import pytest
import websocket  # websocket-client

from tests.integration.test_tls import paho_connect
from tests.pki import free_port, make_pki

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)


def stomp_frame(command: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [command] + [f"{k}:{v}" for k, v in headers.items()]
    return ("\n".join(lines) + "\n\n").encode() + body + b"\x00"


def read_frame(ws) -> tuple[str, dict, bytes]:
    """The next STOMP frame; a WebSocket message may hold several (bodies here have no NUL)."""
    buffer = getattr(ws, "stomp_buffer", b"")
    while b"\x00" not in buffer:
        data = ws.recv()
        buffer += data.encode() if isinstance(data, str) else data
    data, _, ws.stomp_buffer = buffer.partition(b"\x00")
    head, _, body = data.lstrip(b"\r\n").partition(b"\n\n")
    command, *header_lines = head.decode().split("\n")
    headers = dict(line.split(":", 1) for line in header_lines)
    return command, headers, body


@pytest.mark.parametrize("path", ["/mqtt", "/"])
def test_paho_over_websocket(running_broker, path):
    port = running_broker.ports["ws"]
    sub, rc, messages = paho_connect(port, None, "guest", "guest", transport="websockets",
                                     path=path)
    assert rc == 0  # paho sends the subprotocol "mqtt", so any path works
    subscribed = queue.Queue()
    sub.on_subscribe = lambda *a: subscribed.put(True)
    sub.subscribe("ws/t", 1)
    subscribed.get(timeout=WAIT)
    # a plain TCP client publishes: same sessions and queues
    pub, rc, _ = paho_connect(running_broker.ports["mqtt"], None, "guest", "guest")
    pub.publish("ws/t", b"x" * 70000, 1).wait_for_publish(WAIT)
    message = messages.get(timeout=WAIT)
    assert (message.topic, message.payload) == ("ws/t", b"x" * 70000)
    for client in (sub, pub):
        client.loop_stop()
        client.disconnect()


@pytest.mark.parametrize("subprotocol,path", [("v12.stomp", "/anything"), (None, "/stomp"),
                                              (None, "/ws")])
def test_stomp_over_websocket(running_broker, subprotocol, path):
    url = f"ws://127.0.0.1:{running_broker.ports['ws']}{path}"
    ws = websocket.create_connection(url, timeout=WAIT,
                                     subprotocols=[subprotocol] if subprotocol else None)
    try:
        ws.send(stomp_frame("CONNECT", {"accept-version": "1.2", "host": "/",
                                        "login": "guest", "passcode": "guest"}))
        command, headers, _ = read_frame(ws)
        assert command == "CONNECTED" and headers["version"] == "1.2"
        ws.send(stomp_frame("SUBSCRIBE", {"id": "0", "destination": "/queue/wsq"}))
        # two frames in one WebSocket message, and one frame split over two messages
        two = stomp_frame("SEND", {"destination": "/queue/wsq"}, b"one") + \
            stomp_frame("SEND", {"destination": "/queue/wsq"}, b"two")
        ws.send_binary(two)
        third = stomp_frame("SEND", {"destination": "/queue/wsq", "receipt": "r"}, b"three")
        ws.send_binary(third[:7])
        ws.send_binary(third[7:])
        bodies = []
        while len(bodies) < 3:
            command, headers, body = read_frame(ws)
            if command == "MESSAGE":
                bodies.append(body)
        assert bodies == [b"one", b"two", b"three"]
    finally:
        ws.close()


def test_unknown_path_without_subprotocol_is_refused(running_broker):
    url = f"ws://127.0.0.1:{running_broker.ports['ws']}/nope"
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url, timeout=WAIT)
    assert info.value.status_code == 404


def test_allowed_origins(make_broker):
    rb = make_broker(websocket={"allowed_origins": ["https://app.example"]})
    url = f"ws://127.0.0.1:{rb.ports['ws']}/stomp"
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url, timeout=WAIT, origin="https://evil.example")
    assert info.value.status_code == 403
    ws = websocket.create_connection(url, timeout=WAIT, origin="https://app.example")
    ws.send(stomp_frame("CONNECT", {"accept-version": "1.2", "host": "/"}))
    assert read_frame(ws)[0] == "CONNECTED"
    ws.close()


def test_max_message_size(make_broker):
    rb = make_broker(websocket={"max_message_bytes": 1024})
    ws = websocket.create_connection(f"ws://127.0.0.1:{rb.ports['ws']}/stomp", timeout=WAIT)
    ws.send(stomp_frame("CONNECT", {"accept-version": "1.2", "host": "/"}))
    assert read_frame(ws)[0] == "CONNECTED"
    ws.send_binary(b"x" * 4096)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(5):
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                assert int.from_bytes(data[:2], "big") == 1009  # message too big
                raise websocket.WebSocketConnectionClosedException()
    ws.close()


def test_server_pings_a_silent_client(make_broker):
    rb = make_broker(websocket={"ping_interval_s": 0.2})
    ws = websocket.create_connection(f"ws://127.0.0.1:{rb.ports['ws']}/stomp", timeout=WAIT)
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PING
    ws.close()


def test_mqtt_and_stomp_over_wss(make_broker, tmp_path):
    pki = make_pki(tmp_path / "pki")
    cert, key = pki.issue("localhost", server=True)
    rb = make_broker(tls={"cert_file": str(cert), "key_file": str(key), "wss_port": free_port(),
                          "amqps_port": 0, "mqtts_port": 0, "stomps_port": 0})
    port = rb.ports["wss"]
    client, rc, _ = paho_connect(port, pki.client_context(), "guest", "guest",
                                 transport="websockets")
    client.loop_stop()
    client.disconnect()
    assert rc == 0
    ws = websocket.create_connection(f"wss://localhost:{port}/ws", timeout=WAIT,
                                     sslopt={"context": pki.client_context()})
    ws.send(stomp_frame("CONNECT", {"accept-version": "1.2", "host": "/"}))
    assert read_frame(ws)[0] == "CONNECTED"
    ws.close()
    assert "amqps" not in rb.ports  # 0 disables a TLS listener


def test_garbage_on_the_websocket_port_costs_that_connection_only(running_broker, caplog):
    caplog.set_level(logging.INFO, logger="manifold.connection")
    port = running_broker.ports["ws"]
    for junk in (b"garbage\r\n\r\n", os.urandom(4096)):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(junk)
            assert sock.recv(100) == b""
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/stomp", timeout=WAIT)
    ws.send(stomp_frame("CONNECT", {"accept-version": "1.2", "host": "/"}))
    assert read_frame(ws)[0] == "CONNECTED"
    ws.close()
    failed = [r.getMessage() for r in caplog.records if "ended before its handshake" in
              r.getMessage()]
    assert len(failed) == 2 and all("not receive a valid HTTP request" in m for m in failed)
