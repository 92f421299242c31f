"""What SendMessage answered survives `kill -9`: a real daemon, boto3, a real SIGKILL; and the
messages come back over SQS and AMQP alike."""
import signal

import pika
import pytest

from tests.daemon import start_daemon as start_process, stop_daemon
from tests.integration.sqs_helpers import sqs_client

pytestmark = pytest.mark.timeout(300)  # a hang fails; a loaded machine is only slow


class Daemon:
    """What the boto3 helpers take: the ports by listener name."""

    def __init__(self, ports):
        self.ports = ports


def start_daemon(data_dir):
    proc, ports = start_process(data_dir)
    return proc, Daemon(ports)


def test_sqs_answered_sends_survive_sigkill(tmp_path):
    proc, daemon = start_daemon(tmp_path)
    answered = []
    try:
        sqs = sqs_client(daemon)
        url = sqs.create_queue(QueueName="durable")["QueueUrl"]
        for i in range(100):
            sqs.send_message(QueueUrl=url, MessageBody=f"single-{i}", MessageAttributes={
                "i": {"DataType": "Number", "StringValue": str(i)}})
            answered.append(f"single-{i}")
        for b in range(10):
            result = sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "MessageBody": f"batch-{b}-{i}"} for i in range(10)])
            answered += [f"batch-{b}-{e['Id']}" for e in result["Successful"]]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    proc, daemon = start_daemon(tmp_path)
    try:
        sqs = sqs_client(daemon)
        url = sqs.get_queue_url(QueueName="durable")["QueueUrl"]
        half = len(answered) // 2
        received = []
        while len(received) < half:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                      MessageAttributeNames=["All"]).get("Messages", [])
            assert got, "fewer messages than were answered"
            received += got
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        assert received[0]["MessageAttributes"]["i"]["StringValue"] == "0"
        bodies = [m["Body"] for m in received]
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", daemon.ports["amqp"]))
        channel = connection.channel()
        while True:
            method, _, body = channel.basic_get("durable", auto_ack=True)
            if method is None:
                break
            bodies.append(body.decode())
        connection.close()
        assert bodies == answered  # every answered send, in order, nothing else
    finally:
        stop_daemon(proc)
