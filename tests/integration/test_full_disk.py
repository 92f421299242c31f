"""A full disk and a low open-file limit, for real: a small tmpfs under the data directory, and a
daemon started under RLIMIT_NOFILE 256. Nothing unstored is confirmed, the broker keeps serving,
the disk alarm blocks publishers and lets them go again, everything confirmed survives a restart."""
import resource
import subprocess
import threading
import time

import pika
import pika.exceptions
import pytest

from tests.conftest import RunningBroker, broker_settings
from tests.daemon import start_daemon, stop_daemon

pytestmark = pytest.mark.timeout(180)

BODY = b"x" * (64 * 1024)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 12 MiB at tmp_path/disk (the tests run as root in CI)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def start(tmp_path, data_dir, **server):
    settings = broker_settings(tmp_path, persistence={"segment_bytes": 1024 * 1024},
                               server={"disk_check_interval_ms": 50, **server})
    settings = settings.replace("server", data_dir=str(data_dir))
    return RunningBroker(settings).start()


def connect(broker):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], blocked_connection_timeout=60,
        socket_timeout=30, stack_timeout=60))


def persistent(i):
    return pika.BasicProperties(delivery_mode=2, message_id=str(i))


def test_a_full_disk_nacks_instead_of_confirming_and_nothing_confirmed_is_lost(tmp_path,
                                                                              small_disk):
    broker = start(tmp_path, small_disk / "data", disk_free_limit_bytes=0)
    confirmed, nacked = [], []
    try:
        conn = connect(broker)
        ch = conn.channel()
        ch.queue_declare("q", durable=True)
        ch.confirm_delivery()
        for i in range(400):  # 25 MiB into 12 MiB
            try:
                ch.basic_publish("", "q", BODY, persistent(i))
                confirmed.append(i)
            except pika.exceptions.NackError:
                nacked.append(i)
            if len(nacked) >= 5:
                break
        assert nacked, "the disk never filled"
        # Others are still served: a transient round trip on a second connection.
        other = connect(broker)
        och = other.channel()
        och.queue_declare("transient", durable=False, exclusive=True)
        och.basic_publish("", "transient", b"still here")
        for _ in range(50):
            _, _, body = och.basic_get("transient", auto_ack=True)
            if body is not None:
                break
            time.sleep(0.05)
        assert body == b"still here"
        # Consumers drain (acks are written), space comes back, publishing works again.
        drained = []
        for _ in range(60):
            method, props, _ = och.basic_get("q")
            drained.append(int(props.message_id))
            och.basic_ack(method.delivery_tag)
        deadline = time.monotonic() + 60  # generous: only a failing wait takes that long
        while True:
            try:
                ch.basic_publish("", "q", BODY, persistent(1000))
                confirmed.append(1000)
                break
            except pika.exceptions.NackError:
                assert time.monotonic() < deadline, "space never came back"
                time.sleep(0.2)
        other.close()
        conn.close()
    finally:
        broker.stop()
    broker = start(tmp_path, small_disk / "data", disk_free_limit_bytes=0)
    try:
        conn = connect(broker)
        ch = conn.channel()
        recovered = set()
        while True:
            method, props, _ = ch.basic_get("q", auto_ack=True)
            if method is None:
                break
            recovered.add(int(props.message_id))
        assert set(confirmed) - set(drained) <= recovered
        conn.close()
    finally:
        broker.stop()


def test_the_disk_alarm_blocks_publishers_until_space_comes_back(tmp_path, small_disk):
    broker = start(tmp_path, small_disk / "data", disk_free_limit_bytes=6 * 1024 * 1024)
    done = threading.Event()
    errors: list[BaseException] = []
    total = 120  # 7.5 MiB: more than fits above the limit

    def publisher():
        try:
            conn = connect(broker)
            ch = conn.channel()
            ch.queue_declare("q", durable=True)
            ch.confirm_delivery()
            for i in range(total):
                ch.basic_publish("", "q", BODY, persistent(i))  # a nack would raise
                time.sleep(0.01)  # give the 50 ms disk check a chance before the disk is full
            conn.close()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
        finally:
            done.set()

    def blocked():
        return broker.call(lambda: any(c.blocked for c in broker.service.connections))

    thread = threading.Thread(target=publisher, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 30
        while not blocked() and not done.is_set():
            assert time.monotonic() < deadline, "never blocked"
            time.sleep(0.05)
        assert not done.is_set()  # blocked: the publisher cannot finish
        # The consumer keeps working while the publisher is blocked.
        consumer = connect(broker)
        ch = consumer.channel()
        received = []
        while not done.wait(0):
            method, props, _ = ch.basic_get("q")
            if method is None:
                time.sleep(0.05)
                continue
            received.append(int(props.message_id))
            ch.basic_ack(method.delivery_tag)
            assert time.monotonic() < deadline + 60, "publisher never resumed"
        thread.join(10)
        assert not errors, errors
        assert not blocked()
        while True:
            method, props, _ = ch.basic_get("q", auto_ack=True)
            if method is None:
                break
            received.append(int(props.message_id))
        assert sorted(received) == list(range(total))
        consumer.close()
    finally:
        broker.stop()


def start_daemon_with_fd_limit(data_dir, limit):
    def lower_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc, ports = start_daemon(data_dir, timeout_s=60, preexec_fn=lower_limit)
    return proc, ports["amqp"]


@pytest.mark.timeout(900)  # two daemons, 1,500 files fsynced and indexed: minutes when loaded
def test_thousands_of_durable_queues_under_an_open_file_limit_of_256(tmp_path):
    queues = 1500
    proc, port = start_daemon_with_fd_limit(tmp_path / "data", 256)
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port,
                                                                 stack_timeout=60))
        ch = conn.channel()
        ch.confirm_delivery()
        for i in range(queues):
            ch.queue_declare(f"q{i}", durable=True)
            ch.basic_publish("", f"q{i}", f"m{i}".encode(), persistent(i))  # confirmed
        conn.close()
    finally:
        stop_daemon(proc, timeout_s=180)  # a clean stop indexes every queue's log
    proc, port = start_daemon_with_fd_limit(tmp_path / "data", 256)
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port,
                                                                 stack_timeout=60))
        ch = conn.channel()
        for i in range(0, queues, 7):
            method, _, body = ch.basic_get(f"q{i}", auto_ack=True)
            assert body == f"m{i}".encode()
        ch.confirm_delivery()
        ch.basic_publish("", "q1", b"after restart", persistent(0))
        conn.close()
    finally:
        stop_daemon(proc, timeout_s=180)  # a clean stop indexes every queue's log


def test_the_disk_limit_can_be_a_fraction_of_the_file_system(make_broker):
    nearly_all = make_broker(server={"disk_free_limit_bytes": 0,
                                     "disk_free_limit_ratio": 0.999999})
    assert nearly_all.call(lambda: nearly_all.broker.memory.disk_alarm)
    nothing = make_broker(server={"disk_free_limit_bytes": 0, "disk_free_limit_ratio": 0.0})
    assert not nothing.call(lambda: nothing.broker.memory.disk_alarm)
