"""SNS deliveries to endpoints outside the broker, with unmodified boto3: HTTP subscriptions
(confirmation by a plain GET of SubscribeURL, signed notifications, DeliveryPolicy retries,
dead-letter queue), email over SMTP (aiosmtpd), lambda functions from [[functions]], Firehose,
the sms outbox, and retries that resume after a restart."""
from __future__ import annotations

import base64
import json
import sys
import time
import urllib.request

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from .aws_helpers import aws_client, restart, wait_for
from .sns_endpoints import HttpEndpoint, SmtpServer

ACCOUNT = "000000000000"
FAST_RETRY = json.dumps({"healthyRetryPolicy": {
    "minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 2, "numNoDelayRetries": 0,
    "numMinDelayRetries": 0, "numMaxDelayRetries": 0, "backoffFunction": "linear"}})


@pytest.fixture
def endpoint():
    server = HttpEndpoint()
    yield server
    server.close()


def verify_signature(envelope: dict) -> None:
    """What an SNS subscriber does: fetch SigningCertURL and check Signature."""
    with urllib.request.urlopen(envelope["SigningCertURL"], timeout=5) as response:
        cert = x509.load_pem_x509_certificate(response.read())
    fields = (["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
              if envelope["Type"] == "Notification" else
              ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"])
    text = "".join(f"{f}\n{envelope[f]}\n" for f in fields if f in envelope).encode()
    algorithm = hashes.SHA256() if envelope["SignatureVersion"] == "2" else hashes.SHA1()
    cert.public_key().verify(base64.b64decode(envelope["Signature"]), text, padding.PKCS1v15(),
                             algorithm)


def confirm_by_get(endpoint) -> dict:
    (headers, body), = wait_for(lambda: endpoint.of_type("SubscriptionConfirmation"))
    confirmation = json.loads(body)
    assert confirmation["Type"] == "SubscriptionConfirmation" and confirmation["Token"]
    verify_signature(confirmation)
    # [SNS] a plain, unsigned GET of SubscribeURL confirms
    with urllib.request.urlopen(confirmation["SubscribeURL"], timeout=5) as response:
        assert response.status == 200
        assert b"<SubscriptionArn>" in response.read()
    return confirmation


def test_http_subscription_confirmation_and_signed_notifications(running_broker, endpoint):
    sns = aws_client(running_broker, "sns")
    topic = sns.create_topic(Name="web", Attributes={"SignatureVersion": "2"})["TopicArn"]
    pending = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url)
    assert pending["SubscriptionArn"] == "pending confirmation"
    (sub,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert sub["SubscriptionArn"] == "PendingConfirmation"
    sns.publish(TopicArn=topic, Message="before confirmation")  # not delivered: pending
    confirm_by_get(endpoint)
    (sub,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert sub["SubscriptionArn"].startswith(topic + ":")
    sns.publish(TopicArn=topic, Message="hi there", Subject="s", MessageAttributes={
        "k": {"DataType": "String", "StringValue": "v"}})
    (headers, body), = wait_for(lambda: endpoint.of_type("Notification"))
    envelope = json.loads(body)
    assert envelope["Message"] == "hi there" and envelope["Subject"] == "s"
    assert envelope["MessageAttributes"] == {"k": {"Type": "String", "Value": "v"}}
    assert headers["x-amz-sns-topic-arn"] == topic
    assert headers["x-amz-sns-subscription-arn"] == sub["SubscriptionArn"]
    assert headers["x-amz-sns-message-id"] == envelope["MessageId"]
    assert envelope["SignatureVersion"] == "2"
    verify_signature(envelope)
    # raw delivery: the body is the message itself
    sns.set_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"],
                                    AttributeName="RawMessageDelivery", AttributeValue="true")
    sns.publish(TopicArn=topic, Message="raw body")
    wait_for(lambda: len(endpoint.of_type("Notification")) == 2)
    headers, body = endpoint.of_type("Notification")[1]
    assert body == "raw body" and headers["x-amz-sns-rawdelivery"] == "true"
    # the UnsubscribeURL works the same way
    with urllib.request.urlopen(envelope["UnsubscribeURL"], timeout=5) as response:
        assert response.status == 200
    assert sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"] == []
    (headers, body), = wait_for(lambda: endpoint.of_type("UnsubscribeConfirmation"))
    notice = json.loads(body)
    assert notice["TopicArn"] == topic and "SubscribeURL" in notice
    verify_signature(notice)


def test_http_retries_then_dead_letter_queue(running_broker):
    endpoint = HttpEndpoint(status_for=lambda n: 200 if n == 1 else 500)
    try:
        sns = aws_client(running_broker, "sns")
        sqs = aws_client(running_broker, "sqs")
        dlq = sqs.create_queue(QueueName="sns-dlq")["QueueUrl"]
        topic = sns.create_topic(Name="flaky")["TopicArn"]
        sub = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url,
                            ReturnSubscriptionArn=True, Attributes={
                                "DeliveryPolicy": FAST_RETRY, "RedrivePolicy": json.dumps({
                                    "deadLetterTargetArn":
                                        f"arn:aws:sqs:us-east-1:{ACCOUNT}:sns-dlq"})})
        confirm_by_get(endpoint)
        sns.publish(TopicArn=topic, Message="doomed")
        wait_for(lambda: len(endpoint.of_type("Notification")) == 3, timeout=60)
        started = time.monotonic()
        got = wait_for(lambda: sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1,
                                                   MessageAttributeNames=["All"]).get("Messages"),
                       timeout=60)
        assert json.loads(got[0]["Body"])["Message"] == "doomed"
        assert got[0]["MessageAttributes"]["TopicArn"]["StringValue"] == topic
        assert time.monotonic() - started < 60
        attempts = endpoint.of_type("Notification")
        assert len(attempts) == 3  # one try and numRetries=2, then the DLQ
        attrs = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])
        assert json.loads(attrs["Attributes"]["DeliveryPolicy"]) == json.loads(FAST_RETRY)
    finally:
        endpoint.close()


