"""Failed logins from one address are slowed down (broker/access.py LoginBackoff), over a real
socket: the first ten answer at once, the 25th is held back at least 0.5 s, and a correct login
from the same address still gets in."""
from __future__ import annotations

import socket
import time

WAIT = 30.0  # seconds: generous, only a failing wait takes that long


def mqtt_connect(port: int, user: str, password: str) -> tuple[int, float]:
    """CONNECT (3.1.1) with user name and password; (CONNACK return code, seconds waited)."""
    def s(text: str) -> bytes:
        return len(text).to_bytes(2, "big") + text.encode()
    body = s("MQTT") + b"\x04\xc2\x00\x3c" + s("backoff") + s(user) + s(password)
    packet = b"\x10" + bytes([len(body)]) + body
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        start = time.monotonic()
        sock.sendall(packet)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            assert chunk, "closed without CONNACK"
            connack += chunk
        return connack[3], time.monotonic() - start


def test_failed_logins_back_off_per_address(running_broker):
    port = running_broker.ports["mqtt"]
    waits = []
    for _ in range(25):
        code, waited = mqtt_connect(port, "guest", "wrong")
        assert code == 4  # bad user name or password
        waits.append(waited)
    # a lower bound only: the refusal is held back at least this long (never a speed claim)
    assert waits[24] >= 0.5
    code, _ = mqtt_connect(port, "guest", "guest")
    assert code == 0  # the back-off is capped, never a lockout
