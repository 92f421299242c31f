"""The SQS <-> core message mapping (adapters/aws/attributes.py) and the query-protocol parameter
and XML forms (adapters/aws/sqs_protocol.py), without a broker."""
import decimal

import pytest

from manifold.adapters.aws import attributes as attrs
from manifold.adapters.aws.http import AwsError
from manifold.adapters.aws.sqs_protocol import from_query, to_xml

SAMPLE = {"s": {"DataType": "String", "StringValue": "text"},
          "i": {"DataType": "Number", "StringValue": "42"},
          "f": {"DataType": "Number", "StringValue": "1.50"},
          "j": {"DataType": "String.json", "StringValue": "{}"},
          "b": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
          "g": {"DataType": "Binary.gzip", "BinaryValue": b"\x1f\x8b"}}


def test_attributes_round_trip_with_types_and_md5():
    message = attrs.to_message("body", SAMPLE, message_id="m-1", sent_ms=1_700_000_000_123,
                               group_id="g", dedup_id="d", sequence_number="1", delay_s=3,
                               routing_key="q")
    headers = message.properties.headers
    assert headers["s"] == "text" and headers["i"] == 42 and headers["f"] == "1.50"
    assert headers["b"] == b"\x00\xff"
    assert headers["x-sqs-data-types"] == {"f": "Number", "j": "String.json",
                                           "g": "Binary.gzip"}
    assert headers["x-message-group-id"] == "g" and headers["x-delay"] == 3000
    assert message.properties.delivery_mode == 2 and message.properties.message_id == "m-1"
    back = attrs.message_attributes(message)
    assert back == SAMPLE
    assert attrs.md5_of_attributes(back) == attrs.md5_of_attributes(SAMPLE)
    assert attrs.sent_timestamp_ms(message, 0) == 1_700_000_000_123


def test_headers_from_other_protocols():
    from manifold.broker.message import Message, Properties
    message = Message("", "q", b"\xff", Properties(headers={
        "flag": False, "ratio": 0.25, "price": decimal.Decimal("9.99"), "list": [1, "a"],
        "bad name!": "x", "x-message-group-id": "hidden", "empty": ""}, timestamp=5))
    assert attrs.message_attributes(message) == {
        "flag": {"DataType": "String", "StringValue": "false"},
        "ratio": {"DataType": "Number", "StringValue": "0.25"},
        "price": {"DataType": "Number", "StringValue": "9.99"},
        "list": {"DataType": "String", "StringValue": '[1,"a"]'}}
    assert attrs.body_text(message) == "\ufffd"
    assert attrs.sent_timestamp_ms(message, 0) == 5000
    assert attrs.message_id_of(message, "q", 7) == attrs.message_id_of(message, "q", 7)
    assert attrs.message_id_of(message, "q", 7) != attrs.message_id_of(message, "q", 8)


@pytest.mark.parametrize("bad", [
    {"AWS.x": {"DataType": "String", "StringValue": "v"}},
    {"a..b": {"DataType": "String", "StringValue": "v"}},
    {"a": {"DataType": "String"}},
    {"a": {"DataType": "String", "StringValue": ""}},
    {"a": {"DataType": "Binary", "StringValue": "v"}},
    {"a": {"DataType": "Number", "StringValue": "1e200"}},
    {"a": {"DataType": "Text", "StringValue": "v"}},
    {f"k{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)},
])
def test_invalid_attributes(bad):
    with pytest.raises(AwsError) as err:
        attrs.check_attributes(bad)
    assert err.value.code == "InvalidParameterValue"


def test_invalid_characters():
    with pytest.raises(AwsError) as err:
        attrs.check_text("a\x01b", "body")
    assert err.value.code == "InvalidMessageContents"
    attrs.check_text("tab\tnew\nline\r emoji \U0001F600", "body")


def test_md5_matches_a_reference_value():
    # moto 5 computes the same digest for these attributes (AWS's algorithm, as the SDKs check).
    assert attrs.md5_of_attributes({
        "a": {"DataType": "String", "StringValue": "x"},
        "n": {"DataType": "Number", "StringValue": "1.50"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}) == \
        "bfde9312aee8985023f197d4215e6456"
    assert attrs.md5_of_attributes({}) is None


def test_query_parameters_become_json_shapes():
    params = from_query({
        "Action": "SendMessageBatch", "Version": "2012-11-05", "QueueUrl": "u",
        "SendMessageBatchRequestEntry.2.Id": "b", "SendMessageBatchRequestEntry.2.MessageBody": "2",
        "SendMessageBatchRequestEntry.1.Id": "a", "SendMessageBatchRequestEntry.1.MessageBody": "1",
        "SendMessageBatchRequestEntry.1.DelaySeconds": "5",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name": "k",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType": "String",
        "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue": "v",
        "AttributeName.1": "All"})
    assert params == {"QueueUrl": "u", "AttributeNames": ["All"], "Entries": [
        {"Id": "a", "MessageBody": "1", "DelaySeconds": 5,
         "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
        {"Id": "b", "MessageBody": "2"}]}


def test_results_become_query_xml():
    xml = to_xml("ReceiveMessage", {"Messages": [{
        "Body": "<&>\r", "Attributes": {"SentTimestamp": "1"},
        "MessageAttributes": {"b": {"DataType": "Binary", "BinaryValue": b"\x00"}}}]})
    assert xml == ("<Message><Body>&lt;&amp;&gt;&#xD;</Body><Attribute><Name>SentTimestamp</Name>"
                   "<Value>1</Value></Attribute><MessageAttribute><Name>b</Name><Value>"
                   "<DataType>Binary</DataType><BinaryValue>AA==</BinaryValue></Value>"
                   "</MessageAttribute></Message>")
    assert to_xml("DeleteMessageBatch", {"Successful": [{"Id": "1"}], "Failed": []}) == \
        "<DeleteMessageBatchResultEntry><Id>1</Id></DeleteMessageBatchResultEntry>"
