"""SQS over AWS JSON 1.0 with an unmodified boto3 client: queues, attributes, messages, errors."""
from __future__ import annotations

import hashlib
import time

import pytest
from botocore.exceptions import ClientError

from .sqs_helpers import sqs_client


@pytest.fixture
def sqs(running_broker):
    return sqs_client(running_broker)


def test_create_is_idempotent_and_conflicts_on_other_attributes(sqs):
    url = sqs.create_queue(QueueName="orders", Attributes={"VisibilityTimeout": "45"})["QueueUrl"]
    assert url.endswith("/000000000000/orders")
    assert sqs.create_queue(QueueName="orders",
                            Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists) as err:
        sqs.create_queue(QueueName="orders", Attributes={"VisibilityTimeout": "46"})
    assert err.value.response["Error"]["Code"] == "QueueAlreadyExists"
    assert sqs.get_queue_url(QueueName="orders")["QueueUrl"] == url


@pytest.mark.parametrize("name", ["", "a" * 81, "bad name", "dots.are.bad", "x.fifo"])
def test_bad_queue_names_are_refused(sqs, name):
    with pytest.raises(ClientError) as err:
        sqs.create_queue(QueueName=name)
    assert err.value.response["Error"]["Code"] in ("InvalidParameterValue", "MissingParameter")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unknown_queue_is_queue_does_not_exist(sqs):
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as err:
        sqs.get_queue_url(QueueName="missing")
    assert err.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    url = sqs.create_queue(QueueName="gone")["QueueUrl"]
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="x")
    with pytest.raises(sqs.exceptions.QueueDeletedRecently):
        sqs.create_queue(QueueName="gone")


def test_list_queues_prefix_and_paging(sqs):
    for name in ("app-a", "app-b", "app-c", "other"):
        sqs.create_queue(QueueName=name)
    urls = sqs.list_queues(QueueNamePrefix="app-")["QueueUrls"]
    assert [u.rsplit("/", 1)[1] for u in urls] == ["app-a", "app-b", "app-c"]
    first = sqs.list_queues(QueueNamePrefix="app-", MaxResults=2)
    assert len(first["QueueUrls"]) == 2 and first["NextToken"]
    second = sqs.list_queues(QueueNamePrefix="app-", MaxResults=2, NextToken=first["NextToken"])
    assert [u.rsplit("/", 1)[1] for u in second["QueueUrls"]] == ["app-c"]
    assert "NextToken" not in second
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="none-")


def test_attributes_get_set_and_validate(sqs):
    url = sqs.create_queue(QueueName="attrs")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"
    assert attrs["MessageRetentionPeriod"] == "345600"
    assert attrs["MaximumMessageSize"] == "1048576"
    assert attrs["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:attrs"
    assert int(attrs["CreatedTimestamp"]) > 1_600_000_000
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "5",
                                                       "MessageRetentionPeriod": "60"})
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds",
                                                                 "MessageRetentionPeriod"])
    assert got["Attributes"] == {"DelaySeconds": "5", "MessageRetentionPeriod": "60"}
    with pytest.raises(sqs.exceptions.InvalidAttributeValue):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "901"})
    with pytest.raises(sqs.exceptions.InvalidAttributeValue):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "59"})
    with pytest.raises(sqs.exceptions.InvalidAttributeValue):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1048577"})
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Colour": "blue"})
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Colour"])


def test_tags(sqs):
    url = sqs.create_queue(QueueName="tagged", tags={"team": "a"})["QueueUrl"]
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a", "env": "test"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}


def test_permissions_edit_the_policy(sqs):
    url = sqs.create_queue(QueueName="perm")["QueueUrl"]
    sqs.add_permission(QueueUrl=url, Label="l1", AWSAccountIds=["111122223333"],
                       Actions=["SendMessage"])
    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]
    assert '"Sid":"l1"' in policy["Policy"]
    sqs.remove_permission(QueueUrl=url, Label="l1")
    assert "Attributes" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])