def test_http_retries_resume_after_a_restart(make_broker):
    state = {"up": False}
    endpoint = HttpEndpoint(status_for=lambda n: 200 if n == 1 or state["up"] else 503)
    try:
        broker = make_broker()
        sns = aws_client(broker, "sns")
        topic = sns.create_topic(Name="later")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url, Attributes={
            "DeliveryPolicy": json.dumps({"healthyRetryPolicy": {
                "minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 50}})})
        confirm_by_get(endpoint)
        sns.publish(TopicArn=topic, Message="eventually")
        wait_for(lambda: endpoint.of_type("Notification"), timeout=60)
        broker = restart(make_broker, broker)
        before = len(endpoint.of_type("Notification"))
        state["up"] = True
        wait_for(lambda: len(endpoint.of_type("Notification")) > before, timeout=60)
        assert json.loads(endpoint.of_type("Notification")[-1][1])["Message"] == "eventually"
    finally:
        endpoint.close()


def test_email_and_email_json_over_smtp(make_broker):
    smtp = SmtpServer()
    try:
        broker = make_broker(sns={"smtp_url": smtp.url})
        sns = aws_client(broker, "sns")
        topic = sns.create_topic(Name="mail")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="ops@example.com")
        sns.subscribe(TopicArn=topic, Protocol="email-json", Endpoint="bot@example.com")
        wait_for(lambda: len(smtp.mails) == 2)
        links = {}
        for rcpt, mail in smtp.mails:
            assert mail["Subject"] == "AWS Notification - Subscription Confirmation"
            text = mail.get_content()
            if rcpt == ["bot@example.com"]:
                links["json"] = json.loads(text)["SubscribeURL"]
            else:
                links["plain"] = next(line for line in text.splitlines()
                                      if "Action=ConfirmSubscription" in line)
        for link in links.values():
            urllib.request.urlopen(link, timeout=5).read()
        smtp.mails.clear()
        sns.publish(TopicArn=topic, Message="disk full", Subject="Alert")
        wait_for(lambda: len(smtp.mails) == 2)
        by_rcpt = {tuple(r): m for r, m in smtp.mails}
        plain = by_rcpt[("ops@example.com",)]
        assert plain["Subject"] == "Alert" and plain.get_content().startswith("disk full")
        envelope = json.loads(by_rcpt[("bot@example.com",)].get_content())
        assert envelope["Message"] == "disk full" and envelope["Type"] == "Notification"
    finally:
        smtp.close()


def test_email_needs_an_smtp_relay(running_broker):
    sns = aws_client(running_broker, "sns")
    topic = sns.create_topic(Name="nomail")["TopicArn"]
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="a@example.com")


def test_lambda_command_and_url_functions(make_broker, tmp_path, endpoint):
    out = tmp_path / "events.jsonl"
    script = tmp_path / "handler.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')\n")
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nsys.exit(3)\n")
    broker = make_broker(functions=[
        {"name": "writer", "command": f"{sys.executable} {script} {out}"},
        {"name": "poster", "url": endpoint.url},
        {"name": "broken", "command": f"{sys.executable} {failing}"}])
    sns = aws_client(broker, "sns")
    sqs = aws_client(broker, "sqs")
    dlq = sqs.create_queue(QueueName="lambda-dlq")["QueueUrl"]
    topic = sns.create_topic(Name="fn")["TopicArn"]
    fn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
    sub = sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=fn + "writer")
    sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=fn + "poster")
    sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=fn + "broken", Attributes={
        "DeliveryPolicy": FAST_RETRY, "RedrivePolicy": json.dumps({
            "deadLetterTargetArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:lambda-dlq"})})
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=fn + "unknown")
    sns.publish(TopicArn=topic, Message="to lambda", MessageAttributes={
        "a": {"DataType": "String", "StringValue": "b"}})
    line = wait_for(lambda: out.exists() and out.read_text().strip())
    event = json.loads(line)
    record = event["Records"][0]
    assert record["EventSource"] == "aws:sns"
    assert record["EventSubscriptionArn"] == sub["SubscriptionArn"]
    assert record["Sns"]["Message"] == "to lambda"
    assert record["Sns"]["MessageAttributes"] == {"a": {"Type": "String", "Value": "b"}}
    (_, posted), = wait_for(lambda: endpoint.requests)
    assert json.loads(posted)["Records"][0]["Sns"]["Message"] == "to lambda"
    dead = wait_for(lambda: sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1,
                                                MessageAttributeNames=["All"])
                    .get("Messages"), timeout=60)
    assert dead[0]["MessageAttributes"]["ErrorCode"]["StringValue"] == "FunctionError"


