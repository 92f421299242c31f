"""Wrong shapes in every field of every Kinesis, Firehose and SNS operation get an AWS error
(4xx with the protocol's error body), never a 500. Requests are SigV4-signed with botocore's own
signer, so they reach the handlers."""
from __future__ import annotations

import json

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .aws_helpers import aws_client

WRONG = [None, 7, -1, "", "x" * 300, [], {}, [1, "a"], {"a": 1}, True, "\ud800"]

KINESIS = {
    "CreateStream": {"StreamName": "fz", "ShardCount": 1},
    "DescribeStream": {"StreamName": "fz"}, "DescribeStreamSummary": {"StreamName": "fz"},
    "ListShards": {"StreamName": "fz", "MaxResults": 5}, "ListStreams": {"Limit": 5},
    "PutRecord": {"StreamName": "fz", "Data": "eA==", "PartitionKey": "k",
                  "ExplicitHashKey": "5"},
    "PutRecords": {"StreamName": "fz", "Records": [{"Data": "eA==", "PartitionKey": "k"}]},
    "GetShardIterator": {"StreamName": "fz", "ShardId": "shardId-000000000000",
                         "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                         "StartingSequenceNumber": "1", "Timestamp": 1},
    "GetRecords": {"ShardIterator": "abc", "Limit": 5},
    "SplitShard": {"StreamName": "fz", "ShardToSplit": "shardId-000000000000",
                   "NewStartingHashKey": "5"},
    "MergeShards": {"StreamName": "fz", "ShardToMerge": "a", "AdjacentShardToMerge": "b"},
    "UpdateShardCount": {"StreamName": "fz", "TargetShardCount": 2},
    "IncreaseStreamRetentionPeriod": {"StreamName": "fz", "RetentionPeriodHours": 48},
    "AddTagsToStream": {"StreamName": "fz", "Tags": {"a": "b"}},
    "RemoveTagsFromStream": {"StreamName": "fz", "TagKeys": ["a"]},
    "ListTagsForStream": {"StreamName": "fz", "Limit": 3},
    "RegisterStreamConsumer": {"StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/fz",
                               "ConsumerName": "c"},
    "DescribeStreamConsumer": {"ConsumerARN": "x", "StreamARN": "y", "ConsumerName": "c"},
}
FIREHOSE = {
    "CreateDeliveryStream": {"DeliveryStreamName": "fz", "DeliveryStreamType": "DirectPut",
                             "ExtendedS3DestinationConfiguration": {
                                 "BucketARN": "arn:aws:s3:::b", "Prefix": "p",
                                 "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
                                 "CompressionFormat": "GZIP",
                                 "ProcessingConfiguration": {"Enabled": True, "Processors": [
                                     {"Type": "AppendDelimiterToRecord", "Parameters": [
                                         {"ParameterName": "Delimiter",
                                          "ParameterValue": "\\n"}]}]}},
                             "Tags": [{"Key": "a", "Value": "b"}]},
    "DescribeDeliveryStream": {"DeliveryStreamName": "fz"},
    "ListDeliveryStreams": {"Limit": 3, "DeliveryStreamType": "DirectPut"},
    "PutRecord": {"DeliveryStreamName": "fz", "Record": {"Data": "eA=="}},
    "PutRecordBatch": {"DeliveryStreamName": "fz", "Records": [{"Data": "eA=="}]},
    "TagDeliveryStream": {"DeliveryStreamName": "fz", "Tags": [{"Key": "a", "Value": "b"}]},
}


def variants(template: dict):
    """The template, then each field (and each nested field) replaced by each wrong value."""
    yield template
    for key, value in template.items():
        for wrong in WRONG:
            yield {**template, key: wrong}
        if isinstance(value, dict):
            for inner in variants(value):
                yield {**template, key: inner}
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for inner in variants(value[0]):
                yield {**template, key: [inner]}


def signed(port: int, service: str, body: bytes, headers: dict) -> requests.PreparedRequest:
    request = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/", data=body,
                         headers=headers)
    SigV4Auth(Credentials("guest", "guest"), service, "us-east-1").add_auth(request)
    return requests.Request("POST", request.url, data=body,
                            headers=dict(request.headers.items())).prepare()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("service,prefix,operations", [
    ("kinesis", "Kinesis_20131202", KINESIS), ("firehose", "Firehose_20150804", FIREHOSE)])
