"""SQS FIFO queues and dead-letter queues with boto3: group order and locking, deduplication,
sequence numbers, redrive after maxReceiveCount, RedriveAllowPolicy, move tasks."""
from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from .sqs_helpers import sqs_client


@pytest.fixture
def sqs(running_broker):
    return sqs_client(running_broker)


def fifo(sqs, name="jobs.fifo", **attributes):
    return sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true", **attributes})[
        "QueueUrl"]


def test_order_within_group_and_group_locked_while_in_flight(sqs):
    url = fifo(sqs)
    for group, body in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2"), ("a", "a3")]:
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group,
                         MessageDeduplicationId=body)
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1,
                                AttributeNames=["MessageGroupId"])["Messages"]
    assert [m["Body"] for m in first] == ["a1"]
    # Group a is locked while a1 is in flight: only group b comes out, in its order.
    second = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in second] == ["b1", "b2"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    third = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in third] == ["a2", "a3"]


def test_returned_message_keeps_its_place_in_the_group(sqs):
    url = fifo(sqs)
    for body in ("m1", "m2", "m3"):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g",
                         MessageDeduplicationId=body)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]
    assert [m["Body"] for m in got] == ["m1", "m2"]
    sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
        for i, m in enumerate(got)])
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in again] == ["m1", "m2", "m3"]


def test_deduplication_by_id_survives_delete(sqs):
    url = fifo(sqs)
    first = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g",
                             MessageDeduplicationId="d1")
    (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    again = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g",
                             MessageDeduplicationId="d1")
    assert again["MessageId"] == first["MessageId"]
    assert again["SequenceNumber"] == first["SequenceNumber"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_content_based_deduplication_and_sequence_numbers(sqs):
    url = fifo(sqs, ContentBasedDeduplication="true")
    a = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    b = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    c = sqs.send_message(QueueUrl=url, MessageBody="other", MessageGroupId="g")
    assert a["MessageId"] == b["MessageId"]
    assert int(c["SequenceNumber"]) > int(a["SequenceNumber"])
    assert len(c["SequenceNumber"]) == 20
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                              AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["same", "other"]
    assert [m["Attributes"]["SequenceNumber"] for m in got] == [a["SequenceNumber"],
                                                                 c["SequenceNumber"]]
    assert got[0]["Attributes"]["MessageGroupId"] == "g"
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "1", "MessageBody": "n1", "MessageGroupId": "g"},
        {"Id": "2", "MessageBody": "n1", "MessageGroupId": "g"}])
    ids = {e["Id"]: e["MessageId"] for e in batch["Successful"]}
    assert ids["1"] == ids["2"]


def test_fifo_rules(sqs):
    url = fifo(sqs)
    with pytest.raises(ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")
    assert err.value.response["Error"]["Code"] == "MissingParameter"
    with pytest.raises(ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g",
                         MessageDeduplicationId="d", DelaySeconds=5)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError):
        sqs.create_queue(QueueName="plain", Attributes={"FifoQueue": "true"})
    # High-throughput mode attributes are accepted and reported.
    ht = fifo(sqs, "ht.fifo", DeduplicationScope="messageGroup",
              FifoThroughputLimit="perMessageGroupId")
    attrs = sqs.get_queue_attributes(QueueUrl=ht, AttributeNames=["All"])["Attributes"]
    assert attrs["FifoQueue"] == "true"
    assert attrs["DeduplicationScope"] == "messageGroup"
    assert attrs["FifoThroughputLimit"] == "perMessageGroupId"
    # messageGroup scope: the same id in another group is another message.
    a = sqs.send_message(QueueUrl=ht, MessageBody="x", MessageGroupId="g1",
                         MessageDeduplicationId="d")
    b = sqs.send_message(QueueUrl=ht, MessageBody="x", MessageGroupId="g2",
                         MessageDeduplicationId="d")
    assert a["MessageId"] != b["MessageId"]


def redrive(sqs, source="src", dlq="dlq", max_receive=2):
    dlq_url = sqs.create_queue(QueueName=dlq)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url,
                                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    src_url = sqs.create_queue(QueueName=source, Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive)})})["QueueUrl"]
    return src_url, dlq_url, arn