def test_firehose_and_sms_subscriptions(running_broker):
    sns = aws_client(running_broker, "sns")
    firehose = aws_client(running_broker, "firehose")
    s3 = aws_client(running_broker, "s3")
    s3.create_bucket(Bucket="archive")
    firehose.create_delivery_stream(DeliveryStreamName="arch", ExtendedS3DestinationConfiguration={
        "RoleARN": "arn:aws:iam::000000000000:role/r", "BucketARN": "arn:aws:s3:::archive",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}})
    topic = sns.create_topic(Name="archive")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="firehose",
                  Endpoint=f"arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/arch",
                  Attributes={"SubscriptionRoleArn": "arn:aws:iam::000000000000:role/r",
                              "RawMessageDelivery": "true"})
    sns.subscribe(TopicArn=topic, Protocol="sms", Endpoint="+15555550100")
    sns.publish(TopicArn=topic, Message="archived")
    key = wait_for(lambda: s3.list_objects_v2(Bucket="archive").get("Contents"))[0]["Key"]
    assert s3.get_object(Bucket="archive", Key=key)["Body"].read() == b"archived"
    outbox = wait_for(lambda: running_broker.call(running_broker.broker.outbox.entries))
    assert outbox[0]["endpoint"] == "+15555550100" and outbox[0]["message"] == "archived"
    sns.publish(PhoneNumber="+15555550199", Message="direct sms")
    device = f"arn:aws:sns:us-east-1:{ACCOUNT}:endpoint/GCM/app/0123"
    sns.publish(TargetArn=device, Message="to a device")
    # the management API shows the outbox
    response = requests.get(f"http://127.0.0.1:{running_broker.ports['management']}/api/outbox",
                            auth=("guest", "guest"), timeout=10)
    assert response.status_code == 200
    outbox = response.json()
    assert [(e["protocol"], e["endpoint"]) for e in outbox[-2:]] == [
        ("sms", "+15555550199"), ("application", device)]


def test_topic_delivery_policy_applies_to_http_subscriptions(running_broker):
    endpoint = HttpEndpoint(status_for=lambda n: 200 if n == 1 else 500)
    try:
        sns = aws_client(running_broker, "sns")
        topic = sns.create_topic(Name="policy", Attributes={"DeliveryPolicy": json.dumps({
            "http": {"defaultHealthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 1,
                                                   "numRetries": 1}}})})["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url)
        confirm_by_get(endpoint)
        sns.publish(TopicArn=topic, Message="twice")
        wait_for(lambda: len(endpoint.of_type("Notification")) == 2, timeout=60)
        time.sleep(1.5)
        assert len(endpoint.of_type("Notification")) == 2  # one try, one retry, then dropped
    finally:
        endpoint.close()
