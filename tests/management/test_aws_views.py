"""/api/manifold/{sqs/queues, sns/topics, kinesis/streams, firehose/streams}: what boto3 created,
as the management API shows it (served through broker.views, registered by the AWS adapter)."""
from __future__ import annotations

import json

from tests.integration.aws_helpers import aws_client

from .helpers import TIMEOUT_S, base_url, session

MAX_HASH = 2 ** 128 - 1


def view(broker, name: str, user: str = "guest", password: str = "guest"):
    return session(user, password).get(f"{base_url(broker)}/api/manifold/{name}",
                                       timeout=TIMEOUT_S)


def test_sqs_queues_view(running_broker):
    sqs = aws_client(running_broker, "sqs")
    dlq_url = sqs.create_queue(QueueName="orders-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url,
                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}
    url = sqs.create_queue(QueueName="orders", Attributes={
        "VisibilityTimeout": "45", "RedrivePolicy": json.dumps(redrive)})["QueueUrl"]
    fifo_url = sqs.create_queue(QueueName="tasks.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="first")
    sqs.send_message(QueueUrl=url, MessageBody="second")
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1,
                                   WaitTimeSeconds=1)["Messages"]) == 1

    resp = view(running_broker, "sqs/queues")
    assert resp.status_code == 200
    rows = {r["name"]: r for r in resp.json()}
    assert sorted(rows) == ["orders", "orders-dlq", "tasks.fifo"]
    orders = rows["orders"]
    assert orders["url"] == url and rows["tasks.fifo"]["url"] == fifo_url
    assert orders["arn"] == sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert rows["orders-dlq"]["arn"] == dlq_arn
    assert orders["visibility_timeout_s"] == 45
    assert orders["attributes"]["VisibilityTimeout"] == "45"
    assert orders["redrive_policy"]["deadLetterTargetArn"] == dlq_arn
    assert int(orders["redrive_policy"]["maxReceiveCount"]) == 3
    assert orders["fifo"] is False and rows["tasks.fifo"]["fifo"] is True
    assert rows["orders-dlq"]["redrive_policy"] is None
    assert orders["approximate_number_of_messages"] == 1
    assert orders["approximate_number_of_messages_not_visible"] == 1
    assert rows["tasks.fifo"]["approximate_number_of_messages"] == 0


def test_sns_topics_view(running_broker):
    sqs, sns = aws_client(running_broker, "sqs"), aws_client(running_broker, "sns")
    queue_url = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url,
                                         AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name="alerts", Attributes={"DisplayName": "Alerts"})["TopicArn"]
    policy = {"severity": ["high"]}
    sub_arn = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                            Attributes={"RawMessageDelivery": "true",
                                        "FilterPolicy": json.dumps(policy)},
                            ReturnSubscriptionArn=True)["SubscriptionArn"]
    # An HTTP endpoint nobody answers on stays pending confirmation.
    pending = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint="http://127.0.0.1:9/hook",
                            ReturnSubscriptionArn=True)["SubscriptionArn"]

    resp = view(running_broker, "sns/topics")
    assert resp.status_code == 200
    (row,) = resp.json()
    assert row["arn"] == topic and row["name"] == "alerts" and row["fifo"] is False
    assert row["attributes"]["DisplayName"] == "Alerts"
    assert row["subscriptions_confirmed"] == 1 and row["subscriptions_pending"] == 1
    subs = {s["arn"]: s for s in row["subscriptions"]}
    assert sorted(subs) == sorted([sub_arn, pending])
    sqs_sub = subs[sub_arn]
    assert sqs_sub["protocol"] == "sqs" and sqs_sub["endpoint"] == queue_arn
    assert sqs_sub["confirmed"] is True and sqs_sub["pending_confirmation"] is False
    assert sqs_sub["raw_message_delivery"] is True and sqs_sub["filter_policy"] == policy
    http_sub = subs[pending]
    assert http_sub["protocol"] == "http" and http_sub["endpoint"] == "http://127.0.0.1:9/hook"
    assert http_sub["confirmed"] is False and http_sub["pending_confirmation"] is True
    assert http_sub["raw_message_delivery"] is False and http_sub["filter_policy"] is None
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert {s["Endpoint"] for s in listed} == {s["endpoint"] for s in row["subscriptions"]}


def test_kinesis_streams_view_after_a_split(running_broker):
    kinesis = aws_client(running_broker, "kinesis")
    kinesis.create_stream(StreamName="clicks", ShardCount=2)
    kinesis.increase_stream_retention_period(StreamName="clicks", RetentionPeriodHours=48)
    # A record in shard 0 (hash key 0), so the closed shard has a last sequence number.
    kinesis.put_record(StreamName="clicks", Data=b"x", PartitionKey="p",
                       ExplicitHashKey="0")
    split_at = 2 ** 126
    kinesis.split_shard(StreamName="clicks", ShardToSplit="shardId-000000000000",
                        NewStartingHashKey=str(split_at))
    shards = {s["ShardId"]: s for s in kinesis.list_shards(StreamName="clicks")["Shards"]}

    resp = view(running_broker, "kinesis/streams")
    assert resp.status_code == 200
    (row,) = resp.json()
    assert row["name"] == "clicks" and row["status"] == "ACTIVE"
    assert row["retention_hours"] == 48 and row["open_shards"] == 3
    assert row["arn"] == kinesis.describe_stream_summary(
        StreamName="clicks")["StreamDescriptionSummary"]["StreamARN"]
    by_id = {s["id"]: s for s in row["shards"]}
    assert sorted(by_id) == sorted(shards) == [f"shardId-00000000000{i}" for i in range(4)]
    half = 2 ** 127
    expected = {"shardId-000000000000": ("0", str(half - 1), None, False),
                "shardId-000000000001": (str(half), str(MAX_HASH), None, True),
                "shardId-000000000002": ("0", str(split_at - 1), "shardId-000000000000", True),
                "shardId-000000000003": (str(split_at), str(half - 1), "shardId-000000000000",
                                         True)}
    for sid, (start, end, parent, is_open) in expected.items():
        shard = by_id[sid]
        assert shard["hash_key_range"] == {"starting": start, "ending": end}
        assert shard["parent"] == parent and shard["open"] is is_open
        assert shard["core_stream"] == f"clicks.{sid}"
        numbers = shards[sid]["SequenceNumberRange"]
        assert shard["starting_sequence_number"] == numbers["StartingSequenceNumber"]
        assert shard["ending_sequence_number"] == numbers.get("EndingSequenceNumber")
    assert by_id["shardId-000000000000"]["ending_sequence_number"] is not None