def test_send_receive_delete_with_attributes_and_md5s(sqs):
    url = sqs.create_queue(QueueName="work")["QueueUrl"]
    attributes = {"s": {"DataType": "String", "StringValue": "text"},
                  "n": {"DataType": "Number", "StringValue": "1.50"},
                  "i": {"DataType": "Number", "StringValue": "42"},
                  "j": {"DataType": "String.json", "StringValue": '{"a":1}'},
                  "b": {"DataType": "Binary", "BinaryValue": b"\x00\xff"}}
    sent = sqs.send_message(QueueUrl=url, MessageBody="héllo", MessageAttributes=attributes,
                            MessageSystemAttributes={"AWSTraceHeader": {
                                "DataType": "String", "StringValue": "Root=1-abc"}})
    assert sent["MD5OfMessageBody"] == hashlib.md5("héllo".encode()).hexdigest()
    # Computed independently by moto 5 (the AWS SDKs' algorithm) for the first three attributes.
    assert len(sent["MD5OfMessageAttributes"]) == 32
    assert sent["MD5OfMessageSystemAttributes"]
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"],
                              MessageSystemAttributeNames=["All"], WaitTimeSeconds=1)
    (message,) = got["Messages"]
    assert message["Body"] == "héllo"
    assert message["MessageId"] == sent["MessageId"]
    assert message["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert message["MessageAttributes"] == {
        k: {key: v for key, v in value.items()} for k, value in attributes.items()}
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    system = message["Attributes"]
    assert system["ApproximateReceiveCount"] == "1"
    assert system["AWSTraceHeader"] == "Root=1-abc"
    assert abs(int(system["SentTimestamp"]) - time.time() * 1000) < 60_000
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_md5_of_known_attributes(sqs):
    url = sqs.create_queue(QueueName="md5")["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello", MessageAttributes={
        "a": {"DataType": "String", "StringValue": "x"},
        "n": {"DataType": "Number", "StringValue": "1.50"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    # The same attributes hashed by moto 5's implementation of AWS's algorithm.
    assert sent["MD5OfMessageAttributes"] == "bfde9312aee8985023f197d4215e6456"


def test_attribute_selection(sqs):
    url = sqs.create_queue(QueueName="select")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={
        "order.id": {"DataType": "String", "StringValue": "1"},
        "order.kind": {"DataType": "String", "StringValue": "x"},
        "other": {"DataType": "String", "StringValue": "y"}})
    (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["order.*"],
                                     AttributeNames=["SentTimestamp"])["Messages"]
    assert set(message["MessageAttributes"]) == {"order.id", "order.kind"}
    assert set(message["Attributes"]) == {"SentTimestamp"}


def test_visibility_timeout_and_change(sqs):
    url = sqs.create_queue(QueueName="vis")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    # 3 s: the check that it is invisible must come before the timeout, on a loaded machine too
    (first,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=3)["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20, AttributeNames=["All"])
    (second,) = again["Messages"]
    assert second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"],
                                  VisibilityTimeout=0)
    (third,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)["Messages"]
    with pytest.raises(sqs.exceptions.MessageNotInflight):
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"],
                                      VisibilityTimeout=10)
    result = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "ok", "ReceiptHandle": third["ReceiptHandle"], "VisibilityTimeout": 100},
        {"Id": "stale", "ReceiptHandle": first["ReceiptHandle"], "VisibilityTimeout": 100}])
    assert [e["Id"] for e in result["Successful"]] == ["ok"]
    assert result["Failed"][0]["Id"] == "stale"
    assert result["Failed"][0]["Code"] == "AWS.SimpleQueueService.MessageNotInflight"
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")


def test_batches_and_their_errors(sqs):
    url = sqs.create_queue(QueueName="batch")["QueueUrl"]
    result = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": f"m{i}", "MessageBody": f"body {i}"} for i in range(10)])
    assert len(result["Successful"]) == 10 and not result.get("Failed")
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": f"m{i}", "MessageBody": "x"} for i in range(11)])
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "x"},
                                                      {"Id": "a", "MessageBody": "y"}])
    with pytest.raises(sqs.exceptions.EmptyBatchRequest):
        sqs.delete_message_batch(QueueUrl=url, Entries=[])
    with pytest.raises(sqs.exceptions.InvalidBatchEntryId):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "bad id!", "MessageBody": "x"}])
    with pytest.raises(sqs.exceptions.BatchRequestTooLong):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": f"m{i}", "MessageBody": "x" * 200_000} for i in range(6)])
    partial = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "good", "MessageBody": "fine"},
        {"Id": "late", "MessageBody": "x", "DelaySeconds": 901}])
    assert [e["Id"] for e in partial["Successful"]] == ["good"]
    assert partial["Failed"][0]["Code"] == "InvalidParameterValue"
    assert partial["Failed"][0]["SenderFault"] is True
    received = []
    deadline = time.monotonic() + 10
    while len(received) < 11 and time.monotonic() < deadline:
        received += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert sorted(m["Body"] for m in received) == sorted([f"body {i}" for i in range(10)]
                                                          + ["fine"])
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received[:10])])
    assert len(deleted["Successful"]) == 10


