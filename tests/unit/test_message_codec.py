"""broker/message_codec.py: stored messages are msgpack of [version, exchange, routing key,
property values, body, timestamp]. ``encode_message`` reuses the encoded start of the previous
message when properties (the same object), exchange and routing key repeat: the bytes must be
exactly those of packing the whole array, whatever the order of messages."""
from __future__ import annotations

import datetime
import decimal

import msgpack
from hypothesis import given, settings, strategies as st

from manifold.broker.message import Message, Properties
from manifold.broker.message_codec import (FORMAT_VERSION, _default, _property_values,
                                           decode_message, encode_message)


def whole_array(message: Message) -> bytes:
    return msgpack.packb([FORMAT_VERSION, message.exchange, message.routing_key,
                          list(_property_values(message.properties)), message.body,
                          message.timestamp_ms], default=_default, use_bin_type=True)


SHARED = Properties(content_type="application/octet-stream", delivery_mode=2)
PROPERTIES = st.one_of(
    st.just(SHARED),
    st.builds(Properties, content_type=st.none() | st.text(max_size=5),
              delivery_mode=st.sampled_from([None, 1, 2]), priority=st.none() | st.integers(0, 9),
              expiration=st.none() | st.sampled_from(["0", "100"]),
              headers=st.none() | st.dictionaries(st.text(max_size=3), st.one_of(
                  st.integers(-2 ** 63, 2 ** 63 - 1), st.text(max_size=3), st.just(decimal.Decimal("1.5")),
                  st.just(datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))),
                  max_size=2)))
MESSAGES = st.builds(Message, st.sampled_from(["", "amq.topic", "x" * 40]),
                     st.sampled_from(["q", "q2", "k" * 255]), st.binary(max_size=300),
                     PROPERTIES, timestamp_ms=st.integers(0, 2 ** 62))


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(MESSAGES, min_size=1, max_size=12))
def test_encoded_bytes_are_the_whole_array_packed(messages):
    for message in messages + messages[::-1]:
        data = encode_message(message)
        assert data == whole_array(message)
        back = decode_message(data)
        assert (back.exchange, back.routing_key, back.body, back.timestamp_ms) == (
            message.exchange, message.routing_key, message.body, message.timestamp_ms)


def test_headers_changed_in_place_are_encoded_anew():
    props = Properties(headers={"n": 1})
    first = encode_message(Message("", "q", b"a", props))
    props.headers["n"] = 2  # (not done once published; a dict is never trusted to be the same)
    second = encode_message(Message("", "q", b"a", props))
    assert decode_message(first).properties.headers == {"n": 1}
    assert decode_message(second).properties.headers == {"n": 2}
