"""SNS over the query protocol with unmodified boto3 clients: topics, subscriptions to SQS
(envelope and raw), filter policies, Publish/PublishBatch, FIFO topics, and the topic as an AMQP
exchange."""
from __future__ import annotations

import json
import time

import pika
import pytest
from botocore.exceptions import ClientError

from .aws_helpers import aws_client

ACCOUNT = "000000000000"


@pytest.fixture
def sns(running_broker):
    return aws_client(running_broker, "sns")


@pytest.fixture
def sqs(running_broker):
    return aws_client(running_broker, "sqs")


def queue(sqs, name, **attributes):
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"


def receive_all(sqs, url, expected, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     MessageAttributeNames=["All"]).get("Messages", []):
            got.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


def test_topics_attributes_tags(sns):
    arn = sns.create_topic(Name="orders", Attributes={"DisplayName": "Orders"},
                           Tags=[{"Key": "team", "Value": "a"}])["TopicArn"]
    assert arn == f"arn:aws:sns:us-east-1:{ACCOUNT}:orders"
    assert sns.create_topic(Name="orders")["TopicArn"] == arn  # idempotent
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.create_topic(Name="orders", Attributes={"DisplayName": "Other"})
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.create_topic(Name="bad name")
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.create_topic(Name="nofifo.fifo")
    attrs = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attrs["DisplayName"] == "Orders" and attrs["TopicArn"] == arn
    assert attrs["SubscriptionsConfirmed"] == "0"
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DisplayName", AttributeValue="New")
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["DisplayName"] == "New"
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.set_topic_attributes(TopicArn=arn, AttributeName="Bogus", AttributeValue="x")
    sns.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "dev"}])
    sns.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert sns.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "env",
                                                                    "Value": "dev"}]
    fifo = sns.create_topic(Name="o.fifo", Attributes={"FifoTopic": "true",
                                                        "ContentBasedDeduplication": "true"})
    assert [t["TopicArn"] for t in sns.list_topics()["Topics"]] == [fifo["TopicArn"], arn]
    sns.delete_topic(TopicArn=arn)
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.get_topic_attributes(TopicArn=arn)