def test_json_services_never_give_500(running_broker, service, prefix, operations):
    aws_client(running_broker, "kinesis").create_stream(StreamName="fz", ShardCount=1)
    session = requests.Session()
    port = running_broker.ports["http"]
    statuses = set()
    for operation, template in operations.items():
        for params in variants(template):
            body = json.dumps(params).encode("utf-8", "surrogatepass")
            prepared = signed(port, service, body, {
                "X-Amz-Target": f"{prefix}.{operation}",
                "Content-Type": "application/x-amz-json-1.1"})
            response = session.send(prepared, timeout=30)
            assert response.status_code < 500, (operation, params, response.text)
            if response.status_code >= 400:
                assert "__type" in response.json(), (operation, params, response.text)
            statuses.add(response.status_code)
    assert 200 in statuses and 400 in statuses


SNS = {
    "CreateTopic": {"Name": "fz", "Attributes.entry.1.key": "DisplayName",
                    "Attributes.entry.1.value": "d"},
    "Publish": {"TopicArn": "arn:aws:sns:us-east-1:000000000000:fz", "Message": "m",
                "Subject": "s", "MessageStructure": "json",
                "MessageAttributes.entry.1.Name": "a",
                "MessageAttributes.entry.1.Value.DataType": "Number",
                "MessageAttributes.entry.1.Value.StringValue": "1"},
    "PublishBatch": {"TopicArn": "arn:aws:sns:us-east-1:000000000000:fz",
                     "PublishBatchRequestEntries.member.1.Id": "a",
                     "PublishBatchRequestEntries.member.1.Message": "m"},
    "Subscribe": {"TopicArn": "arn:aws:sns:us-east-1:000000000000:fz", "Protocol": "sqs",
                  "Endpoint": "arn:aws:sqs:us-east-1:000000000000:q",
                  "Attributes.entry.1.key": "FilterPolicy",
                  "Attributes.entry.1.value": "{\"a\": [\"b\"]}"},
    "SetTopicAttributes": {"TopicArn": "arn:aws:sns:us-east-1:000000000000:fz",
                           "AttributeName": "DeliveryPolicy", "AttributeValue": "{}"},
    "ListTopics": {"NextToken": "0"},
    "ListSubscriptions": {"NextToken": "0"},
    "GetSubscriptionAttributes": {"SubscriptionArn": "arn:aws:sns:us-east-1:0:fz:x"},
    "TagResource": {"ResourceArn": "arn:aws:sns:us-east-1:000000000000:fz",
                    "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"},
}
SNS_WRONG = ["", "x" * 300, "{", "[]", "-1", "abc", "arn:aws:sns:::", "\u00e9"]


@pytest.mark.timeout(600)
def test_sns_query_never_gives_500(running_broker):
    session = requests.Session()
    port = running_broker.ports["http"]
    statuses = set()
    for operation, template in SNS.items():
        cases = [template] + [{**template, key: wrong} for key in template for wrong in SNS_WRONG]
        cases += [{k: v for k, v in template.items() if k != key} for key in template]
        for params in cases:
            body = "&".join(f"{k}={requests.utils.quote(v)}" for k, v in
                            {"Action": operation, "Version": "2010-03-31", **params}.items())
            prepared = signed(port, "sns", body.encode(), {
                "Content-Type": "application/x-www-form-urlencoded"})
            response = session.send(prepared, timeout=30)
            assert response.status_code < 500, (operation, params, response.text)
            if response.status_code >= 400:
                assert "<ErrorResponse>" in response.text, (operation, params, response.text)
            statuses.add(response.status_code)
    assert 200 in statuses and 400 in statuses
