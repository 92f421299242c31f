"""What TLS and WebSocket cost: MQTT 3.1.1 QoS 0 throughput, 64-byte payloads, one publisher and
one subscriber (raw sockets, pre-encoded packets in batches of 100), over the plaintext, the TLS
(mqtts) and the WebSocket (ws) listener of one `manifold serve` daemon, rounds interleaved.
Certificates are made on the fly (tests/pki.py, the `cryptography` package).

    .venv/bin/python benchmarks/transport_throughput.py [MESSAGES]      # default 50000
"""
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import websocket  # websocket-client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.pki import free_port, make_pki  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
tmp = Path(tempfile.mkdtemp())
pki = make_pki(tmp / "pki")
cert, key = pki.issue("localhost", server=True)
ports = {"mqtt": free_port(), "mqtts": free_port(), "ws": free_port()}
proc = subprocess.Popen([sys.executable, "-m", "manifold.broker.cli", "serve", "--data-dir", str(tmp / "d"),
    "--amqp-port", "0", "--stomp-port", "0", "--http-port", "0", "--management-port", "0",
    "--mqtt-port", str(ports["mqtt"]), "--ws-port", str(ports["ws"]), "--tls-cert", str(cert), "--tls-key", str(key),
    "--mqtts-port", str(ports["mqtts"]), "--amqps-port", "0", "--stomps-port", "0", "--wss-port", "0",
    "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
time.sleep(2.5)

def s(t): return len(t).to_bytes(2, "big") + t.encode()
def connect_packet(cid):
    body = s("MQTT") + b"\x04\xc2\x00\x3c" + s(cid) + s("guest") + s("guest")
    return b"\x10" + bytes([len(body)]) + body
topic = s("bench/t")
payload = b"x" * 64
pub_packet = b"\x30" + bytes([len(topic) + len(payload)]) + topic + payload

class WsSock:
    def __init__(self, port):
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/mqtt", subprotocols=["mqtt"])
    def sendall(self, data): self.ws.send_binary(data)
    def recv(self, n):
        return self.ws.recv()

def open_sock(kind):
    if kind == "ws":
        return WsSock(ports["ws"])
    raw = socket.create_connection(("127.0.0.1", ports[kind]))
    if kind == "mqtts":
        return pki.client_context().wrap_socket(raw, server_hostname="localhost")
    return raw

def run(kind):
    sub = open_sock(kind); sub.sendall(connect_packet("sub")); sub.recv(4)
    sub.sendall(b"\x82" + bytes([2 + len(topic) + 1]) + b"\x00\x01" + topic + b"\x00"); sub.recv(5)
    pub = open_sock(kind); pub.sendall(connect_packet("pub")); pub.recv(4)
    expected = N * len(pub_packet)
    got = [0]
    def reader():
        while got[0] < expected:
            data = sub.recv(1 << 20)
            if not data: break
            got[0] += len(data)
    t = threading.Thread(target=reader); t.start()
    start = time.perf_counter()
    batch = pub_packet * 100
    for _ in range(N // 100):
        pub.sendall(batch)
    t.join(60)
    elapsed = time.perf_counter() - start
    return N / elapsed

try:
    for kind in ("mqtt", "mqtts", "ws") * 3:
        print(kind, f"{run(kind):,.0f} msg/s", flush=True)
finally:
    proc.terminate(); proc.wait(10)
