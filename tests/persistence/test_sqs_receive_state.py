"""SQS receive state outlives a restart, clean (SIGTERM) or `kill -9`: a message in flight stays
invisible until its visibility timeout ends, ApproximateReceiveCount goes on counting, and a
redrive policy's maxReceiveCount cannot be dodged by restarting the broker. A real daemon, boto3,
real signals."""
from __future__ import annotations

import json
import signal
import time

import pytest

from tests.daemon import start_daemon, stop_daemon
from tests.integration.sqs_helpers import sqs_client

pytestmark = pytest.mark.timeout(240)

#: long enough for a restart on a loaded machine, short enough to wait for
VISIBILITY_S = 15


class Daemon:
    """A `manifold serve` child process and what the boto3 helpers take (its ports)."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc, self.ports = start_daemon(data_dir)

    def restart(self, how: str) -> "Daemon":
        if how == "kill":
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        else:
            stop_daemon(self.proc)
        return Daemon(self.data_dir)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemons(tmp_path):
    started: list[Daemon] = []

    def start() -> Daemon:
        started.append(Daemon(tmp_path))
        return started[-1]

    def restart(daemon: Daemon, how: str) -> Daemon:
        started.append(daemon.restart(how))
        return started[-1]

    start.restart = restart  # type: ignore[attr-defined]
    yield start
    for daemon in started:
        daemon.close()


def receive_one(sqs, url, **params) -> dict | None:
    got = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], **params).get("Messages")
    return got[0] if got else None


def wait_for_message(sqs, url, until_s: float) -> tuple[dict | None, float]:
    """Long-poll until a message comes or ``until_s`` (monotonic) passes; the message and when
    it came."""
    while time.monotonic() < until_s:
        wait = max(1, min(20, int(until_s - time.monotonic())))
        message = receive_one(sqs, url, WaitTimeSeconds=wait)
        if message is not None:
            return message, time.monotonic()
    return None, time.monotonic()


def flush(sqs, url) -> None:
    """SendMessage answers after the fsync of its batch, which covers every write queued
    before it (receive state included): after this, a SIGKILL loses none of them."""
    sqs.send_message(QueueUrl=f"{url}-flush", MessageBody="flush")


@pytest.mark.parametrize("how", ["term", "kill"])
def test_in_flight_message_stays_invisible_after_restart(daemons, how):
    daemon = daemons()
    sqs = sqs_client(daemon)
    url = sqs.create_queue(QueueName="work")["QueueUrl"]
    sqs.create_queue(QueueName="work-flush")
    sqs.send_message(QueueUrl=url, MessageBody="short")
    sqs.send_message(QueueUrl=url, MessageBody="long")
    # "short" is received three times (the first two given back at once), then held
    for expected in (1, 2):
        message = receive_one(sqs, url)
        assert (message["Body"], message["Attributes"]["ApproximateReceiveCount"]) == (
            "short", str(expected))
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                      VisibilityTimeout=0)
    # (the broker's deadline is at least this: it reads its clock after the request left)
    visible_again_at = time.monotonic() + VISIBILITY_S
    short = receive_one(sqs, url, VisibilityTimeout=VISIBILITY_S)
    assert (short["Body"], short["Attributes"]["ApproximateReceiveCount"]) == ("short", "3")
    long = receive_one(sqs, url, VisibilityTimeout=600)
    assert long["Body"] == "long"
    first_receive = short["Attributes"]["ApproximateFirstReceiveTimestamp"]
    flush(sqs, url)

    daemon = daemons.restart(daemon, how)
    sqs = sqs_client(daemon)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    if time.monotonic() < visible_again_at - 2:  # (else the restart took the whole timeout)
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "2"
    # Nothing comes before the visibility timeout of "short" ends ...
    message, came_at = wait_for_message(sqs, url, visible_again_at + 60)
    assert message is not None, "the message never became visible again"
    assert came_at >= visible_again_at - 0.2, "visible again before its visibility timeout"
    # ... then "short" does, its receive count going on from before the restart
    assert message["Body"] == "short"
    assert message["Attributes"]["ApproximateReceiveCount"] == "4"
    assert message["Attributes"]["ApproximateFirstReceiveTimestamp"] == first_receive
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    # "long" is still in flight; its receipt handle from before the restart is still valid
    assert receive_one(sqs, url) is None
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=long["ReceiptHandle"],
                                  VisibilityTimeout=0)
    message = receive_one(sqs, url, WaitTimeSeconds=5)
    assert (message["Body"], message["Attributes"]["ApproximateReceiveCount"]) == ("long", "2")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert receive_one(sqs, url) is None


def test_redrive_counts_receives_across_restarts(daemons):
    """maxReceiveCount 3, one receive per run of the broker: the third receive's return moves
    the message to the dead-letter queue, as it would without the restarts."""
    daemon = daemons()
    sqs = sqs_client(daemon)
    dlq = sqs.create_queue(QueueName="dead")["QueueUrl"]
    url = sqs.create_queue(QueueName="src", Attributes={"RedrivePolicy": json.dumps({
        "deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dead",
        "maxReceiveCount": 3})})["QueueUrl"]
    sqs.create_queue(QueueName="src-flush")
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for expected, how in ((1, "kill"), (2, "term"), (3, None)):
        message = receive_one(sqs, url)
        assert message is not None, f"receive {expected} got nothing"
        assert message["Attributes"]["ApproximateReceiveCount"] == str(expected)
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                      VisibilityTimeout=0)
        if how is not None:
            flush(sqs, url)
            daemon = daemons.restart(daemon, how)
            sqs = sqs_client(daemon)
    assert receive_one(sqs, url) is None
    dead = receive_one(sqs, dlq, WaitTimeSeconds=5)
    assert dead is not None and dead["Body"] == "poison"
    assert dead["Attributes"]["DeadLetterQueueSourceArn"].endswith(":src")


def test_redrive_when_the_last_visibility_timeout_ends_while_down(daemons):
    """The last allowed receive's visibility timeout ends while the broker is down: the
    message goes to the dead-letter queue after the restart, without another receive."""
    daemon = daemons()
    sqs = sqs_client(daemon)
    dlq = sqs.create_queue(QueueName="dead")["QueueUrl"]
    url = sqs.create_queue(QueueName="src", Attributes={"RedrivePolicy": json.dumps({
        "deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dead",
        "maxReceiveCount": 1})})["QueueUrl"]
    sqs.create_queue(QueueName="src-flush")
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    message = receive_one(sqs, url, VisibilityTimeout=1)
    visible_again_at = time.monotonic() + 1  # (after the broker's deadline)
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    flush(sqs, url)
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    while time.monotonic() < visible_again_at + 0.5:  # (the timeout ends while it is down)
        time.sleep(0.1)
    daemon = daemons()  # (the same data directory)
    sqs = sqs_client(daemon)
    dead, _ = wait_for_message(sqs, dlq, time.monotonic() + 30)
    assert dead is not None and dead["Body"] == "poison"
    assert receive_one(sqs, url) is None