def test_sqs_subscription_envelope_and_raw(sns, sqs):
    topic = sns.create_topic(Name="news")["TopicArn"]
    env_url, env_arn = queue(sqs, "env")
    raw_url, raw_arn = queue(sqs, "raw")
    env_sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=env_arn)["SubscriptionArn"]
    raw_sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=raw_arn,
                            Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]
    assert env_sub.startswith(topic + ":")
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert sorted(s["Endpoint"] for s in listed) == sorted([env_arn, raw_arn])
    attrs = sns.get_subscription_attributes(SubscriptionArn=raw_sub)["Attributes"]
    assert attrs["RawMessageDelivery"] == "true" and attrs["PendingConfirmation"] == "false"
    published = sns.publish(TopicArn=topic, Message="hello", Subject="greeting",
                            MessageAttributes={
                                "color": {"DataType": "String", "StringValue": "red"},
                                "size": {"DataType": "Number", "StringValue": "42"},
                                "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    (env,) = receive_all(sqs, env_url, 1)
    envelope = json.loads(env["Body"])
    assert envelope["Type"] == "Notification" and envelope["Message"] == "hello"
    assert envelope["MessageId"] == published["MessageId"]
    assert envelope["Subject"] == "greeting" and envelope["TopicArn"] == topic
    assert envelope["MessageAttributes"]["color"] == {"Type": "String", "Value": "red"}
    assert envelope["MessageAttributes"]["size"] == {"Type": "Number", "Value": "42"}
    assert envelope["MessageAttributes"]["blob"] == {"Type": "Binary", "Value": "AAE="}
    assert envelope["SignatureVersion"] == "1" and envelope["Signature"]
    assert "MessageAttributes" not in env
    (raw,) = receive_all(sqs, raw_url, 1)
    assert raw["Body"] == "hello"
    assert raw["MessageAttributes"]["color"] == {"DataType": "String", "StringValue": "red"}
    assert raw["MessageAttributes"]["size"] == {"DataType": "Number", "StringValue": "42"}
    assert raw["MessageAttributes"]["blob"] == {"DataType": "Binary", "BinaryValue": b"\x00\x01"}
    sns.unsubscribe(SubscriptionArn=raw_sub)
    sns.publish(TopicArn=topic, Message="second")
    assert json.loads(receive_all(sqs, env_url, 1)[0]["Body"])["Message"] == "second"
    assert receive_all(sqs, raw_url, 1, timeout=1.5) == []
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.get_subscription_attributes(SubscriptionArn=raw_sub)


def test_message_structure_json_and_validation(sns, sqs):
    topic = sns.create_topic(Name="structured")["TopicArn"]
    url, arn = queue(sqs, "s")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    sns.publish(TopicArn=topic, MessageStructure="json",
                Message=json.dumps({"default": "d", "sqs": "for sqs", "email": "e"}))
    assert receive_all(sqs, url, 1)[0]["Body"] == "for sqs"
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.publish(TopicArn=topic, MessageStructure="json", Message=json.dumps({"sqs": "x"}))
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.publish(TopicArn=topic, Message="x", Subject="a\nb")
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.publish(TopicArn=topic, Message="x" * (256 * 1024 + 1))
    with pytest.raises(ClientError) as err:
        sns.publish(TopicArn=topic, Message="x", MessageAttributes={
            "n": {"DataType": "Number", "StringValue": "abc"}})
    assert err.value.response["Error"]["Code"] == "ParameterValueInvalid"
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.publish(TopicArn=f"arn:aws:sns:us-east-1:{ACCOUNT}:missing", Message="x")


FILTER_CASES = [
    ({"color": ["red", "blue"]}, {"color": ("String", "red")}, True),
    ({"color": ["red"]}, {"color": ("String", "green")}, False),
    ({"color": [{"prefix": "gr"}]}, {"color": ("String", "green")}, True),
    ({"color": [{"suffix": "en"}]}, {"color": ("String", "green")}, True),
    ({"color": [{"anything-but": ["red", "blue"]}]}, {"color": ("String", "green")}, True),
    ({"color": [{"anything-but": "green"}]}, {"color": ("String", "green")}, False),
    ({"color": [{"anything-but": {"prefix": "gr"}}]}, {"color": ("String", "green")}, False),
    ({"price": [{"numeric": [">", 10, "<=", 20]}]}, {"price": ("Number", "15")}, True),
    ({"price": [{"numeric": [">", 10, "<=", 20]}]}, {"price": ("Number", "25")}, False),
    ({"price": [{"numeric": ["=", 5]}]}, {"price": ("Number", "5.0")}, True),
    ({"price": [5]}, {"price": ("Number", "5")}, True),
    ({"color": [{"exists": True}]}, {"other": ("String", "x")}, False),
    ({"color": [{"exists": False}]}, {"other": ("String", "x")}, True),
    ({"tags": ["b"]}, {"tags": ("String.Array", '["a", "b"]')}, True),
    ({"tags": ["c"]}, {"tags": ("String.Array", '["a", "b"]')}, False),
    ({"color": ["red"], "size": ["big"]}, {"color": ("String", "red")}, False),
    ({"$or": [{"color": ["red"]}, {"size": ["big"]}]}, {"size": ("String", "big")}, True),
    ({"color": [{"equals-ignore-case": "RED"}]}, {"color": ("String", "red")}, True),
]


def test_filter_policies_on_attributes(sns, sqs):
    topic = sns.create_topic(Name="filtered")["TopicArn"]
    subs = []
    for i, (policy, _, _) in enumerate(FILTER_CASES):
        url, arn = queue(sqs, f"f{i}")
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                      Attributes={"RawMessageDelivery": "true",
                                  "FilterPolicy": json.dumps(policy)})
        subs.append(url)
    for i, (_, attributes, _) in enumerate(FILTER_CASES):
        sns.publish(TopicArn=topic, Message=f"m{i}", MessageAttributes={
            k: {"DataType": t, "StringValue": v} for k, (t, v) in attributes.items()})
    time.sleep(1.0)
    for i, (policy, attributes, expected) in enumerate(FILTER_CASES):
        bodies = [m["Body"] for m in receive_all(sqs, subs[i], 30, timeout=0.5)]
        assert (f"m{i}" in bodies) == expected, (policy, attributes, bodies)


def test_filter_policy_on_the_body_and_validation(sns, sqs):
    topic = sns.create_topic(Name="bodies")["TopicArn"]
    url, arn = queue(sqs, "b")
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={
        "RawMessageDelivery": "true", "FilterPolicyScope": "MessageBody",
        "FilterPolicy": json.dumps({"order": {"kind": ["book"], "total": [{"numeric": [">=", 10]}]}})
    })["SubscriptionArn"]
    sns.publish(TopicArn=topic, Message=json.dumps({"order": {"kind": "book", "total": 12}}))
    sns.publish(TopicArn=topic, Message=json.dumps({"order": {"kind": "pen", "total": 12}}))
    sns.publish(TopicArn=topic, Message="not json")
    assert [json.loads(m["Body"])["order"]["kind"] for m in receive_all(sqs, url, 1)] == ["book"]
    assert receive_all(sqs, url, 1, timeout=1.0) == []
    bad = ["not json", json.dumps({"a": "b"}), json.dumps({"a": [{"bogus": 1}]}),
           json.dumps({"a": [{"numeric": ["<", "x"]}]}), json.dumps({"a": [{"exists": "yes"}]}),
           json.dumps({f"k{i}": ["v"] for i in range(6)}),
           json.dumps({"a": [{"numeric": [">", 5, "<", 1]}]})]
    for policy in bad:
        with pytest.raises(sns.exceptions.InvalidParameterException) as err:
            sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy",
                                            AttributeValue=policy)
        assert "FilterPolicy" in err.value.response["Error"]["Message"]
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn.replace(":b", ":x"),
                      Attributes={"FilterPolicy": json.dumps({"a": {"b": ["c"]}})})


