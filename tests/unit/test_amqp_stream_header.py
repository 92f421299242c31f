"""A stream delivery's content header: the message's cached header with the x-stream-offset
entry spliced into its headers table must be the very bytes a full re-encoding gives."""
import struct

import pytest

from manifold.adapters.amqp import fields
from manifold.adapters.amqp.channel import _stream_header
from manifold.broker.message import Message, Properties

CASES = [
    Properties(),
    Properties(delivery_mode=2),
    Properties(content_type="application/json"),
    Properties(content_type="text/plain", content_encoding="gzip", priority=3,
               message_id="m-1", app_id="app"),
    Properties(headers={}),
    Properties(content_encoding="br", headers={"a": 1, "b": "two", "nested": {"x": [1, "y"]}},
               delivery_mode=1, correlation_id="c", reply_to="r", expiration="60000",
               timestamp=1700000000, type="t", user_id="guest"),
]


@pytest.mark.parametrize("props", CASES)
@pytest.mark.parametrize("offset", [0, 1, 2 ** 31, 2 ** 62])
def test_the_spliced_header_equals_a_full_encoding(props, offset):
    message = Message("", "q", b"body" * 10, props)
    cached = fields.content_header_payload(props, len(message.body))
    expected = props.copy()
    expected.headers = {**(props.headers or {}), "x-stream-offset": offset}
    assert _stream_header(message, cached, offset) == \
        fields.content_header_payload(expected, len(message.body))


def test_a_published_x_stream_offset_header_is_replaced_not_repeated():
    props = Properties(headers={"x-stream-offset": "forged", "k": "v"})
    message = Message("", "q", b"x", props)
    header = _stream_header(message, fields.content_header_payload(props, 1), 7)
    assert header.count(b"x-stream-offset") == 1
    assert b"\x0fx-stream-offsetl" + struct.pack(">q", 7) in header
