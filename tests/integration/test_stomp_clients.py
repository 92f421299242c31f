"""STOMP with the unmodified stomp.py client, as a 1.0, a 1.1 and a 1.2 client, against a real
broker on an ephemeral port. Every wait is time-boxed (Listener.get uses queue.get(timeout))."""
from __future__ import annotations

import queue
import time
from typing import Any

import pytest
import stomp

from manifold.broker.message import Message, Properties

VERSIONS = ["1.0", "1.1", "1.2"]
CLASSES = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}
WAIT = 30.0  # seconds: generous, only a failing wait takes that long (a loaded CI machine)


class Listener(stomp.ConnectionListener):
    """Puts every frame the client receives on a queue; tests take them with a timeout."""

    def __init__(self) -> None:
        self.frames: queue.Queue = queue.Queue()
        self.heartbeats = 0
        self.disconnected = False

    def on_message(self, frame: Any) -> None:
        self.frames.put(("MESSAGE", frame))

    def on_receipt(self, frame: Any) -> None:
        self.frames.put(("RECEIPT", frame))

    def on_error(self, frame: Any) -> None:
        self.frames.put(("ERROR", frame))

    def on_heartbeat(self) -> None:
        self.heartbeats += 1

    def on_disconnected(self) -> None:
        self.disconnected = True
        self.frames.put(("DISCONNECTED", None))

    def get(self, kind: str, timeout: float = WAIT) -> Any:
        """The next frame, which must be of ``kind``."""
        got, frame = self.frames.get(timeout=timeout)
        assert got == kind, (got, frame and frame.headers, frame and frame.body)
        return frame

    def nothing(self, wait: float = 0.3) -> None:
        try:
            got = self.frames.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected frame {got[0]} {got[1] and got[1].headers}")


class Client:
    """A connected stomp.py connection of one version plus version-neutral helpers."""

    def __init__(self, rb: Any, version: str, login: str | None = "guest",
                 passcode: str | None = "guest", heartbeats: tuple[int, int] = (0, 0),
                 headers: dict | None = None, wait: bool = True, vhost: str | None = None):
        self.version = version
        cls = CLASSES[version]
        kwargs: dict[str, Any] = {"auto_decode": False}
        if version != "1.0":
            kwargs["heartbeats"] = heartbeats
            # stomp.py drops a server silent for 1.5 intervals; a loaded machine can stall
            # longer than that: what the tests check is that heart-beats come, not their pace.
            kwargs["heart_beat_receive_scale"] = 20
        if vhost is not None:  # stomp.py sends it as the CONNECT host header
            kwargs["vhost"] = vhost
        self.conn = cls([(rb.host, rb.ports["stomp"])], **kwargs)
        self.listener = Listener()
        self.conn.set_listener("test", self.listener)
        self.conn.connect(login, passcode, wait=wait, headers=headers or {})
        self._ids = 0

    def subscribe(self, destination: str, ack: str = "auto", id: str | None = None,
                  **headers: Any) -> str:
        self._ids += 1
        sub_id = id or f"sub-{self._ids}"
        if self.version == "1.0" and id is None and not headers.pop("force_id", False):
            self.conn.subscribe(destination, ack=ack, headers=headers)
            return destination  # RabbitMQ rule: a 1.0 subscription without id is its destination
        headers.pop("force_id", None)
        self.conn.subscribe(destination, id=sub_id, ack=ack, headers=headers)
        return sub_id

    def ack(self, frame: Any, **kw: Any) -> None:
        h = frame.headers
        if self.version == "1.2":
            self.conn.ack(h["ack"], **kw)
        elif self.version == "1.1":
            self.conn.ack(h["message-id"], h["subscription"], **kw)
        else:
            self.conn.ack(h["message-id"], **kw)

    def nack(self, frame: Any, **kw: Any) -> None:
        h = frame.headers
        if self.version == "1.2":
            self.conn.nack(h["ack"], **kw)
        elif self.version == "1.1":
            self.conn.nack(h["message-id"], h["subscription"], **kw)
        else:  # STOMP 1.0 has no NACK; stomp.py 1.0 has no nack(): send the frame by hand
            headers = {"message-id": h["message-id"]}
            headers.update({k: v for k, v in kw.items() if v is not None})
            self.conn.send_frame("NACK", headers)

    def receipt(self, receipt_id: str) -> Any:
        frame = self.listener.get("RECEIPT")
        assert frame.headers["receipt-id"] == receipt_id
        return frame

    def close(self) -> None:
        try:
            if self.conn.is_connected():
                self.conn.disconnect()
        except Exception:
            pass


