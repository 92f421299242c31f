"""SetQueueAttributes MessageRetentionPeriod holds for the messages already in the queue, counted
from when each was sent (as on AWS), not only for those sent after the change."""
from __future__ import annotations

import time

import pytest

from manifold.adapters.aws.attributes import to_message

from .sqs_helpers import sqs_client

pytestmark = pytest.mark.timeout(60)


def visible_count(sqs, url) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_a_shorter_retention_period_deletes_older_messages_already_queued(running_broker):
    sqs = sqs_client(running_broker)
    url = sqs.create_queue(QueueName="aging")["QueueUrl"]  # retention: 4 days
    # A message sent two minutes ago, handed to the core as SendMessage hands one (the minimum
    # retention is 60 s: a test cannot wait for a message to grow that old).
    sent_ms = int(time.time() * 1000) - 120_000
    vhost = running_broker.broker.vhosts["/"]
    running_broker.call(lambda: vhost.publish("", "aging", to_message(
        "two minutes old", sent_ms=sent_ms, routing_key="aging")))
    sqs.send_message(QueueUrl=url, MessageBody="just sent")
    assert visible_count(sqs, url) == 2

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    deadline = time.monotonic() + 20
    while visible_count(sqs, url) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert visible_count(sqs, url) == 1
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                              AttributeNames=["SentTimestamp"])["Messages"]
    assert [m["Body"] for m in got] == ["just sent"]

    # A longer period again: what is left is kept (nothing else expires)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "345600"})
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"],
                                  VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in again] == ["just sent"]
