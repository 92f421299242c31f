"""SNS filter policies, SNS retry schedules and Kinesis shard arithmetic without a broker."""
from __future__ import annotations

import json

import pytest

from manifold.adapters.aws import sns_filter
from manifold.adapters.aws.http import AwsError
from manifold.adapters.aws.kinesis_shards import (MAX_HASH_KEY, KinesisStream, hash_key_of,
                                                  make_iterator, parse_iterator,
                                                  parse_sequence_number, sequence_number)
from manifold.adapters.aws.sns_delivery import retry_delays
from manifold.adapters.aws.sns_wire import unflatten


def test_body_scope_nesting_arrays_and_null():
    policy = sns_filter.parse(json.dumps({"a": {"b": ["x", None]}, "tags": ["t2"]}), True)
    assert sns_filter.matches(policy, {"a": {"b": "x"}, "tags": ["t1", "t2"]})
    assert sns_filter.matches(policy, {"a": {"b": None}, "tags": "t2"})
    assert sns_filter.matches(policy, {"a": [{"b": "y"}, {"b": "x"}], "tags": ["t2"]})
    assert not sns_filter.matches(policy, {"a": {"b": "y"}, "tags": ["t2"]})
    assert not sns_filter.matches(policy, {"tags": ["t2"]})


@pytest.mark.parametrize("policy,scope_body", [
    ({"a": "b"}, False), ({"a": {"b": ["c"]}}, False), ({"a": []}, False),
    ({"a": [{"prefix": 1}]}, False), ({"a": [{"numeric": [">", 1, ">", 2]}]}, False),
    ({"a": [{"numeric": ["<", 2e9]}]}, False), ({"$or": [{"a": ["b"]}]}, False),
    ({"a": [None]}, False), ({"a": [{"anything-but": [True]}]}, False),
])
def test_invalid_policies_name_the_filter_policy(policy, scope_body):
    with pytest.raises(AwsError) as err:
        sns_filter.parse(json.dumps(policy), scope_body)
    assert err.value.code == "InvalidParameter"
    assert err.value.message.startswith("Invalid parameter: FilterPolicy: ")


def test_or_counts_keys_and_combinations():
    too_complex = {f"k{i}": [str(v) for v in range(4)] for i in range(4)}  # 256 combinations
    with pytest.raises(AwsError, match="too complex"):
        sns_filter.parse(json.dumps(too_complex), False)
    ok = {"$or": [{"a": ["1"]}, {"b": ["2"]}], "c": ["3"]}
    assert sns_filter.matches(sns_filter.parse(json.dumps(ok), False), {"b": "2", "c": "3"})


def test_attribute_values_types():
    values = sns_filter.attribute_values({
        "s": {"DataType": "String", "StringValue": "x"},
        "n": {"DataType": "Number", "StringValue": "1.5"},
        "arr": {"DataType": "String.Array", "StringValue": '["a", 1]'},
        "bin": {"DataType": "Binary", "BinaryValue": b"z"}})
    assert values == {"s": "x", "n": 1.5, "arr": ["a", 1]}


def test_retry_schedule_phases():
    assert retry_delays({"numRetries": 3, "minDelayTarget": 20, "maxDelayTarget": 20}) == \
        [20.0, 20.0, 20.0]
    delays = retry_delays({"numRetries": 6, "numNoDelayRetries": 1, "numMinDelayRetries": 1,
                           "numMaxDelayRetries": 1, "minDelayTarget": 1, "maxDelayTarget": 9,
                           "backoffFunction": "linear"})
    assert delays[:2] == [0.0, 1.0] and delays[-1] == 9.0 and len(delays) == 6
    assert delays[2:5] == sorted(delays[2:5])
    assert retry_delays({"numRetries": 0}) == []


def test_shards_cover_the_hash_space_and_sequence_numbers_round_trip():
    stream = KinesisStream("s", 0)
    shards = stream.add_even_shards(3)
    assert shards[0].start_hash == 0 and shards[-1].end_hash == MAX_HASH_KEY
    for key in ("a", "b", "user-1"):
        assert stream.shard_for(hash_key_of(key)).holds(hash_key_of(key))
    seq = sequence_number(7, 123)
    assert parse_sequence_number(seq) == (7, 123)
    assert int(sequence_number(1, 0)) > int(sequence_number(0, 10 ** 12))
    with pytest.raises(AwsError):
        parse_sequence_number("12")
    token = make_iterator(stream, shards[1], 42, 1000)
    assert parse_iterator(token) == ("s", 0, shards[1].id, 42, 1000)
    restored = KinesisStream.from_value(stream.to_value())
    assert restored.shards == stream.shards


def test_query_parameters_unflatten():
    params = unflatten({"Name": "t", "Attributes.entry.1.key": "DisplayName",
                        "Attributes.entry.1.value": "D", "Tags.member.2.Key": "b",
                        "Tags.member.2.Value": "2", "Tags.member.1.Key": "a",
                        "Tags.member.1.Value": "1",
                        "PublishBatchRequestEntries.member.1.Id": "x",
                        "PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name": "n",
                        "PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value."
                        "DataType": "String",
                        "PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value."
                        "StringValue": "v"})
    assert params["Attributes"] == {"DisplayName": "D"}
    assert params["Tags"] == [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]
    assert params["PublishBatchRequestEntries"][0]["MessageAttributes"] == {
        "n": {"DataType": "String", "StringValue": "v"}}