def test_message_moves_to_dlq_after_max_receive_count(sqs):
    src, dlq, dlq_arn = redrive(sqs)
    sent = sqs.send_message(QueueUrl=src, MessageBody="poison", MessageAttributes={
        "k": {"DataType": "String", "StringValue": "v"}})
    for _ in range(2):
        got = sqs.receive_message(QueueUrl=src, VisibilityTimeout=1, WaitTimeSeconds=20)
        assert got["Messages"][0]["Body"] == "poison"
        time.sleep(1.1)
    assert "Messages" not in sqs.receive_message(QueueUrl=src, WaitTimeSeconds=1)
    moved = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=20, MessageAttributeNames=["All"],
                                AttributeNames=["All"])["Messages"]
    assert moved[0]["Body"] == "poison"
    assert moved[0]["MessageId"] == sent["MessageId"]
    assert moved[0]["MessageAttributes"]["k"]["StringValue"] == "v"
    assert moved[0]["Attributes"]["DeadLetterQueueSourceArn"].endswith(":src")
    sources = sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]
    assert [u.rsplit("/", 1)[1] for u in sources] == ["src"]
    policy = json.loads(sqs.get_queue_attributes(
        QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
    assert policy == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}


def test_redrive_policy_checks(sqs):
    dlq_url = sqs.create_queue(QueueName="closed-dlq", Attributes={
        "RedriveAllowPolicy": json.dumps({"redrivePermission": "denyAll"})})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url,
                                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for policy in ({"deadLetterTargetArn": arn, "maxReceiveCount": 1},
                   {"deadLetterTargetArn": arn.replace("closed-dlq", "nope"),
                    "maxReceiveCount": 1},
                   {"deadLetterTargetArn": arn, "maxReceiveCount": 1001}):
        with pytest.raises(ClientError) as err:
            sqs.create_queue(QueueName="src2", Attributes={"RedrivePolicy": json.dumps(policy)})
        assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(sqs.exceptions.InvalidAttributeValue):
        sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={
            "RedriveAllowPolicy": json.dumps({"redrivePermission": "sometimes"})})


def test_move_task_returns_messages_to_their_source(sqs):
    src, dlq, dlq_arn = redrive(sqs, max_receive=1)
    for i in range(3):
        sqs.send_message(QueueUrl=src, MessageBody=f"m{i}")
    got = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, VisibilityTimeout=1)
    assert len(got["Messages"]) == 3
    deadline = time.monotonic() + 60  # generous: only a failing wait takes that long
    while time.monotonic() < deadline:
        attrs = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
        if attrs["ApproximateNumberOfMessages"] == "3":
            break
        time.sleep(0.2)
    assert attrs["ApproximateNumberOfMessages"] == "3"
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        (task,) = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        if task["Status"] == "COMPLETED":
            break
        time.sleep(0.1)
    assert task["Status"] == "COMPLETED"
    assert task["ApproximateNumberOfMessagesMoved"] == 3
    assert task["ApproximateNumberOfMessagesToMove"] == 3
    back = []
    while len(back) < 3 and time.monotonic() < deadline + 5:
        back += sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10,
                                    AttributeNames=["All"]).get("Messages", [])
    assert sorted(m["Body"] for m in back) == ["m0", "m1", "m2"]
    assert "DeadLetterQueueSourceArn" not in back[0]["Attributes"]
    with pytest.raises(sqs.exceptions.ResourceNotFoundException):
        sqs.cancel_message_move_task(TaskHandle=handle)
    with pytest.raises(sqs.exceptions.ResourceNotFoundException):
        sqs.list_message_move_tasks(SourceArn=dlq_arn.replace("dlq", "nothing"))


def test_move_task_to_destination_and_cancel(sqs):
    src, dlq, dlq_arn = redrive(sqs, max_receive=1)
    other = sqs.create_queue(QueueName="elsewhere")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other,
                                         AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for i in range(20):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"d{i}")
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=other_arn,
                                         MaxNumberOfMessagesPerSecond=2)["TaskHandle"]
    with pytest.raises(ClientError):
        sqs.start_message_move_task(SourceArn=dlq_arn)  # one running task per source
    deadline = time.monotonic() + 60  # until the task moved something (2 a second)
    while sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0][
            "ApproximateNumberOfMessagesMoved"] == 0:
        assert time.monotonic() < deadline, "the move task moved nothing"
        time.sleep(0.05)
    moved = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]
    assert 0 < moved < 20
    (task,) = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
    assert task["Status"] == "CANCELLED"
    assert task["DestinationArn"] == other_arn
    got = sqs.receive_message(QueueUrl=other, MaxNumberOfMessages=10)["Messages"]
    assert len(got) == moved
