"""What SQS state outlives a broker restart: queues with their attributes, messages, receipt
handles (DeleteMessage still deletes), the FIFO deduplication window."""
from __future__ import annotations

import json
import time

import pytest

from .sqs_helpers import sqs_client


def restart(make_broker, broker):
    broker.stop()
    broker.stop = lambda: None  # the fixture's teardown must not stop it twice
    return make_broker()


def test_queue_attributes_and_messages_survive(make_broker):
    broker = make_broker()
    sqs = sqs_client(broker)
    dlq = sqs.create_queue(QueueName="dead")["QueueUrl"]
    url = sqs.create_queue(QueueName="keep", Attributes={
        "VisibilityTimeout": "77", "RedrivePolicy": json.dumps({
            "deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dead",
            "maxReceiveCount": 3})}, tags={"a": "b"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="persisted", MessageAttributes={
        "n": {"DataType": "Number.float", "StringValue": "2.50"}})
    broker = restart(make_broker, broker)
    sqs = sqs_client(broker)
    url = sqs.get_queue_url(QueueName="keep")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "77"
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 3
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"a": "b"}
    (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert message["Body"] == "persisted"
    assert message["MessageAttributes"]["n"] == {"DataType": "Number.float",
                                                 "StringValue": "2.50"}
    dlq = sqs.get_queue_url(QueueName="dead")["QueueUrl"]
    sources = sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]
    assert [u.rsplit("/", 1)[1] for u in sources] == ["keep"]


def test_receipt_handles_from_before_a_restart_stay_valid(make_broker):
    broker = make_broker()
    sqs = sqs_client(broker)
    url = sqs.create_queue(QueueName="handles")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="one")
    sqs.send_message(QueueUrl=url, MessageBody="two")
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                   VisibilityTimeout=600)["Messages"]
    assert [m["Body"] for m in received] == ["one", "two"]
    broker = restart(make_broker, broker)
    sqs = sqs_client(broker)
    # both still in flight, and their handles name them
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=received[1]["ReceiptHandle"],
                                  VisibilityTimeout=0)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"])
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                               AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert [(m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in left] == [
        ("two", "2")]
    # the handle of an earlier receive no longer moves it (the newer receiver holds it)
    with pytest.raises(sqs.exceptions.MessageNotInflight):
        sqs.change_message_visibility(QueueUrl=url,
                                      ReceiptHandle=received[1]["ReceiptHandle"],
                                      VisibilityTimeout=0)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=left[0]["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)


def test_fifo_deduplication_window_survives_a_restart(make_broker):
    broker = make_broker()
    sqs = sqs_client(broker)
    url = sqs.create_queue(QueueName="once.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    first = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g",
                             MessageDeduplicationId="order-1")
    (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    broker = restart(make_broker, broker)
    sqs = sqs_client(broker)
    again = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g",
                             MessageDeduplicationId="order-1")
    assert again["MessageId"] == first["MessageId"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    later = sqs.send_message(QueueUrl=url, MessageBody="y", MessageGroupId="g",
                             MessageDeduplicationId="order-2")
    assert int(later["SequenceNumber"]) > int(first["SequenceNumber"])
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["FifoQueue"])["Attributes"]
    assert attrs == {"FifoQueue": "true"}


def _arn(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url,
                                    AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def test_a_running_move_task_resumes_after_a_restart(make_broker):
    broker = make_broker()
    sqs = sqs_client(broker)
    dlq = sqs.create_queue(QueueName="moves-dlq")["QueueUrl"]
    sqs.create_queue(QueueName="moves-src", Attributes={"RedrivePolicy": json.dumps({
        "deadLetterTargetArn": _arn(sqs, dlq), "maxReceiveCount": 1})})
    target = sqs.create_queue(QueueName="moves-target")["QueueUrl"]
    for i in range(12):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"d{i}")
    sqs.start_message_move_task(SourceArn=_arn(sqs, dlq), DestinationArn=_arn(sqs, target),
                                MaxNumberOfMessagesPerSecond=2)  # 6 s to catch it part-way
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # stop it part-way: after its first batch, before the end
        (task,) = sqs.list_message_move_tasks(SourceArn=_arn(sqs, dlq))["Results"]
        if task["ApproximateNumberOfMessagesMoved"] > 0:
            break
        time.sleep(0.05)
    assert task["Status"] == "RUNNING"
    assert 0 < task["ApproximateNumberOfMessagesMoved"] < 12
    broker = restart(make_broker, broker)
    sqs = sqs_client(broker)
    deadline = time.monotonic() + 60  # generous: only a failing wait takes that long
    while time.monotonic() < deadline:
        (after,) = sqs.list_message_move_tasks(SourceArn=_arn(sqs, dlq))["Results"]
        if after["Status"] != "RUNNING":
            break
        time.sleep(0.2)
    assert after["Status"] == "COMPLETED"
    assert after["ApproximateNumberOfMessagesToMove"] == 12
    assert after["ApproximateNumberOfMessagesMoved"] == 12
    assert after["StartedTimestamp"] == task["StartedTimestamp"]
    bodies: list[str] = []
    while time.monotonic() < deadline + 10:
        got = sqs.receive_message(QueueUrl=target, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        bodies += [m["Body"] for m in got]
        sqs.delete_message_batch(QueueUrl=target, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
    assert sorted(bodies) == sorted(f"d{i}" for i in range(12))
    attrs = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
