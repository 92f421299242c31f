"""SNS, Kinesis and Firehose under SigV4 and RabbitMQ-style permissions: configure/write/read on
the topic's exchange, the stream's name, the delivery stream's queue; the SNS links a subscriber
follows work unsigned, a bad signature on them does not."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from .aws_helpers import wait_for
from .sns_endpoints import HttpEndpoint
from .test_sigv4 import ACCESS


def client(rb, service, key_id, secret):
    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{rb.ports['http']}",
                        region_name="us-east-1", aws_access_key_id=key_id,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


def denied(call) -> bool:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return info.value.response["Error"]["Code"] == "AccessDenied"


def test_permissions_and_unsigned_links(make_broker):
    broker = make_broker(**ACCESS)
    app = {s: client(broker, s, "AKIAAPP", "app-secret") for s in ("sns", "kinesis", "firehose")}
    reader = {s: client(broker, s, "AKIAREADER", "reader-secret")
              for s in ("sns", "kinesis", "firehose")}
    topic = app["sns"].create_topic(Name="app-topic")["TopicArn"]
    assert denied(lambda: app["sns"].create_topic(Name="other"))
    assert denied(lambda: reader["sns"].publish(TopicArn=topic, Message="x"))
    app["sns"].publish(TopicArn=topic, Message="x")
    # subscribing a queue means writing to it: app may write only app-* queues
    assert denied(lambda: app["sns"].subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:000000000000:other"))
    assert denied(lambda: app["sns"].subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:000000000000:app-q",
        Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:other-dlq"})}))
    app["sns"].subscribe(TopicArn=topic, Protocol="sqs",
                         Endpoint="arn:aws:sqs:us-east-1:000000000000:app-q")
    app["kinesis"].create_stream(StreamName="app-s", ShardCount=1)
    assert denied(lambda: app["kinesis"].create_stream(StreamName="other", ShardCount=1))
    assert denied(lambda: reader["kinesis"].put_record(StreamName="app-s", Data=b"x",
                                                       PartitionKey="k"))
    app["kinesis"].put_record(StreamName="app-s", Data=b"x", PartitionKey="k")
    it = reader["kinesis"].get_shard_iterator(StreamName="app-s", ShardId="shardId-000000000000",
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert reader["kinesis"].get_records(ShardIterator=it)["Records"][0]["Data"] == b"x"
    # firehose.NAME is the queue the permission names; app may configure only app-*
    assert denied(lambda: app["firehose"].create_delivery_stream(
        DeliveryStreamName="app-f", ExtendedS3DestinationConfiguration={
            "RoleARN": "r", "BucketARN": "arn:aws:s3:::b"}))
    endpoint = HttpEndpoint()
    try:
        app["sns"].subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url)
        (_, body), = wait_for(lambda: endpoint.of_type("SubscriptionConfirmation"))
        url = json.loads(body)["SubscribeURL"]
        # a forged signature on the link is checked and refused; the plain GET confirms
        forged = urllib.request.Request(url, headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAAPP/20260101/us-east-1/sns/"
                             "aws4_request, SignedHeaders=host, Signature=00"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(forged, timeout=5)
        assert err.value.code == 403
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    finally:
        endpoint.close()
