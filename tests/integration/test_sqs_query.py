"""SQS over the query protocol (form-encoded ``Action=...&Version=2012-11-05``, XML answers), as
older SDKs and the AWS CLI v1 send it, with a raw ``requests`` client."""
from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET

from urllib.parse import urlencode

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}


def signed_post(url: str, form: dict) -> requests.Response:
    """POST the form signed with SigV4 (key guest/guest), as an SDK of the query era does."""
    request = AWSRequest(method="POST", url=url, data=urlencode(form),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(Credentials("guest", "guest"), "sqs", "us-east-1").add_auth(request)
    return requests.post(url, data=request.body, headers=dict(request.headers), timeout=30)


@pytest.fixture
def call(running_broker):
    base = f"http://127.0.0.1:{running_broker.ports['http']}/"

    def call(action, path="", **params):
        response = signed_post(base + path, {"Action": action, "Version": "2012-11-05",
                                             **params})
        return response.status_code, ET.fromstring(response.content)
    return call


def text(root, path):
    node = root.find(path, NS)
    return None if node is None else node.text


def test_queue_lifecycle_and_attributes(call):
    status, root = call("CreateQueue", QueueName="q", **{
        "Attribute.1.Name": "VisibilityTimeout", "Attribute.1.Value": "40",
        "Tag.1.Key": "team", "Tag.1.Value": "x"})
    assert status == 200
    url = text(root, "sqs:CreateQueueResult/sqs:QueueUrl")
    assert url.endswith("/000000000000/q")
    assert text(root, "sqs:ResponseMetadata/sqs:RequestId")
    status, root = call("GetQueueUrl", QueueName="q")
    assert text(root, "sqs:GetQueueUrlResult/sqs:QueueUrl") == url
    status, root = call("GetQueueAttributes", QueueUrl=url, **{"AttributeName.1": "All"})
    attrs = {a.find("sqs:Name", NS).text: a.find("sqs:Value", NS).text
             for a in root.findall("sqs:GetQueueAttributesResult/sqs:Attribute", NS)}
    assert attrs["VisibilityTimeout"] == "40"
    status, root = call("ListQueueTags", QueueUrl=url)
    assert text(root, "sqs:ListQueueTagsResult/sqs:Tag/sqs:Key") == "team"
    status, root = call("ListQueues", QueueNamePrefix="q")
    assert [u.text for u in root.findall("sqs:ListQueuesResult/sqs:QueueUrl", NS)] == [url]
    status, root = call("DeleteQueue", QueueUrl=url)
    assert status == 200


def test_send_receive_delete_with_attributes(call):
    _, root = call("CreateQueue", QueueName="msgs")
    url = text(root, "sqs:CreateQueueResult/sqs:QueueUrl")
    blob = base64.b64encode(b"\x00\x01").decode()
    status, root = call("SendMessage", QueueUrl=url, MessageBody="a & b <c>\r\n", **{
        "MessageAttribute.1.Name": "a", "MessageAttribute.1.Value.DataType": "String",
        "MessageAttribute.1.Value.StringValue": "x",
        "MessageAttribute.2.Name": "n", "MessageAttribute.2.Value.DataType": "Number",
        "MessageAttribute.2.Value.StringValue": "1.50",
        "MessageAttribute.3.Name": "b", "MessageAttribute.3.Value.DataType": "Binary",
        "MessageAttribute.3.Value.BinaryValue": blob})
    assert status == 200
    result = "sqs:SendMessageResult/"
    assert text(root, result + "sqs:MD5OfMessageBody") == hashlib.md5(
        "a & b <c>\r\n".encode()).hexdigest()
    assert text(root, result + "sqs:MD5OfMessageAttributes") == "bfde9312aee8985023f197d4215e6456"
    message_id = text(root, result + "sqs:MessageId")
    status, root = call("ReceiveMessage", QueueUrl=url, WaitTimeSeconds="1", **{
        "MessageAttributeName.1": "All", "AttributeName.1": "All"})
    (message,) = root.findall("sqs:ReceiveMessageResult/sqs:Message", NS)
    assert message.find("sqs:Body", NS).text == "a & b <c>\r\n"
    assert message.find("sqs:MessageId", NS).text == message_id
    attributes = {a.find("sqs:Name", NS).text: a.find("sqs:Value", NS)
                  for a in message.findall("sqs:MessageAttribute", NS)}
    assert attributes["b"].find("sqs:BinaryValue", NS).text == blob
    assert attributes["n"].find("sqs:StringValue", NS).text == "1.50"
    assert attributes["n"].find("sqs:DataType", NS).text == "Number"
    system = {a.find("sqs:Name", NS).text: a.find("sqs:Value", NS).text
              for a in message.findall("sqs:Attribute", NS)}
    assert system["ApproximateReceiveCount"] == "1"
    handle = message.find("sqs:ReceiptHandle", NS).text
    # Old SDKs post to the queue URL itself, without a QueueUrl parameter.
    status, root = call("DeleteMessage", path="000000000000/msgs", ReceiptHandle=handle)
    assert status == 200
    _, root = call("ReceiveMessage", QueueUrl=url)
    assert root.findall("sqs:ReceiveMessageResult/sqs:Message", NS) == []


def test_batches(call):
    _, root = call("CreateQueue", QueueName="b")
    url = text(root, "sqs:CreateQueueResult/sqs:QueueUrl")
    status, root = call("SendMessageBatch", QueueUrl=url, **{
        "SendMessageBatchRequestEntry.1.Id": "one",
        "SendMessageBatchRequestEntry.1.MessageBody": "1",
        "SendMessageBatchRequestEntry.2.Id": "two",
        "SendMessageBatchRequestEntry.2.MessageBody": "2",
        "SendMessageBatchRequestEntry.2.DelaySeconds": "1000"})
    ok = root.findall("sqs:SendMessageBatchResult/sqs:SendMessageBatchResultEntry", NS)
    failed = root.findall("sqs:SendMessageBatchResult/sqs:BatchResultErrorEntry", NS)
    assert [e.find("sqs:Id", NS).text for e in ok] == ["one"]
    assert failed[0].find("sqs:Code", NS).text == "InvalidParameterValue"
    assert failed[0].find("sqs:SenderFault", NS).text == "true"
    _, root = call("ReceiveMessage", QueueUrl=url, MaxNumberOfMessages="10")
    (message,) = root.findall("sqs:ReceiveMessageResult/sqs:Message", NS)
    status, root = call("DeleteMessageBatch", QueueUrl=url, **{
        "DeleteMessageBatchRequestEntry.1.Id": "d",
        "DeleteMessageBatchRequestEntry.1.ReceiptHandle":
            message.find("sqs:ReceiptHandle", NS).text})
    assert text(root, "sqs:DeleteMessageBatchResult/sqs:DeleteMessageBatchResultEntry/sqs:Id") \
        == "d"


@pytest.mark.parametrize("action, params, status, code", [
    ("GetQueueUrl", {"QueueName": "missing"}, 400, "AWS.SimpleQueueService.NonExistentQueue"),
    ("SendMessage", {"QueueUrl": "http://x/000000000000/e", "MessageBody": "x",
                     "DelaySeconds": "901"}, 400, "InvalidParameterValue"),
    ("SendMessage", {"QueueUrl": "http://x/000000000000/e"}, 400, "MissingParameter"),
    ("DeleteMessage", {"QueueUrl": "http://x/000000000000/e", "ReceiptHandle": "junk"}, 400,
     "ReceiptHandleIsInvalid"),
    ("SendMessageBatch", {"QueueUrl": "http://x/000000000000/e"}, 400,
     "AWS.SimpleQueueService.EmptyBatchRequest"),
    ("NoSuchAction", {}, 400, "InvalidAction"),
])
def test_errors_are_xml_error_responses(call, action, params, status, code):
    call("CreateQueue", QueueName="e")
    got_status, root = call(action, **params)
    assert got_status == status
    assert root.tag == "ErrorResponse"
    assert root.find("Error/Code").text == code
    assert root.find("Error/Type").text == "Sender"
    assert root.find("RequestId").text


def test_get_with_parameters_in_the_url(running_broker, call):
    """The query protocol also accepts GET with the parameters in the URL (signed the same)."""
    call("CreateQueue", QueueName="by-get")
    url = (f"http://127.0.0.1:{running_broker.ports['http']}/?" +
           urlencode({"Action": "GetQueueUrl", "Version": "2012-11-05", "QueueName": "by-get"}))
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials("guest", "guest"), "sqs", "us-east-1").add_auth(request)
    response = requests.get(url, headers=dict(request.headers), timeout=30)
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    assert text(root, "sqs:GetQueueUrlResult/sqs:QueueUrl").endswith("/000000000000/by-get")


def test_attributes_count_towards_the_maximum_size(call):
    _, root = call("CreateQueue", QueueName="small", **{
        "Attribute.1.Name": "MaximumMessageSize", "Attribute.1.Value": "1024"})
    url = text(root, "sqs:CreateQueueResult/sqs:QueueUrl")
    status, _ = call("SendMessage", QueueUrl=url, MessageBody="x" * 1000)
    assert status == 200
    status, root = call("SendMessage", QueueUrl=url, MessageBody="x" * 1000, **{
        "MessageAttribute.1.Name": "pad", "MessageAttribute.1.Value.DataType": "String",
        "MessageAttribute.1.Value.StringValue": "y" * 30})
    assert status == 400
    assert root.find("Error/Code").text == "InvalidParameterValue"
