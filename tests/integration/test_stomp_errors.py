"""STOMP over raw sockets: bad input gets an ERROR frame and a close; heart-beat timing;
wire details stomp.py cannot produce. Every read is time-boxed."""
from __future__ import annotations

import socket
import time

import pytest

from manifold.adapters.stomp.codec import NEED_DATA, FrameCodec

WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)
CONNECT_12 = b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\nhost:/\n\n\x00"


class Raw:
    def __init__(self, rb, version: str = "1.2"):
        self.sock = socket.create_connection((rb.host, rb.ports["stomp"]), timeout=WAIT)
        self.codec = FrameCodec(version=version)
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, timeout: float = WAIT):
        """The next frame from the server (heart-beats skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.codec.next_event()
            if event is not NEED_DATA:
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise AssertionError("no frame from the server")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
            self.codec.receive_data(data)

    def wait_closed(self, timeout: float = WAIT) -> bytes:
        """Read until the server closes; returns what arrived meanwhile."""
        deadline = time.monotonic() + timeout
        got = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("server did not close the connection")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return got
            if not data:
                return got
            got += data

    def connect(self) -> None:
        self.send(CONNECT_12)
        assert self.frame().command == "CONNECTED"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(running_broker):
    made = []

    def make(version: str = "1.2", connect: bool = True) -> Raw:
        r = Raw(running_broker, version)
        made.append(r)
        if connect:
            r.connect()
        return r

    yield make
    for r in made:
        r.close()


def expect_error(r: Raw, message: str, receipt: str | None = None):
    frame = r.frame()
    assert frame.command == "ERROR", frame
    assert frame.headers["message"] == message, frame
    if receipt is not None:
        assert frame.headers["receipt-id"] == receipt
    r.wait_closed()
    return frame


# ---------------------------------------------------------------------------- connect
def test_connect_without_accept_version_is_1_0(raw):
    r = raw("1.0", connect=False)
    r.send(b"CONNECT\nlogin:guest\npasscode:guest\n\n\x00")
    frame = r.frame()
    assert frame.command == "CONNECTED"
    assert "version" not in frame.headers
    assert "heart-beat" not in frame.headers


def test_stomp_frame_and_highest_common_version(raw):
    r = raw(connect=False)
    r.send(b"STOMP\naccept-version:1.0,1.1,2.0\nhost:/\n\n\x00")
    assert r.frame().headers["version"] == "1.1"


def test_version_mismatch(raw):
    r = raw(connect=False)
    r.send(b"CONNECT\naccept-version:2.0,3.1\n\n\x00")
    frame = expect_error(r, "Version mismatch")
    assert frame.headers["version"] == "1.0,1.1,1.2"


def test_wrong_credentials(raw):
    r = raw(connect=False)
    r.send(b"CONNECT\naccept-version:1.2\nlogin:guest\npasscode:nope\n\n\x00")
    frame = expect_error(r, "Bad CONNECT")
    assert b"login refused" in frame.body


def test_unknown_user(raw):
    r = raw(connect=False)
    r.send(b"CONNECT\naccept-version:1.1\nlogin:mallory\npasscode:x\n\n\x00")
    expect_error(r, "Bad CONNECT")


def test_frame_before_connect(raw):
    r = raw(connect=False)
    r.send(b"SEND\ndestination:/queue/a\n\nx\x00")
    expect_error(r, "Illegal command")


def test_second_connect(raw):
    r = raw()
    r.send(CONNECT_12)
    expect_error(r, "Unexpected CONNECT")


# ---------------------------------------------------------------------------- bad frames
def test_unknown_command(raw):
    r = raw()
    r.send(b"FROB\nreceipt:7\n\n\x00")
    frame = expect_error(r, "Bad command", receipt="7")
    assert b"FROB" in frame.body


@pytest.mark.parametrize("frame,header", [
    (b"SEND\nreceipt:1\n\nx\x00", "destination"),
    (b"SUBSCRIBE\nreceipt:1\nid:1\n\n\x00", "destination"),
    (b"ACK\nreceipt:1\n\n\x00", "id"),
    (b"NACK\nreceipt:1\n\n\x00", "id"),
    (b"BEGIN\nreceipt:1\n\n\x00", "transaction"),
    (b"COMMIT\nreceipt:1\n\n\x00", "transaction"),
    (b"ABORT\nreceipt:1\n\n\x00", "transaction"),
    (b"UNSUBSCRIBE\nreceipt:1\n\n\x00", "id"),
])
def test_missing_required_header(raw, frame, header):
    r = raw()
    r.send(frame)
    expect_error(r, f"Missing {header}", receipt="1")


def test_ack_in_1_1_needs_message_id(raw):
    r = raw(connect=False)
    r.send(b"CONNECT\naccept-version:1.1\n\n\x00")
    assert r.frame().command == "CONNECTED"
    r.send(b"ACK\nid:5\n\n\x00")
    expect_error(r, "Missing message-id")


def test_frame_over_limit(make_broker):
    rb = make_broker(stomp={"max_frame_bytes": 1024})
    r = Raw(rb)
    try:
        r.connect()
        r.send(b"SEND\ndestination:/queue/big\nreceipt:9\ncontent-length:5000\n\n")
        expect_error(r, "Frame too large", receipt="9")
        assert rb.call(lambda: "big" not in rb.broker.vhosts["/"].queues)
    finally:
        r.close()


def test_frame_over_limit_without_content_length(make_broker):
    rb = make_broker(stomp={"max_frame_bytes": 1024})
    r = Raw(rb)
    try:
        r.connect()
        r.send(b"SEND\ndestination:/queue/big\n\n" + b"x" * 2000)
        expect_error(r, "Frame too large")
    finally:
        r.close()


def test_too_many_headers(make_broker):
    rb = make_broker(stomp={"max_headers": 4})
    r = Raw(rb)
    try:
        r.connect()
        r.send(b"SEND\ndestination:/queue/a\na:1\nb:2\nc:3\nd:4\n\n\x00")
        expect_error(r, "Too many headers")
    finally:
        r.close()


def test_bad_escape_in_1_2(raw):
    r = raw()
    r.send(b"SEND\ndestination:/queue/a\nreceipt:e\nk:\\t\n\nx\x00")
    expect_error(r, "Bad header", receipt="e")


def test_content_length_mismatch(raw):
    r = raw()
    r.send(b"SEND\ndestination:/queue/a\ncontent-length:2\n\nabc\x00")
    expect_error(r, "Bad frame")


@pytest.mark.parametrize("destination", [b"/foo/bar", b"/queue/", b"queue", b"/exchange/"])
def test_bad_destination(raw, destination):
    r = raw()
    r.send(b"SEND\ndestination:" + destination + b"\nreceipt:d\n\nx\x00")
    frame = expect_error(r, "Unknown destination", receipt="d")
    assert b"is not a valid destination" in frame.body


def test_subscribe_to_reply_queue_refused(raw):
    r = raw()
    r.send(b"SUBSCRIBE\nid:1\ndestination:/reply-queue/x\n\n\x00")
    expect_error(r, "Unknown destination")


def test_bad_ack_mode(raw):
    r = raw()
    r.send(b"SUBSCRIBE\nid:1\ndestination:/queue/a\nack:sometimes\n\n\x00")
    expect_error(r, "Invalid ack header")


def test_duplicate_subscription_id(raw):
    r = raw()
    r.send(b"SUBSCRIBE\nid:1\ndestination:/queue/a\n\n\x00"
           b"SUBSCRIBE\nid:1\ndestination:/queue/b\n\n\x00")
    expect_error(r, "Duplicated subscription identifier")


def test_unknown_transaction(raw):
    r = raw()
    r.send(b"COMMIT\ntransaction:nope\n\n\x00")
    expect_error(r, "Bad transaction")


def test_bad_heart_beat_header(raw):
    r = raw(connect=False)
    r.send(b"CONNECT\naccept-version:1.2\nheart-beat:x,y\n\n\x00")
    expect_error(r, "Bad heart-beat")


def test_core_error_text(raw):
    r = raw()
    r.send(b"SUBSCRIBE\nid:1\ndestination:/amq/queue/missing\nreceipt:m\n\n\x00")
    frame = expect_error(r, "not_found", receipt="m")
    assert frame.body == b"NOT_FOUND - no queue 'missing' in vhost '/'"


def test_exclusive_queue_of_another_connection(raw, running_broker):
    a = raw()
    a.send(b"SUBSCRIBE\nid:1\ndestination:/queue/mine\nexclusive:true\nreceipt:r\n\n\x00")
    assert a.frame().command == "RECEIPT"
    b = raw()
    b.send(b"SUBSCRIBE\nid:1\ndestination:/queue/mine\n\n\x00")
    expect_error(b, "resource_locked")
    a.send(b"SEND\ndestination:/queue/mine\n\nstill mine\x00")
    assert a.frame().body == b"still mine"


# ---------------------------------------------------------------------------- wire details
def test_crlf_frames_and_heartbeat_eols_in_1_2(raw):
    r = raw()
    r.send(b"\r\n\n" + b"SUBSCRIBE\r\nid:s\r\ndestination:/queue/crlf\r\n\r\n\x00\r\n"
           b"SEND\r\ndestination:/queue/crlf\r\n\r\nbody\x00\n\n")
    frame = r.frame()
    assert frame.command == "MESSAGE"
    assert frame.body == b"body"
    assert frame.headers["ack"] == frame.headers["message-id"]


def test_nul_in_content_length_body(raw):
    r = raw()
    body = b"\x00a\x00b\x00"
    r.send(b"SUBSCRIBE\nid:s\ndestination:/queue/nul\n\n\x00SEND\ndestination:/queue/nul\n"
           b"content-length:5\n\n" + body + b"\x00")
    frame = r.frame()
    assert frame.body == body
    assert frame.headers["content-length"] == "5"


def test_frames_split_byte_by_byte(raw):
    r = raw()
    data = (b"SUBSCRIBE\nid:s\ndestination:/queue/split\n\n\x00"
            b"SEND\ndestination:/queue/split\nk:v\\cw\n\nslow\x00")
    for i in range(len(data)):
        r.send(data[i:i + 1])
    frame = r.frame()
    assert (frame.body, frame.headers["k"]) == (b"slow", "v:w")


def test_disconnect_receipt_then_close(raw):
    r = raw()
    r.send(b"DISCONNECT\nreceipt:bye\n\n\x00")
    frame = r.frame()
    assert (frame.command, frame.headers) == ("RECEIPT", {"receipt-id": "bye"})
    r.wait_closed()


# ---------------------------------------------------------------------------- heart-beats
def test_server_sends_heartbeats(make_broker):
    rb = make_broker(stomp={"heartbeat_ms": 100})
    r = Raw(rb)
    try:
        r.send(b"CONNECT\naccept-version:1.2\nheart-beat:0,100\n\n\x00")
        frame = r.frame()
        assert frame.headers["heart-beat"] == "100,100"
        time.sleep(0.6)
        r.sock.settimeout(WAIT)
        data = r.sock.recv(1000)
        assert data and set(data) == {10}  # only EOLs
    finally:
        r.close()


def test_negotiated_interval_is_the_larger(make_broker):
    rb = make_broker(stomp={"heartbeat_ms": 100})
    r = Raw(rb)
    try:
        # The client can send every 1000 ms: the server waits ~2x that before dropping it. Had
        # it kept its own 100 ms, the first 400 ms gap would end the connection. (Gaps well
        # inside 2 s leave room for a loaded machine.)
        r.send(b"CONNECT\naccept-version:1.2\nheart-beat:1000,0\n\n\x00")
        assert r.frame().command == "CONNECTED"
        for _ in range(5):
            time.sleep(0.4)
            r.send(b"\n")
        r.send(b"SUBSCRIBE\nid:s\ndestination:/queue/hb\nreceipt:x\n\n\x00")
        assert r.frame().command == "RECEIPT"
    finally:
        r.close()


def test_silent_client_is_dropped(make_broker):
    rb = make_broker(stomp={"heartbeat_ms": 100})
    r = Raw(rb)
    try:
        r.send(b"CONNECT\naccept-version:1.2\nheart-beat:100,0\n\n\x00")
        assert r.frame().command == "CONNECTED"
        start = time.monotonic()
        r.wait_closed()
        assert time.monotonic() - start >= 0.15  # not before ~2 intervals
    finally:
        r.close()


def test_heartbeats_off_in_1_0_and_with_zero(make_broker):
    rb = make_broker(stomp={"heartbeat_ms": 100})
    r = Raw(rb)
    try:
        r.send(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00")
        assert r.frame().command == "CONNECTED"
        r.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            r.sock.recv(10)  # no heart-beats, and not dropped
        r.send(b"DISCONNECT\nreceipt:z\n\n\x00")
        assert r.frame().command == "RECEIPT"
    finally:
        r.close()


def test_no_connect_within_handshake_timeout(make_broker):
    rb = make_broker(stomp={"handshake_timeout_s": 0.3})
    r = Raw(rb)
    try:
        for _ in range(4):  # heart-beat EOLs do not keep a connection that never logs in
            r.send(b"\n")
            time.sleep(0.1)
        r.wait_closed()
    finally:
        r.close()


def test_connect_in_time_cancels_handshake_timeout(make_broker):
    # 1 s for the CONNECT to arrive (room for a loaded machine); then stay past the deadline.
    rb = make_broker(stomp={"handshake_timeout_s": 1.0})
    r = Raw(rb)
    try:
        r.connect()
        time.sleep(1.3)
        r.send(b"SUBSCRIBE\nid:s\ndestination:/queue/h\nreceipt:x\n\n\x00")
        assert r.frame().command == "RECEIPT"
    finally:
        r.close()