def test_firehose_streams_view(running_broker):
    s3, firehose = aws_client(running_broker, "s3"), aws_client(running_broker, "firehose")
    s3.create_bucket(Bucket="archive")
    firehose.create_delivery_stream(
        DeliveryStreamName="to-archive", DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "BucketARN": "arn:aws:s3:::archive", "RoleARN": "arn:aws:iam::000000000000:role/x",
            "Prefix": "logs/", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60}})
    resp = view(running_broker, "firehose/streams")
    assert resp.status_code == 200
    (row,) = resp.json()
    assert row["name"] == "to-archive" and row["type"] == "DirectPut"
    assert row["destination"] == "s3" and row["bucket"] == "archive" and row["prefix"] == "logs/"
    assert row["buffer_size_bytes"] == 1024 * 1024 and row["buffer_interval_s"] == 60
    assert row["arn"] == firehose.describe_delivery_stream(
        DeliveryStreamName="to-archive")["DeliveryStreamDescription"]["DeliveryStreamARN"]


def test_views_need_monitoring_or_administrator(running_broker):
    base, admin = base_url(running_broker), session()
    admin.put(base + "/api/users/manager", json={"password": "pw", "tags": "management"},
              timeout=TIMEOUT_S).raise_for_status()
    admin.put(base + "/api/permissions/%2F/manager",
              json={"configure": ".*", "write": ".*", "read": ".*"},
              timeout=TIMEOUT_S).raise_for_status()
    admin.put(base + "/api/users/watcher", json={"password": "pw", "tags": "monitoring"},
              timeout=TIMEOUT_S).raise_for_status()
    aws_client(running_broker, "sqs").create_queue(QueueName="visible")
    for name in ("sqs/queues", "sns/topics", "kinesis/streams", "firehose/streams"):
        refused = view(running_broker, name, "manager", "pw")
        assert refused.status_code == 403 and refused.json()["error"] == "not_authorised"
    # the same user reads RabbitMQ's queue list of its vhost: only the AWS views are refused
    assert session("manager", "pw").get(base + "/api/queues/%2F",
                                        timeout=TIMEOUT_S).status_code == 200
    watched = view(running_broker, "sqs/queues", "watcher", "pw")
    assert watched.status_code == 200 and [r["name"] for r in watched.json()] == ["visible"]


def test_unknown_view_is_404_json(running_broker):
    resp = view(running_broker, "nosuch/things")
    assert resp.status_code == 404
    assert resp.json()["error"] == "Object Not Found" and "sqs/queues" in resp.json()["reason"]
    # the routes of Manifold's own API that exist before the views still answer
    assert view(running_broker, "streams").status_code == 200


def test_views_accept_listing_parameters(running_broker):
    sqs = aws_client(running_broker, "sqs")
    for name in ("b-queue", "a-queue", "c-queue"):
        sqs.create_queue(QueueName=name)
    resp = session().get(base_url(running_broker) + "/api/manifold/sqs/queues",
                         params={"sort": "name", "sort_reverse": "true", "columns": "name,fifo"},
                         timeout=TIMEOUT_S)
    assert resp.json() == [{"name": n, "fifo": False} for n in ("c-queue", "b-queue", "a-queue")]


def test_cli_lists_the_aws_views(running_broker):
    from .test_cli import json_out, manifold
    sqs = aws_client(running_broker, "sqs")
    url = sqs.create_queue(QueueName="cli-q", Attributes={"VisibilityTimeout": "12"})["QueueUrl"]
    aws_client(running_broker, "kinesis").create_stream(StreamName="cli-s", ShardCount=3)
    queues = json_out(manifold(running_broker, "list", "sqs-queues", "-f", "json"))
    assert [(q["name"], q["url"], q["visibility_timeout_s"]) for q in queues] == [
        ("cli-q", url, 12)]
    table = manifold(running_broker, "list", "kinesis-streams")
    assert table.returncode == 0, table.stderr
    assert "cli-s" in table.stdout and "open shards" in table.stdout
    (row,) = [line.split() for line in table.stdout.splitlines() if "cli-s" in line]
    assert row[:3] == ["cli-s", "ACTIVE", "3"]


def test_views_are_404_without_the_aws_listener(make_broker):
    broker = make_broker(http={"enabled": False})
    resp = view(broker, "sqs/queues")
    assert resp.status_code == 404 and resp.json()["error"] == "Object Not Found"
    assert "AWS API listener" in resp.json()["reason"]
