"""What SNS Publish, Kinesis PutRecords and Firehose PutRecord answered survives `kill -9` of a
real daemon: every subscriber gets each published message, every record is readable, every
buffered Firehose record reaches S3."""
import signal
import time

import pytest

from tests.integration.aws_helpers import aws_client, wait_for
from tests.persistence.test_sqs_kill9 import start_daemon, stop_daemon

pytestmark = pytest.mark.timeout(300)  # a hang fails; a loaded machine is only slow


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_answered_publishes_records_and_buffers_survive_sigkill(tmp_path, monkeypatch):
    # an ephemeral WebSocket port: the default 15675 may be taken by another broker on the host
    monkeypatch.setenv("MANIFOLD_WEBSOCKET_PORT", "0")
    proc, daemon = start_daemon(tmp_path)
    published, kinesis_seqs = [], []
    try:
        sns, sqs = aws_client(daemon, "sns"), aws_client(daemon, "sqs")
        kinesis, firehose = aws_client(daemon, "kinesis"), aws_client(daemon, "firehose")
        s3 = aws_client(daemon, "s3")
        for i in range(3):
            sqs.create_queue(QueueName=f"sub{i}")
        topic = sns.create_topic(Name="durable")["TopicArn"]
        for i in range(3):
            sns.subscribe(TopicArn=topic, Protocol="sqs",
                          Endpoint=f"arn:aws:sqs:us-east-1:000000000000:sub{i}",
                          Attributes={"RawMessageDelivery": "true"})
        kinesis.create_stream(StreamName="log", ShardCount=2)
        s3.create_bucket(Bucket="sink")
        firehose.create_delivery_stream(
            DeliveryStreamName="buffered", ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::000000000000:role/r", "BucketARN": "arn:aws:s3:::sink",
                "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 3}})
        for i in range(50):
            sns.publish(TopicArn=topic, Message=f"m{i}")
            published.append(f"m{i}")
        result = kinesis.put_records(StreamName="log", Records=[
            {"Data": b"r%d" % i, "PartitionKey": f"k{i}"} for i in range(100)])
        kinesis_seqs = [(r["ShardId"], r["SequenceNumber"]) for r in result["Records"]]
        firehose.put_record_batch(DeliveryStreamName="buffered",
                                  Records=[{"Data": b"f%d\n" % i} for i in range(20)])
    finally:
        kill(proc)

    proc, daemon = start_daemon(tmp_path)
    try:
        sqs, kinesis = aws_client(daemon, "sqs"), aws_client(daemon, "kinesis")
        s3 = aws_client(daemon, "s3")
        for i in range(3):
            url = sqs.get_queue_url(QueueName=f"sub{i}")["QueueUrl"]
            got = set()
            deadline = time.monotonic() + 30
            while got != set(published) and time.monotonic() < deadline:
                for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=1).get("Messages", []):
                    got.add(m["Body"])
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            assert got == set(published), f"sub{i} lost {set(published) - got}"
        found = set()
        for shard in {s for s, _ in kinesis_seqs}:
            it = kinesis.get_shard_iterator(StreamName="log", ShardId=shard,
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for r in kinesis.get_records(ShardIterator=it)["Records"]:
                found.add((shard, r["SequenceNumber"]))
        assert set(kinesis_seqs) <= found

        def delivered():
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="sink").get("Contents", [])]
            data = b"".join(s3.get_object(Bucket="sink", Key=k)["Body"].read() for k in keys)
            return set(data.split()) >= {b"f%d" % i for i in range(20)}

        wait_for(delivered, timeout=30)
    finally:
        stop_daemon(proc)