def test_bad_input_gets_aws_errors_never_500(sqs):
    url = sqs.create_queue(QueueName="bad")["QueueUrl"]
    cases = [
        dict(MessageBody="x", DelaySeconds=901),
        dict(MessageBody="x" * (1024 * 1024 + 1)),
        dict(MessageBody="x", MessageAttributes={"AWS.reserved": {"DataType": "String",
                                                                  "StringValue": "v"}}),
        dict(MessageBody="x", MessageAttributes={"n": {"DataType": "Number",
                                                       "StringValue": "abc"}}),
        dict(MessageBody="x", MessageAttributes={"t": {"DataType": "Strange",
                                                       "StringValue": "v"}}),
        dict(MessageBody="x", MessageDeduplicationId="only-for-fifo"),
    ]
    for case in cases:
        with pytest.raises(ClientError) as err:
            sqs.send_message(QueueUrl=url, **case)
        assert err.value.response["Error"]["Code"] == "InvalidParameterValue", case
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(sqs.exceptions.InvalidMessageContents):
        sqs.send_message(QueueUrl=url, MessageBody="bad \x00 char")
    with pytest.raises(ClientError) as err:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as err:
        sqs.receive_message(QueueUrl=url, WaitTimeSeconds=21)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_largest_message_is_accepted(sqs):
    url = sqs.create_queue(QueueName="big")["QueueUrl"]
    body = "y" * (1024 * 1024)
    sqs.send_message(QueueUrl=url, MessageBody=body)
    (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert message["Body"] == body


def test_delay_per_queue_and_per_message(sqs):
    # Delays of 3 s: the checks that a message is not there yet must come before they end,
    # on a loaded machine too.
    url = sqs.create_queue(QueueName="delayed", Attributes={"DelaySeconds": "3"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="queue-delay")
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"
    (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)["Messages"]
    assert message["Body"] == "queue-delay"
    url2 = sqs.create_queue(QueueName="undelayed")["QueueUrl"]
    sqs.send_message(QueueUrl=url2, MessageBody="late", DelaySeconds=3)
    sqs.send_message(QueueUrl=url2, MessageBody="now")
    (first,) = sqs.receive_message(QueueUrl=url2)["Messages"]
    assert first["Body"] == "now"
    (second,) = sqs.receive_message(QueueUrl=url2, WaitTimeSeconds=20)["Messages"]
    assert second["Body"] == "late"


def test_long_poll_returns_when_a_message_arrives(sqs, running_broker):
    import threading
    url = sqs.create_queue(QueueName="poll")["QueueUrl"]
    other = sqs_client(running_broker)
    timer = threading.Timer(0.5, lambda: other.send_message(QueueUrl=url, MessageBody="late"))
    started = time.monotonic()
    timer.start()
    try:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)
    finally:
        timer.join(30)
    assert got["Messages"][0]["Body"] == "late"
    assert time.monotonic() - started < 19  # answered on arrival, not at the end of the wait
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert time.monotonic() - started >= 0.9  # an empty long poll waits its time


def test_many_long_polls_share_the_loop(sqs, running_broker):
    """Ten concurrent 20 s long polls on one queue: each message wakes one of them, and a plain
    request is served meanwhile (the polls do not block the event loop)."""
    from concurrent.futures import ThreadPoolExecutor
    url = sqs.create_queue(QueueName="polls")["QueueUrl"]
    clients = [sqs_client(running_broker) for _ in range(10)]
    with ThreadPoolExecutor(10) as pool:
        polls = [pool.submit(c.receive_message, QueueUrl=url, WaitTimeSeconds=20)
                 for c in clients]
        waiting = running_broker.broker.vhosts["/"].queues["polls"]._ready_listeners
        deadline = time.monotonic() + 30
        while running_broker.call(lambda: len(waiting)) < 10:  # every poll is waiting
            assert time.monotonic() < deadline, "the long polls did not all arrive"
            time.sleep(0.05)
        sqs.list_queues()  # answered while the ten polls wait
        assert not any(p.done() for p in polls)
        for i in range(10):  # one message for each poll (at most one each)
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
        results = [p.result(30) for p in polls]
    bodies = sorted(m["Body"] for r in results for m in r.get("Messages", []))
    assert bodies == sorted(f"m{i}" for i in range(10))


def test_purge(sqs):
    url = sqs.create_queue(QueueName="purge")["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    sqs.purge_queue(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=url)


def test_purge_also_drops_in_flight_and_delayed_messages(sqs):
    # AWS: PurgeQueue deletes every message, received (in flight) and delayed ones included.
    url = sqs.create_queue(QueueName="purge-all")["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=30)
    assert len(received["Messages"]) == 2
    counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
              "ApproximateNumberOfMessagesDelayed"]
    before = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=counts)["Attributes"]
    assert [before[c] for c in counts] == ["1", "2", "1"]
    sqs.purge_queue(QueueUrl=url)
    after = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=counts)["Attributes"]
    assert [after[c] for c in counts] == ["0", "0", "0"]
    # a purged in-flight message has no lease left to give up, and nothing comes back
    with pytest.raises(sqs.exceptions.MessageNotInflight):
        sqs.change_message_visibility(QueueUrl=url, VisibilityTimeout=0,
                                      ReceiptHandle=received["Messages"][0]["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)


def test_retention_deletes_expired_messages(sqs, running_broker):
    url = sqs.create_queue(QueueName="short",
                           Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    # 60 s is the shortest period SQS allows; shorten it in the core to keep the test quick.
    vhost = running_broker.broker.vhosts["/"]
    policy = running_broker.call(lambda: dict(vhost.queues["short"].policy))
    running_broker.call(lambda: vhost.set_queue_policy("short", {**policy, "x-message-ttl": 1}))
    sqs.send_message(QueueUrl=url, MessageBody="expires")
    time.sleep(0.2)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_sends_wait_while_a_resource_alarm_blocks_publishers(make_broker):
    from concurrent.futures import ThreadPoolExecutor
    running_broker = make_broker(server={"disk_free_limit_bytes": 0})  # no periodic disk check
    sqs = sqs_client(running_broker)
    url = sqs.create_queue(QueueName="alarm")["QueueUrl"]
    memory = running_broker.broker.memory
    running_broker.call(lambda: memory.set_disk_alarm(True))
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(sqs.send_message, QueueUrl=url, MessageBody="held")
            time.sleep(0.5)
            assert not pending.done()  # held, like an AMQP publisher's blocked connection
            running_broker.call(lambda: memory.set_disk_alarm(False))
            assert pending.result(30)["MessageId"]
    finally:
        running_broker.call(lambda: memory.set_disk_alarm(False))
    (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert message["Body"] == "held"


def test_queue_defaults_for_wait_and_visibility(sqs):
    url = sqs.create_queue(QueueName="defaults", Attributes={
        "ReceiveMessageWaitTimeSeconds": "1", "VisibilityTimeout": "1"})["QueueUrl"]
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # long poll by default
    assert time.monotonic() - started >= 0.9
    sqs.send_message(QueueUrl=url, MessageBody="m")
    (first,) = sqs.receive_message(QueueUrl=url)["Messages"]
    started = time.monotonic()
    (again,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)["Messages"]
    assert again["MessageId"] == first["MessageId"]  # back after the queue's 1 s visibility
    assert 0.5 < time.monotonic() - started < 19  # (not the 30 s default)


def test_boto3_resource_api(running_broker):
    import boto3
    sqs = boto3.resource("sqs", endpoint_url=f"http://127.0.0.1:{running_broker.ports['http']}",
                         region_name="us-east-1", aws_access_key_id="guest",
                         aws_secret_access_key="guest")
    queue = sqs.create_queue(QueueName="resource")
    queue.send_messages(Entries=[{"Id": str(i), "MessageBody": f"r{i}"} for i in range(3)])
    assert queue.attributes["ApproximateNumberOfMessages"] == "3"
    messages = queue.receive_messages(MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert sorted(m.body for m in messages) == ["r0", "r1", "r2"]
    for message in messages:
        message.delete()
    assert [q.url for q in sqs.queues.filter(QueueNamePrefix="res")] == [queue.url]
    queue.delete()
    assert list(sqs.queues.filter(QueueNamePrefix="res")) == []
