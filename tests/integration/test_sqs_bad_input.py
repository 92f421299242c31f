"""Every SQS operation, every parameter replaced by values of the wrong type or shape: the answer
is always an AWS error (4xx with ``__type``), never a 500, and the broker keeps serving."""
from __future__ import annotations

import json

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .sqs_helpers import sqs_client


def signed_headers(url: str, body: bytes, headers: dict) -> dict:
    """The headers with a SigV4 signature (key guest/guest): every AWS request is verified."""
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials("guest", "guest"), "sqs", "us-east-1").add_auth(request)
    return dict(request.headers)

BAD_VALUES = [None, 1, -1, 2**70, 1.5, True, "", "x", "\ud800", [], [1], ["x"], {}, {"a": 1},
              {"a": {"b": []}}]
URL = "http://127.0.0.1/000000000000/fuzz"


def templates(handle):
    entry = {"Id": "a", "MessageBody": "m", "ReceiptHandle": handle, "VisibilityTimeout": 1}
    attribute = {"k": {"DataType": "String", "StringValue": "v"}}
    return {
        "CreateQueue": {"QueueName": "fuzz2", "Attributes": {"DelaySeconds": "1"},
                        "tags": {"a": "b"}},
        "GetQueueUrl": {"QueueName": "fuzz", "QueueOwnerAWSAccountId": "000000000000"},
        "ListQueues": {"QueueNamePrefix": "f", "MaxResults": 1, "NextToken": "eA=="},
        "GetQueueAttributes": {"QueueUrl": URL, "AttributeNames": ["All"]},
        "SetQueueAttributes": {"QueueUrl": URL, "Attributes": {"VisibilityTimeout": "5"}},
        "TagQueue": {"QueueUrl": URL, "Tags": {"a": "b"}},
        "UntagQueue": {"QueueUrl": URL, "TagKeys": ["a"]},
        "ListQueueTags": {"QueueUrl": URL},
        "AddPermission": {"QueueUrl": URL, "Label": "l", "AWSAccountIds": ["1"],
                          "Actions": ["SendMessage"]},
        "RemovePermission": {"QueueUrl": URL, "Label": "l"},
        "SendMessage": {"QueueUrl": URL, "MessageBody": "m", "DelaySeconds": 0,
                        "MessageAttributes": attribute, "MessageSystemAttributes": {
                            "AWSTraceHeader": {"DataType": "String", "StringValue": "t"}},
                        "MessageGroupId": "g"},
        "SendMessageBatch": {"QueueUrl": URL, "Entries": [dict(entry, MessageAttributes=attribute)]},
        "ReceiveMessage": {"QueueUrl": URL, "MaxNumberOfMessages": 1, "VisibilityTimeout": 0,
                           "WaitTimeSeconds": 0, "AttributeNames": ["All"],
                           "MessageSystemAttributeNames": ["All"],
                           "MessageAttributeNames": ["All"], "ReceiveRequestAttemptId": "r"},
        "DeleteMessage": {"QueueUrl": URL, "ReceiptHandle": handle},
        "DeleteMessageBatch": {"QueueUrl": URL, "Entries": [entry]},
        "ChangeMessageVisibility": {"QueueUrl": URL, "ReceiptHandle": handle,
                                    "VisibilityTimeout": 1},
        "ChangeMessageVisibilityBatch": {"QueueUrl": URL, "Entries": [entry]},
        "ListDeadLetterSourceQueues": {"QueueUrl": URL, "MaxResults": 1},
        "StartMessageMoveTask": {"SourceArn": "arn:aws:sqs:us-east-1:000000000000:fuzz",
                                 "MaxNumberOfMessagesPerSecond": 1},
        "ListMessageMoveTasks": {"SourceArn": "arn:aws:sqs:us-east-1:000000000000:fuzz",
                                 "MaxResults": 1},
        "CancelMessageMoveTask": {"TaskHandle": "t"},
        "PurgeQueue": {"QueueUrl": URL},
        "DeleteQueue": {"QueueUrl": URL},
    }


def variants(template):
    yield template
    for key in template:
        for bad in BAD_VALUES:
            yield {**template, key: bad}
        yield {k: v for k, v in template.items() if k != key}
        value = template[key]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for inner in value[0]:
                for bad in BAD_VALUES:
                    yield {**template, key: [{**value[0], inner: bad}]}


@pytest.mark.timeout(300)
def test_wrong_shapes_never_give_500(running_broker):
    sqs = sqs_client(running_broker)
    url = sqs.create_queue(QueueName="fuzz")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    handle = sqs.receive_message(QueueUrl=url, VisibilityTimeout=60)["Messages"][0][
        "ReceiptHandle"]
    endpoint = f"http://127.0.0.1:{running_broker.ports['http']}/"
    session = requests.Session()
    statuses = set()
    for operation, template in templates(handle).items():
        for params in variants(template):
            if operation in ("DeleteQueue", "PurgeQueue") and params.get("QueueUrl") == URL:
                continue  # keep the queue for the other cases
            body = json.dumps(params).encode("utf-8", "surrogatepass")
            headers = signed_headers(endpoint, body, {
                "X-Amz-Target": f"AmazonSQS.{operation}",
                "Content-Type": "application/x-amz-json-1.0"})
            response = session.post(endpoint, data=body, headers=headers, timeout=30)
            assert response.status_code < 500, (operation, params, response.text)
            if response.status_code >= 400:
                assert "__type" in response.json(), (operation, params, response.text)
            statuses.add(response.status_code)
    assert 200 in statuses and 400 in statuses
    assert sqs.get_queue_url(QueueName="fuzz")["QueueUrl"] == url