def test_publish_batch(sns, sqs):
    topic = sns.create_topic(Name="batch")["TopicArn"]
    url, arn = queue(sqs, "batchq")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    result = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": f"e{i}", "Message": f"b{i}", "MessageAttributes": {
            "i": {"DataType": "Number", "StringValue": str(i)}}} for i in range(10)])
    assert sorted(s["Id"] for s in result["Successful"]) == [f"e{i}" for i in range(10)]
    assert result["Failed"] == []
    got = receive_all(sqs, url, 10)
    assert sorted(m["Body"] for m in got) == sorted(f"b{i}" for i in range(10))
    with pytest.raises(sns.exceptions.TooManyEntriesInBatchRequestException):
        sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
            {"Id": f"e{i}", "Message": "x"} for i in range(11)])
    with pytest.raises(sns.exceptions.BatchEntryIdsNotDistinctException):
        sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
            {"Id": "same", "Message": "x"}, {"Id": "same", "Message": "y"}])
    mixed = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": "ok", "Message": "fine"}, {"Id": "bad", "Message": "x", "Subject": "a\nb"}])
    assert [f["Id"] for f in mixed["Failed"]] == ["bad"]


def test_fifo_topic_to_fifo_queue_keeps_group_order_and_dedups(sns, sqs):
    topic = sns.create_topic(Name="t.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    url, arn = queue(sqs, "q.fifo", FifoQueue="true")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.publish(TopicArn=topic, Message="no group", MessageDeduplicationId="d")
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.publish(TopicArn=topic, Message="no dedup", MessageGroupId="g")
    first = sns.publish(TopicArn=topic, Message="m0", MessageGroupId="g",
                        MessageDeduplicationId="d0")
    again = sns.publish(TopicArn=topic, Message="m0", MessageGroupId="g",
                        MessageDeduplicationId="d0")
    assert again["MessageId"] == first["MessageId"] and first["SequenceNumber"]
    for i in range(1, 6):
        sns.publish(TopicArn=topic, Message=f"m{i}", MessageGroupId="g",
                    MessageDeduplicationId=f"d{i}")
    bodies = [m["Body"] for m in receive_all(sqs, url, 6)]
    assert bodies == [f"m{i}" for i in range(6)]
    std_url, std_arn = queue(sqs, "std.fifo", FifoQueue="true")
    plain = sns.create_topic(Name="plain")["TopicArn"]
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.subscribe(TopicArn=plain, Protocol="sqs", Endpoint=std_arn)


def test_topic_is_an_amqp_exchange_both_ways(running_broker, sns, sqs):
    topic = sns.create_topic(Name="events")["TopicArn"]
    url, arn = queue(sqs, "fromamqp")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", running_broker.ports["amqp"], blocked_connection_timeout=10))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "events", "#")
        sns.publish(TopicArn=topic, Message="from sns", MessageAttributes={
            "color": {"DataType": "String", "StringValue": "red"},
            "n": {"DataType": "Number", "StringValue": "7"}})
        got = None
        deadline = time.monotonic() + 5
        while got is None and time.monotonic() < deadline:
            method, props, body = ch.basic_get(q, auto_ack=True)
            if method is not None:
                got = (props.headers, body)
        headers, body = got
        assert body == b"from sns"
        assert headers["color"] == "red" and headers["n"] == 7
        ch.basic_publish("events", "anything.here", b"from amqp",
                         pika.BasicProperties(headers={"origin": "amqp"}, delivery_mode=2))
    finally:
        conn.close()
    bodies = {m["Body"]: m for m in receive_all(sqs, url, 2)}
    assert set(bodies) == {"from sns", "from amqp"}
    assert bodies["from amqp"]["MessageAttributes"]["origin"]["StringValue"] == "amqp"
