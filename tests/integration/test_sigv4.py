"""AWS Signature Version 4 on the AWS listener with boto3: the right key, a wrong secret, an
unknown key, guest from loopback, unsigned and presigned requests, and permission denials."""
from __future__ import annotations

import boto3
import botocore.exceptions
import pytest
import requests
from botocore.config import Config

from tests.integration.sqs_helpers import sqs_client

ACCESS = {
    "users": [{"name": "app", "password": "app-pw"}, {"name": "reader", "password": "r-pw"}],
    "permissions": [
        {"user": "app", "vhost": "/", "configure": "^app-", "write": "^app-", "read": "^app-"},
        {"user": "reader", "vhost": "/", "configure": "", "write": "", "read": ".*"}],
    "access_keys": [{"user": "app", "id": "AKIAAPP", "secret": "app-secret"},
                    {"user": "reader", "id": "AKIAREADER", "secret": "reader-secret"}],
}


@pytest.fixture
def broker(make_broker):
    return make_broker(**ACCESS)


def client(rb, key_id, secret, service="sqs"):
    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{rb.ports['http']}",
                        region_name="us-east-1", aws_access_key_id=key_id,
                        aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def error_code(call):
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"][
        "HTTPStatusCode"]


def test_right_key_wrong_secret_unknown_key(broker):
    good = client(broker, "AKIAAPP", "app-secret")
    url = good.create_queue(QueueName="app-q")["QueueUrl"]
    good.send_message(QueueUrl=url, MessageBody="signed")
    assert good.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "signed"
    assert error_code(lambda: client(broker, "AKIAAPP", "nope").list_queues()) == \
        ("SignatureDoesNotMatch", 403)
    assert error_code(lambda: client(broker, "AKIANOBODY", "x").list_queues()) == \
        ("InvalidClientTokenId", 403)
    # guest/guest from loopback while the guest user exists
    assert "QueueUrls" in sqs_client(broker).list_queues()


def test_permission_denials_are_access_denied(broker):
    app = client(broker, "AKIAAPP", "app-secret")
    reader = client(broker, "AKIAREADER", "reader-secret")
    url = app.create_queue(QueueName="app-jobs")["QueueUrl"]
    app.send_message(QueueUrl=url, MessageBody="m")
    # configure: app only on app-*, reader nowhere
    assert error_code(lambda: app.create_queue(QueueName="other"))[0] == "AccessDenied"
    assert error_code(lambda: reader.create_queue(QueueName="app-x"))[0] == "AccessDenied"
    # write: the reader may not send; read: it may receive
    assert error_code(lambda: reader.send_message(QueueUrl=url, MessageBody="x")) == \
        ("AccessDenied", 403)
    received = reader.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert received[0]["Body"] == "m"
    assert error_code(lambda: reader.delete_queue(QueueUrl=url))[0] == "AccessDenied"
    app.delete_queue(QueueUrl=url)


def test_unsigned_and_query_protocol_errors(broker):
    base = f"http://127.0.0.1:{broker.ports['http']}/"
    response = requests.post(base, data={"Action": "ListQueues", "Version": "2012-11-05"},
                             timeout=10)
    assert response.status_code == 403 and b"MissingAuthenticationToken" in response.content
    response = requests.post(base, json={}, headers={
        "X-Amz-Target": "AmazonSQS.ListQueues",
        "Content-Type": "application/x-amz-json-1.0"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["__type"] == "MissingAuthenticationTokenException"


def test_presigned_url(broker):
    good = client(broker, "AKIAAPP", "app-secret")
    good.create_queue(QueueName="app-pre")
    # a presigned query-protocol GET (as the SDKs' generate_presigned_url builds)
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = (f"http://127.0.0.1:{broker.ports['http']}/?Action=ListQueues"
           "&Version=2012-11-05")
    for secret, status in (("app-secret", 200), ("wrong", 403)):
        request = AWSRequest(method="GET", url=url)
        SigV4QueryAuth(Credentials("AKIAAPP", secret), "sqs", "us-east-1",
                       expires=60).add_auth(request)
        response = requests.get(request.url, timeout=10)
        assert response.status_code == status, response.text