@pytest.fixture
def clients(running_broker):
    made: list[Client] = []

    def make(version: str, **kw: Any) -> Client:
        client = Client(running_broker, version, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def queue_state(rb: Any, name: str) -> tuple[int, int]:
    """(ready, unacked) of a queue, read on the broker loop."""
    def read() -> tuple[int, int]:
        q = rb.broker.vhosts["/"].queues[name]
        return q.message_count, q.unacked_count
    return rb.call(read)


def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# ======================================================================== basics
@pytest.mark.parametrize("version", VERSIONS)
def test_connect_send_receive_binary_body(running_broker, clients, version):
    c = clients(version)
    sub = c.subscribe("/queue/bin")
    body = bytes(range(256)) + b"\x00\x00end"
    c.conn.send("/queue/bin", body)
    frame = c.listener.get("MESSAGE")
    assert frame.body == body
    assert frame.headers["content-length"] == str(len(body))
    assert frame.headers["subscription"] == sub
    assert frame.headers["destination"] == "/queue/bin"
    assert frame.headers["redelivered"] == "false"
    assert "message-id" in frame.headers
    assert ("ack" in frame.headers) == (version == "1.2")


@pytest.mark.parametrize("version", VERSIONS)
def test_connected_headers(running_broker, version):
    listener_frames: queue.Queue = queue.Queue()

    class L(stomp.ConnectionListener):
        def on_connected(self, frame: Any) -> None:
            listener_frames.put(frame)

    kwargs = {"heartbeats": (0, 0)} if version != "1.0" else {}
    conn = CLASSES[version]([(running_broker.host, running_broker.ports["stomp"])], **kwargs)
    conn.set_listener("l", L())
    conn.connect("guest", "guest", wait=True)
    try:
        frame = listener_frames.get(timeout=WAIT)
        assert frame.headers["session"].startswith("session-")
        assert frame.headers["server"].startswith("Manifold/")
        if version != "1.0":
            assert frame.headers["version"] == version
            assert "heart-beat" in frame.headers
    finally:
        conn.disconnect()


def test_missing_login_is_guest(running_broker):
    c = Client(running_broker, "1.2", login=None, passcode=None)
    try:
        c.subscribe("/queue/anon")
        c.conn.send("/queue/anon", b"x")
        assert c.listener.get("MESSAGE").body == b"x"
    finally:
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_receipts_for_every_frame_and_disconnect(running_broker, clients, version):
    c = clients(version)
    c.conn.subscribe("/queue/rc", id="s1", ack="client", headers={"receipt": "r-sub"})
    c.receipt("r-sub")
    c.conn.send("/queue/rc", b"m", headers={"receipt": "r-send"})
    # the MESSAGE may overtake the RECEIPT of the SEND that caused it
    kinds = {}
    for _ in range(2):
        kind, frame = c.listener.frames.get(timeout=WAIT)
        kinds[kind] = frame
    assert kinds["RECEIPT"].headers["receipt-id"] == "r-send"
    msg = kinds["MESSAGE"]
    c.ack(msg, receipt="r-ack")
    c.receipt("r-ack")
    c.conn.begin("tx1", headers={"receipt": "r-begin"}) if version != "1.0" else \
        c.conn.send_frame("BEGIN", {"transaction": "tx1", "receipt": "r-begin"})
    c.receipt("r-begin")
    c.conn.send_frame("ABORT", {"transaction": "tx1", "receipt": "r-abort"})
    c.receipt("r-abort")
    c.conn.send_frame("UNSUBSCRIBE", {"id": "s1", "receipt": "r-unsub"})
    c.receipt("r-unsub")
    c.conn.disconnect(receipt="r-bye")
    # stomp.py closes its socket on the DISCONNECT receipt before it calls on_receipt
    got = dict(c.listener.frames.get(timeout=WAIT) for _ in range(2))
    assert got["RECEIPT"].headers["receipt-id"] == "r-bye"
    assert "DISCONNECTED" in got


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_escaped_headers_roundtrip(running_broker, clients, version):
    c = clients(version)
    c.subscribe("/queue/esc")
    value = "a:b\nc\\d" + ("\re" if version == "1.2" else "")
    c.conn.send("/queue/esc", b"x", headers={"weird": value, "plain": "ok"})
    frame = c.listener.get("MESSAGE")
    assert frame.headers["weird"] == value
    assert frame.headers["plain"] == "ok"
    # stored unescaped in the core
    stored = running_broker.call(
        lambda: running_broker.broker.vhosts["/"].queues["esc"].unacked_count)
    assert stored == 0


def test_escaped_subscription_id_and_destination(running_broker, clients):
    c = clients("1.2")
    c.subscribe("/queue/a:b", id="id:with\\colon")
    c.conn.send("/queue/a:b", b"x")
    frame = c.listener.get("MESSAGE")
    assert frame.headers["subscription"] == "id:with\\colon"
    assert frame.headers["destination"] == "/queue/a:b"


# ======================================================================== acks
@pytest.mark.parametrize("version", VERSIONS)
def test_client_individual_ack_and_nack_requeues(running_broker, clients, version):
    c = clients(version)
    c.subscribe("/queue/ci", ack="client-individual", **{"prefetch-count": "10"})
    c.conn.send("/queue/ci", b"one")
    c.conn.send("/queue/ci", b"two")
    first = c.listener.get("MESSAGE")
    second = c.listener.get("MESSAGE")
    assert (first.body, second.body) == (b"one", b"two")
    c.ack(second)  # individual: only "two"
    c.nack(first)  # requeued and redelivered
    again = c.listener.get("MESSAGE")
    assert again.body == b"one"
    assert again.headers["redelivered"] == "true"
    c.ack(again, receipt="done")
    c.receipt("done")
    assert queue_state(running_broker, "ci") == (0, 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_client_ack_is_cumulative(running_broker, clients, version):
    c = clients(version)
    c.subscribe("/queue/cum", ack="client")
    for i in range(3):
        c.conn.send("/queue/cum", str(i).encode())
    frames = [c.listener.get("MESSAGE") for _ in range(3)]
    assert [f.body for f in frames] == [b"0", b"1", b"2"]
    c.ack(frames[1], receipt="a1")
    c.receipt("a1")
    assert queue_state(running_broker, "cum") == (0, 1)  # 0 and 1 acked, 2 still out
    c.ack(frames[2], receipt="a2")
    c.receipt("a2")
    assert queue_state(running_broker, "cum") == (0, 0)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_requeue_false_dead_letters(running_broker, clients, version):
    c = clients(version)
    c.subscribe("/queue/dlq")
    c.subscribe("/queue/work", ack="client-individual",
                **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    c.conn.send("/queue/work", b"poison")
    frame = c.listener.get("MESSAGE")
    assert frame.headers["subscription"] == "sub-2"
    c.nack(frame, requeue="false")
    dead = c.listener.get("MESSAGE")
    assert dead.body == b"poison"
    assert dead.headers["destination"] == "/queue/dlq"
    assert dead.headers["x-first-death-reason"] == "rejected"
    assert queue_state(running_broker, "work") == (0, 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_prefetch_count_limits_unacked(running_broker, clients, version):
    c = clients(version)
    c.subscribe("/queue/pf", ack="client-individual", **{"prefetch-count": "1"})
    for i in range(3):
        c.conn.send("/queue/pf", str(i).encode())
    first = c.listener.get("MESSAGE")
    c.listener.nothing(0.3)
    c.ack(first)
    second = c.listener.get("MESSAGE")
    assert second.body == b"1"
    assert queue_state(running_broker, "pf") == (1, 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_unacked_requeued_when_connection_closes(running_broker, clients, version):
    a = clients(version)
    a.subscribe("/queue/rq", ack="client")
    a.conn.send("/queue/rq", b"keep me")
    assert a.listener.get("MESSAGE").body == b"keep me"
    a.conn.disconnect()
    wait_for(lambda: queue_state(running_broker, "rq") == (1, 0))
    b = clients(version)
    b.subscribe("/queue/rq", ack="client")
    frame = b.listener.get("MESSAGE")
    assert frame.body == b"keep me"
    assert frame.headers["redelivered"] == "true"


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_requeues_unacked(running_broker, clients, version):
    c = clients(version)
    sub = c.subscribe("/queue/unsub", ack="client-individual", force_id=True)
    c.conn.send("/queue/unsub", b"x")
    c.listener.get("MESSAGE")
    c.conn.send_frame("UNSUBSCRIBE", {"id": sub, "receipt": "u"})
    c.receipt("u")
    assert queue_state(running_broker, "unsub") == (1, 0)


def test_unsubscribe_by_destination_in_1_0(running_broker, clients):
    c = clients("1.0")
    c.subscribe("/queue/u10")
    c.conn.unsubscribe(destination="/queue/u10", headers={"receipt": "u"})
    c.receipt("u")
    c.conn.send("/queue/u10", b"x", headers={"receipt": "s"})
    c.receipt("s")
    c.listener.nothing(0.2)
    assert queue_state(running_broker, "u10") == (1, 0)


# ======================================================================== transactions
@pytest.mark.parametrize("version", VERSIONS)
def test_transaction_commit_and_abort(running_broker, clients, version):
    c = clients(version)
    c.subscribe("/queue/tx")
    c.conn.send_frame("BEGIN", {"transaction": "t1"})
    c.conn.send("/queue/tx", b"held", headers={"transaction": "t1", "receipt": "s1"})
    c.receipt("s1")
    c.listener.nothing(0.2)
    c.conn.send_frame("COMMIT", {"transaction": "t1"})
    assert c.listener.get("MESSAGE").body == b"held"
    c.conn.send_frame("BEGIN", {"transaction": "t2"})
    c.conn.send("/queue/tx", b"dropped", headers={"transaction": "t2"})
    c.conn.send_frame("ABORT", {"transaction": "t2", "receipt": "ab"})
    c.receipt("ab")
    c.listener.nothing(0.2)


@pytest.mark.parametrize("version", VERSIONS)
def test_transactional_ack_held_until_commit(running_broker, clients, version):
    c = clients(version)
    c.subscribe("/queue/txack", ack="client-individual")
    c.conn.send("/queue/txack", b"a")
    frame = c.listener.get("MESSAGE")
    c.conn.send_frame("BEGIN", {"transaction": "t"})
    c.ack(frame, transaction="t")
    c.conn.send_frame("ABORT", {"transaction": "t", "receipt": "r1"})
    c.receipt("r1")
    assert queue_state(running_broker, "txack") == (0, 1)  # the ACK was dropped with ABORT
    c.conn.send_frame("BEGIN", {"transaction": "t"})
    c.ack(frame, transaction="t", receipt="r2")
    c.receipt("r2")
    assert queue_state(running_broker, "txack") == (0, 1)  # held
    c.conn.send_frame("COMMIT", {"transaction": "t", "receipt": "r3"})
    c.receipt("r3")
    assert queue_state(running_broker, "txack") == (0, 0)


# ======================================================================== destinations
@pytest.mark.parametrize("version", VERSIONS)
def test_topic_fanout_with_wildcards(running_broker, clients, version):
    a, b = clients(version), clients(version)
    a.subscribe("/topic/stocks.*", force_id=True)
    b.subscribe("/topic/stocks.#", force_id=True)
    b.conn.send("/topic/other", b"no", headers={"receipt": "r0"})  # unroutable: dropped
    b.receipt("r0")
    a.conn.send("/topic/stocks.ibm", b"42")
    for client in (a, b):
        frame = client.listener.get("MESSAGE")
        assert frame.body == b"42"
        assert frame.headers["destination"] == "/topic/stocks.ibm"
    b.conn.send("/topic/stocks.ibm.deep", b"43")
    assert b.listener.get("MESSAGE").body == b"43"  # '#' matches two words, '*' one
    a.listener.nothing(0.2)


def test_topic_subscription_queue_goes_with_unsubscribe(running_broker, clients):
    c = clients("1.2")
    c.conn.subscribe("/topic/t1", id="x", headers={"receipt": "r"})
    c.receipt("r")
    count = running_broker.call(lambda: len(running_broker.broker.vhosts["/"].queues))
    c.conn.unsubscribe("x", headers={"receipt": "u"})
    c.receipt("u")
    assert running_broker.call(lambda: len(running_broker.broker.vhosts["/"].queues)) == count - 1


@pytest.mark.parametrize("version", VERSIONS)
def test_durable_topic_subscription(running_broker, clients, version):
    headers = {"persistent": "true", "auto-delete": "false"}
    a = clients(version)
    a.subscribe("/topic/news", id="durable-1", **headers)
    a.conn.send("/topic/news", b"first")
    assert a.listener.get("MESSAGE").body == b"first"
    a.conn.disconnect()
    b = clients(version)
    b.conn.send("/topic/news", b"while away", headers={"receipt": "r"})
    b.receipt("r")
    c = clients(version)
    c.subscribe("/topic/news", id="durable-1", **headers)
    assert c.listener.get("MESSAGE").body == b"while away"
    # UNSUBSCRIBE with persistent:true ends the durable subscription (deletes its queue)
    c.conn.send_frame("UNSUBSCRIBE", {"id": "durable-1", "persistent": "true", "receipt": "u"})
    c.receipt("u")
    names = running_broker.call(lambda: list(running_broker.broker.vhosts["/"].queues))
    assert not [n for n in names if n.startswith("stomp-subscription-")]


@pytest.mark.parametrize("version", VERSIONS)
def test_exchange_destination(running_broker, clients, version):
    c = clients(version)
    c.subscribe("/exchange/amq.direct/route-a", force_id=True)
    c.subscribe("/exchange/amq.fanout", force_id=True)
    c.conn.send("/exchange/amq.direct/route-a", b"direct")
    frame = c.listener.get("MESSAGE")
    assert frame.body == b"direct"
    assert frame.headers["destination"] == "/exchange/amq.direct/route-a"
    c.conn.send("/exchange/amq.fanout", b"fan")
    assert c.listener.get("MESSAGE").body == b"fan"


def test_exchange_missing_is_not_found(running_broker, clients):
    c = clients("1.2")
    c.conn.send("/exchange/nope/k", b"x", headers={"receipt": "r9"})
    err = c.listener.get("ERROR")
    assert err.headers["message"] == "not_found"
    assert err.headers["receipt-id"] == "r9"
    assert err.body == b"NOT_FOUND - no exchange 'nope' in vhost '/'"


@pytest.mark.parametrize("version", VERSIONS)
def test_amq_queue_existing_and_missing(running_broker, clients, version):
    running_broker.call(lambda: running_broker.broker.vhosts["/"].declare_queue("pre", durable=True))
    c = clients(version)
    c.subscribe("/amq/queue/pre", force_id=True)
    c.conn.send("/amq/queue/pre", b"into pre")
    assert c.listener.get("MESSAGE").body == b"into pre"
    c.subscribe("/amq/queue/absent", force_id=True)
    err = c.listener.get("ERROR")
    assert err.headers["message"] == "not_found"
    assert err.body == b"NOT_FOUND - no queue 'absent' in vhost '/'"
    assert "absent" not in running_broker.call(lambda: list(running_broker.broker.vhosts["/"].queues))


@pytest.mark.parametrize("version", VERSIONS)
def test_temp_queue_reply_to(running_broker, clients, version):
    requester, server = clients(version), clients(version)
    server.subscribe("/queue/rpc")
    requester.conn.send("/queue/rpc", b"question", headers={"reply-to": "/temp-queue/answers"})
    request = server.listener.get("MESSAGE")
    reply_to = request.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/amq.gen-")
    server.conn.send(reply_to, b"answer")
    reply = requester.listener.get("MESSAGE")
    assert reply.body == b"answer"
    assert reply.headers["subscription"] == "/temp-queue/answers"
    assert reply.headers["destination"] == "/temp-queue/answers"
    # the temp queue is exclusive to the requester's connection and goes with it
    name = reply_to[len("/reply-queue/"):]
    requester.conn.disconnect()
    wait_for(lambda: name not in running_broker.call(
        lambda: list(running_broker.broker.vhosts["/"].queues)))


def test_queue_arguments_from_headers(running_broker, clients):
    c = clients("1.2")
    c.conn.send("/queue/capped", b"1", headers={"x-max-length": "2", "receipt": "a"})
    c.receipt("a")
    c.conn.send("/queue/capped", b"2")
    c.conn.send("/queue/capped", b"3", headers={"receipt": "b"})
    c.receipt("b")
    args = running_broker.call(lambda: dict(running_broker.broker.vhosts["/"].queues["capped"].arguments))
    assert args == {"x-max-length": 2}
    c.subscribe("/queue/capped")
    assert [c.listener.get("MESSAGE").body for _ in range(2)] == [b"2", b"3"]


def test_queue_ttl_argument_on_subscribe(running_broker, clients):
    c = clients("1.2")
    c.conn.subscribe("/queue/ttl", id="t", headers={"x-message-ttl": "50", "receipt": "r"})
    c.receipt("r")
    c.conn.unsubscribe("t", headers={"receipt": "u"})
    c.receipt("u")
    c.conn.send("/queue/ttl", b"short-lived", headers={"receipt": "s"})
    c.receipt("s")
    wait_for(lambda: queue_state(running_broker, "ttl") == (0, 0))  # the 50 ms TTL expired it


def test_inequivalent_queue_arguments_are_an_error(running_broker, clients):
    c = clients("1.2")
    c.conn.send("/queue/eq", b"1", headers={"x-max-length": "2", "receipt": "a"})
    c.receipt("a")
    c.subscribe("/queue/eq", **{"x-max-length": "3"})
    err = c.listener.get("ERROR")
    assert err.headers["message"] == "precondition_failed"
    assert b"inequivalent arg 'x-max-length'" in err.body


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_stream_queue_with_offsets(running_broker, clients, version):
    c = clients(version)
    stream_args = {"x-queue-type": "stream"}
    c.conn.send("/queue/log", b"r0", headers={**stream_args, "receipt": "s"})
    c.receipt("s")
    for i in (1, 2):
        c.conn.send("/queue/log", f"r{i}".encode())
    c.subscribe("/queue/log", ack="client-individual",
                **{**stream_args, "x-stream-offset": "first", "prefetch-count": "2"})
    frames = [c.listener.get("MESSAGE") for _ in range(2)]
    assert [f.body for f in frames] == [b"r0", b"r1"]
    assert [f.headers["x-stream-offset"] for f in frames] == ["0", "1"]
    c.listener.nothing(0.2)  # credit exhausted until an ack
    c.ack(frames[0])
    third = c.listener.get("MESSAGE")
    assert (third.body, third.headers["x-stream-offset"]) == (b"r2", "2")
    # a second reader starting at offset 1, through /amq/queue
    c.subscribe("/amq/queue/log", ack="client", **{"x-stream-offset": "offset=1",
                                                  "prefetch-count": "10"})
    assert [c.listener.get("MESSAGE").body for _ in range(2)] == [b"r1", b"r2"]


# ======================================================================== properties
def test_headers_become_message_properties(running_broker, clients):
    c = clients("1.2")
    c.conn.send("/queue/props", b"{}", headers={
        "content-type": "application/json", "content-encoding": "utf-8",
        "correlation-id": "c-1", "reply-to": "/queue/back", "expiration": "60000",
        "priority": "5", "persistent": "true", "amqp-message-id": "m-1", "timestamp": "1700000000",
        "type": "t", "user-id": "guest", "app-id": "app", "custom": "v", "receipt": "r"})
    c.receipt("r")

    def read():
        message = running_broker.broker.vhosts["/"].queues["props"].ready_messages()[0]
        return message.properties.as_dict()

    assert read() == {
        "content_type": "application/json", "content_encoding": "utf-8",
        "correlation_id": "c-1", "reply_to": "/queue/back", "expiration": "60000",
        "priority": 5, "delivery_mode": 2, "message_id": "m-1", "timestamp": 1700000000,
        "type": "t", "user_id": "guest", "app_id": "app", "headers": {"custom": "v"}}
    c.subscribe("/queue/props")
    frame = c.listener.get("MESSAGE")
    for key, value in {"content-type": "application/json", "correlation-id": "c-1",
                       "reply-to": "/queue/back", "priority": "5", "persistent": "true",
                       "amqp-message-id": "m-1", "timestamp": "1700000000", "type": "t",
                       "user-id": "guest", "app-id": "app", "custom": "v",
                       "expiration": "60000", "content-encoding": "utf-8"}.items():
        assert frame.headers[key] == value, key


def test_properties_of_core_published_message(running_broker, clients):
    c = clients("1.1")
    c.conn.subscribe("/queue/from-amqp", id="s", headers={"receipt": "r"})
    c.receipt("r")

    def publish():
        vhost = running_broker.broker.vhosts["/"]
        props = Properties(content_type="text/plain", correlation_id="abc", delivery_mode=1,
                           headers={"x-mqtt-publish-qos": 1, "flag": True, "skip": [1, 2],
                                    "destination": "/queue/evil", "bin": b"\xff"})
        vhost.publish("", "from-amqp", Message("", "from-amqp", b"hi", props))

    running_broker.call(publish)
    frame = c.listener.get("MESSAGE")
    assert frame.headers["destination"] == "/queue/from-amqp"  # not overridden by a header
    assert frame.headers["content-type"] == "text/plain"
    assert frame.headers["correlation-id"] == "abc"
    assert frame.headers["persistent"] == "false"
    assert frame.headers["x-mqtt-publish-qos"] == "1"
    assert frame.headers["flag"] == "true"
    assert "skip" not in frame.headers and "bin" not in frame.headers


def test_host_header_names_vhost(make_broker):
    rb = make_broker(server={"vhosts": ["/", "other"]})
    c = Client(rb, "1.2", vhost="other")
    try:
        c.conn.send("/queue/inother", b"x", headers={"receipt": "r"})
        c.receipt("r")
        assert rb.call(lambda: "inother" in rb.broker.vhosts["other"].queues)
        assert rb.call(lambda: "inother" not in rb.broker.vhosts["/"].queues)
    finally:
        c.close()


# ======================================================================== heart-beats
def test_heartbeats_both_directions(make_broker):
    # The server drops a client silent for ~2 intervals: 1 s leaves room for a loaded machine.
    rb = make_broker(stomp={"heartbeat_ms": 1000})
    c = Client(rb, "1.2", heartbeats=(1000, 1000))
    try:
        wait_for(lambda: c.listener.heartbeats >= 2)  # the server sends heart-beats while idle
        assert c.conn.is_connected()  # and takes ours: it did not drop us
        c.subscribe("/queue/hb")
        c.conn.send("/queue/hb", b"alive")
        assert c.listener.get("MESSAGE").body == b"alive"
    finally:
        c.close()


def test_going_away_sends_error(tmp_path):
    from tests.conftest import RunningBroker, broker_settings
    rb = RunningBroker(broker_settings(tmp_path)).start()
    c = Client(rb, "1.2")
    try:
        rb.stop()
        err = c.listener.get("ERROR")
        assert err.headers["message"] == "Server shutting down"
    finally:
        c.close()


# ======================================================================== errors via stomp.py
def test_wrong_password_error_and_close(running_broker):
    listener = Listener()
    conn = stomp.Connection12([(running_broker.host, running_broker.ports["stomp"])])
    conn.set_listener("l", listener)
    with pytest.raises(stomp.exception.ConnectFailedException):
        conn.connect("guest", "wrong", wait=True)
    err = listener.get("ERROR")
    assert err.headers["message"] == "Bad CONNECT"
    assert "login refused for user 'guest'" in err.body


def test_error_on_one_connection_leaves_others_alone(running_broker, clients):
    good, bad = clients("1.2"), clients("1.2")
    good.subscribe("/queue/alone")
    bad.conn.send_frame("SEND", {"receipt": "r1"}, "no destination")
    err = bad.listener.get("ERROR")
    assert err.headers["message"] == "Missing destination"
    assert err.headers["receipt-id"] == "r1"
    assert bad.listener.get("DISCONNECTED") is None
    good.conn.send("/queue/alone", b"still here")
    assert good.listener.get("MESSAGE").body == b"still here"


# ======================================================================== restart
def test_persistent_messages_and_durable_subscription_survive_restart(tmp_path):
    from tests.conftest import RunningBroker, broker_settings
    settings = broker_settings(tmp_path)
    rb = RunningBroker(settings).start()
    try:
        c = Client(rb, "1.2")
        c.subscribe("/topic/alerts", id="keep", persistent="true", **{"auto-delete": "false"})
        c.conn.unsubscribe("keep", headers={"receipt": "u"})  # no persistent: the queue stays
        c.receipt("u")
        c.conn.send("/queue/durable-q", b"kept", headers={"persistent": "true", "receipt": "a"})
        c.receipt("a")  # only after the message is on disk
        c.conn.send("/queue/durable-q", b"transient", headers={"receipt": "b"})
        c.receipt("b")
        c.conn.send("/topic/alerts", b"for later", headers={"persistent": "true", "receipt": "c"})
        c.receipt("c")
        c.close()
    finally:
        rb.stop()
    rb = RunningBroker(settings).start()
    try:
        c = Client(rb, "1.2")
        c.subscribe("/queue/durable-q")
        assert c.listener.get("MESSAGE").body == b"kept"
        c.listener.nothing(0.2)  # the transient one is gone
        c.subscribe("/topic/alerts", id="keep", persistent="true", **{"auto-delete": "false"})
        frame = c.listener.get("MESSAGE")
        assert frame.body == b"for later"
        assert frame.headers["persistent"] == "true"
        c.close()
    finally:
        rb.stop()


# ======================================================================== other protocols
def test_stomp_and_mqtt_topics_meet_on_amq_topic(running_broker, clients):
    """STOMP /topic/<key> and MQTT topics share amq.topic (MQTT swaps '/' and '.')."""
    if "mqtt" not in running_broker.ports:
        pytest.skip("no MQTT adapter")
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.properties import Properties as MqttProperties
    from paho.mqtt.packettypes import PacketTypes

    got: queue.Queue = queue.Queue()
    subscribed: queue.Queue = queue.Queue()
    m = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="stomp-interop",
                    protocol=mqtt.MQTTv5)
    m.on_message = lambda client, userdata, msg: got.put(msg)
    m.on_subscribe = lambda *args: subscribed.put(True)
    m.connect(running_broker.host, running_broker.ports["mqtt"])
    m.loop_start()
    try:
        m.subscribe("sensors/+", qos=1)
        subscribed.get(timeout=WAIT)
        c = clients("1.2")
        c.subscribe("/topic/sensors.*")
        c.conn.send("/topic/sensors.t1", b"21.5", headers={"content-type": "text/plain",
                                                             "unit": "C", "persistent": "true"})
        msg = got.get(timeout=WAIT)
        assert (msg.topic, msg.payload) == ("sensors/t1", b"21.5")
        assert msg.properties.ContentType == "text/plain"
        assert ("unit", "C") in msg.properties.UserProperty
        assert c.listener.get("MESSAGE").body == b"21.5"  # the STOMP subscriber too
        props = MqttProperties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        props.CorrelationData = b"corr-1"
        props.UserProperty = [("k", "v")]
        m.publish("sensors/t2", b"{}", qos=1, properties=props)
        frame = c.listener.get("MESSAGE")
        assert frame.body == b"{}"
        assert frame.headers["destination"] == "/topic/sensors.t2"
        assert frame.headers["content-type"] == "application/json"
        assert frame.headers["correlation-id"] == "corr-1"
        assert frame.headers["k"] == "v"
    finally:
        m.loop_stop()
        m.disconnect()


def test_x_delay_on_send_delays_the_message_not_the_queue(running_broker, clients):
    c = clients("1.2")
    # the first SEND declares the queue: its x-delay must not become a queue argument
    c.conn.send("/queue/later", b"late", headers={"x-delay": "300", "receipt": "r"})
    c.receipt("r")
    c.subscribe("/queue/later")
    c.conn.send("/queue/later", b"now")
    assert c.listener.get("MESSAGE").body == b"now"
    assert c.listener.get("MESSAGE").body == b"late"
    args = running_broker.call(lambda: dict(running_broker.broker.vhosts["/"].queues["later"].arguments))
    assert args == {}


def test_commit_receipt_after_persistent_sends(running_broker, clients):
    c = clients("1.2")
    c.conn.begin("t")
    for i in range(3):
        c.conn.send("/queue/txp", str(i).encode(), headers={"transaction": "t",
                                                            "persistent": "true"})
    c.conn.commit("t", headers={"receipt": "done"})
    c.receipt("done")
    assert queue_state(running_broker, "txp") == (3, 0)


def test_stomp_and_amqp_properties_both_ways(running_broker, clients):
    """A STOMP SEND as seen by pika, and a pika publish as seen by a STOMP subscriber."""
    if "amqp" not in running_broker.ports:
        pytest.skip("no AMQP adapter")
    import pika

    c = clients("1.2")
    c.conn.send("/queue/to-amqp", b"from stomp", headers={
        "content-type": "text/plain", "correlation-id": "c-9", "persistent": "true",
        "amqp-message-id": "m-9", "priority": "3", "reply-to": "/queue/back", "custom": "yes",
        "receipt": "r"})
    c.receipt("r")
    params = pika.ConnectionParameters(running_broker.host, running_broker.ports["amqp"],
                                       socket_timeout=WAIT, blocked_connection_timeout=WAIT)
    amqp = pika.BlockingConnection(params)
    try:
        channel = amqp.channel()
        method, props, body = channel.basic_get("to-amqp", auto_ack=True)
        assert body == b"from stomp"
        assert (props.content_type, props.correlation_id, props.delivery_mode,
                props.message_id, props.priority, props.reply_to) == (
            "text/plain", "c-9", 2, "m-9", 3, "/queue/back")
        assert props.headers == {"custom": "yes"}
        c.conn.subscribe("/queue/from-amqp", id="s", headers={"receipt": "s"})
        c.receipt("s")
        channel.basic_publish("", "from-amqp", b"from amqp", pika.BasicProperties(
            content_type="application/json", correlation_id="x-1", message_id="am-1",
            app_id="pika", headers={"n": 5, "s": "str"}))
        frame = c.listener.get("MESSAGE")
        assert frame.body == b"from amqp"
        for key, value in {"content-type": "application/json", "correlation-id": "x-1",
                           "amqp-message-id": "am-1", "app-id": "pika", "n": "5",
                           "s": "str", "destination": "/queue/from-amqp"}.items():
            assert frame.headers[key] == value, key
    finally:
        amqp.close()
