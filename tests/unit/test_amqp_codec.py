"""AMQP 0-9-1 codec from byte fixtures: fed whole, byte by byte, and with trailing bytes.

Fixtures are spelled out as bytes (frame type, channel, size, payload, 0xCE) so that the codec is
checked against the spec, not against itself."""
from __future__ import annotations

import datetime
import decimal
import struct

import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from manifold.adapters.amqp import codec, fields
from manifold.adapters.amqp.codec import (NEED_DATA, PROTOCOL_HEADER, Ack, Decoder, FrameError, Heartbeat,
                                 Method, ProtocolHeaderMismatch, ProtocolHeaderReceived, Publish)
from manifold.broker.message import Message, Properties

# Basic.Publish(exchange="ex", routing_key="rk", mandatory=True) on channel 1
PUBLISH = (b"\x01\x00\x01\x00\x00\x00\x0d"            # method frame, channel 1, 13 bytes
           b"\x00\x3c\x00\x28"                        # class 60 method 40
           b"\x00\x00"                                # reserved-1
           b"\x02ex" b"\x02rk"                        # exchange, routing key
           b"\x01"                                    # mandatory
           b"\xce")
# content header: class 60, weight 0, body size 5, flags content-type + delivery-mode
HEADER = (b"\x02\x00\x01\x00\x00\x00\x1a"
          b"\x00\x3c\x00\x00" b"\x00\x00\x00\x00\x00\x00\x00\x05"
          b"\x90\x00" b"\x0atext/plain" b"\x02"
          b"\xce")
BODY = b"\x03\x00\x01\x00\x00\x00\x05hello\xce"
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
# Basic.Ack(delivery_tag=7, multiple=True) on channel 2
ACK = b"\x01\x00\x02\x00\x00\x00\x0d\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x07\x01\xce"
# Queue.Declare(queue="q", durable=True) on channel 1
DECLARE = (b"\x01\x00\x01\x00\x00\x00\x0d" b"\x00\x32\x00\x0a" b"\x00\x00" b"\x01q" b"\x02"
           b"\x00\x00\x00\x00" b"\xce")

STREAM = PROTOCOL_HEADER + PUBLISH + HEADER + BODY + HEARTBEAT + ACK + DECLARE


def events_of(decoder: Decoder) -> list:
    out = []
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)


def check_stream_events(events: list) -> None:
    assert [type(e) for e in events] == [ProtocolHeaderReceived, Publish, Heartbeat, Ack, Method]
    publish = events[1]
    assert (publish.channel, publish.exchange, publish.routing_key) == (1, "ex", "rk")
    assert publish.mandatory and not publish.immediate
    assert publish.body == b"hello" and publish.body_size == 5
    assert publish.properties == Properties(content_type="text/plain", delivery_mode=2)
    assert publish.header == HEADER[7:-1]
    assert publish.exchange_and_key == b"\x02ex\x02rk"
    ack = events[3]
    assert (ack.channel, ack.delivery_tag, ack.multiple) == (2, 7, True)
    declare = events[4]
    assert declare.channel == 1 and isinstance(declare.method, C.Queue.Declare)
    assert declare.method.queue == "q" and declare.method.durable
    assert (declare.class_id, declare.method_id) == (50, 10)


def test_whole_stream():
    d = Decoder()
    d.receive_data(STREAM)
    check_stream_events(events_of(d))
    assert d.buffered == 0


def test_byte_by_byte():
    d = Decoder()
    events = []
    for i in range(len(STREAM)):
        d.receive_data(STREAM[i:i + 1])
        events += events_of(d)
    check_stream_events(events)


def test_trailing_partial_frame_waits():
    d = Decoder()
    d.receive_data(STREAM + PUBLISH[:5])
    check_stream_events(events_of(d))
    assert d.buffered == 5
    d.receive_data(PUBLISH[5:] + HEADER + BODY)
    [again] = events_of(d)
    assert again.body == b"hello"


def test_same_publish_twice_uses_the_fast_path_and_gives_equal_events():
    d = Decoder()
    d.receive_data(PROTOCOL_HEADER + (PUBLISH + HEADER + BODY) * 3)
    events = events_of(d)[1:]
    assert len(events) == 3
    assert all(e.body == b"hello" and e.routing_key == "rk" for e in events)
    assert events[1].properties is events[2].properties  # decoded once


def test_every_split_point_of_two_publishes():
    data = PROTOCOL_HEADER + (PUBLISH + HEADER + BODY) * 2
    for cut in range(len(data)):
        d = Decoder()
        d.receive_data(data[:cut])
        events = events_of(d)
        d.receive_data(data[cut:])
        events += events_of(d)
        assert [type(e) for e in events] == [ProtocolHeaderReceived, Publish, Publish], cut


def test_body_split_across_frames_and_channels_interleaved():
    d = Decoder()
    head = lambda ch, n: (b"\x02" + struct.pack(">HI", ch, 14) + b"\x00\x3c\x00\x00" +
                          struct.pack(">Q", n) + b"\x00\x00\xce")
    body = lambda ch, data: b"\x03" + struct.pack(">HI", ch, len(data)) + data + b"\xce"
    pub = lambda ch: PUBLISH[:1] + struct.pack(">H", ch) + PUBLISH[3:]
    d.receive_data(PROTOCOL_HEADER + pub(1) + head(1, 6) + pub(2) + head(2, 2) + body(1, b"abc")
                   + body(2, b"xy") + body(1, b"def"))
    events = events_of(d)[1:]
    assert [(e.channel, e.body) for e in events] == [(2, b"xy"), (1, b"abcdef")]


def test_empty_body_needs_no_body_frame():
    d = Decoder()
    empty_header = (b"\x02\x00\x01\x00\x00\x00\x0e" b"\x00\x3c\x00\x00" + b"\x00" * 8 +
                    b"\x00\x00\xce")
    d.receive_data(PROTOCOL_HEADER + PUBLISH + empty_header)
    [_, event] = events_of(d)
    assert event.body == b"" and event.properties == Properties()


def test_body_over_the_limit_is_discarded_and_reported():
    d = Decoder(max_body=3)
    d.receive_data(PROTOCOL_HEADER + PUBLISH + HEADER + BODY + ACK)
    [_, publish, ack] = events_of(d)
    assert publish.body is None and publish.body_size == 5
    assert isinstance(ack, Ack)


@pytest.mark.parametrize("data", [b"AMQP\x00\x00\x09\x00", b"AMQP\x01\x01\x00\x0a",
                                  b"HTTP/1.1 200", b"\x01\x00\x00\x00"])
def test_wrong_protocol_header(data):
    d = Decoder()
    d.receive_data(data)
    with pytest.raises(ProtocolHeaderMismatch):
        events_of(d)


def test_partial_protocol_header_waits():
    d = Decoder()
    d.receive_data(b"AMQ")
    assert d.next_event() is NEED_DATA


def error_of(data: bytes, **kw) -> FrameError:
    d = Decoder(**kw)
    d.receive_data(PROTOCOL_HEADER + data)
    d.next_event()
    with pytest.raises(FrameError) as err:
        events_of(d)
    return err.value


def test_bad_frame_end_is_501():
    err = error_of(ACK[:-1] + b"\x00")
    assert err.code == 501 and "frame end" in err.text


def test_oversized_frame_is_501_before_the_payload_arrives():
    err = error_of(b"\x03\x00\x01\x00\x10\x00\x00", frame_max=4096)
    assert err.code == 501 and "frame_max" in err.text


def test_unknown_frame_type_is_501():
    assert error_of(b"\x05\x00\x00\x00\x00\x00\x00\xce").code == 501


def test_heartbeat_on_a_channel_is_501():
    assert error_of(b"\x08\x00\x01\x00\x00\x00\x00\xce").code == 501


def test_content_header_without_publish_is_505():
    assert error_of(HEADER).code == 505


def test_body_without_header_is_505():
    assert error_of(PUBLISH + BODY).code == 505


def test_method_while_content_expected_is_505():
    assert error_of(PUBLISH + ACK[:1] + b"\x00\x01" + ACK[3:]).code == 505


def test_body_longer_than_announced_is_501():
    long_body = b"\x03\x00\x01\x00\x00\x00\x06hello!\xce"
    assert error_of(PUBLISH + HEADER + long_body).code == 501


def test_unknown_method_is_540():
    err = error_of(b"\x01\x00\x01\x00\x00\x00\x04\x00\x3c\x03\xe7\xce")
    assert err.code == 540 and (err.class_id, err.method_id) == (60, 999)


def test_truncated_method_is_502():
    err = error_of(b"\x01\x00\x01\x00\x00\x00\x06\x00\x32\x00\x0a\x00\x00\xce")
    assert err.code == 502 and (err.class_id, err.method_id) == (50, 10)


def test_server_only_method_from_client_is_503():
    assert error_of(pframe.marshal(C.Basic.Deliver("t", 1, False, "", "k"), 1)).code == 503


def test_bad_properties_are_502():
    bad = HEADER[:21] + b"\xff\xff" + HEADER[23:]
    assert error_of(PUBLISH + bad).code == 502


# ---------------------------------------------------------------------- encoding
def test_deliver_frames_match_the_spec_bytes():
    out: list = []
    header = fields.content_header_payload(Properties(content_type="text/plain"), 2)
    codec.deliver_frames(1, fields.shortstr("ctag"), 9, True, b"\x02ex\x02rk", header, b"hi",
                         131072, out)
    data = b"".join(out)
    assert data.startswith(b"\x01\x00\x01\x00\x00\x00\x18\x00\x3c\x00\x3c\x04ctag"
                           b"\x00\x00\x00\x00\x00\x00\x00\x09\x01\x02ex\x02rk\xce")
    used, channel, deliver = pframe.unmarshal(data)
    assert channel == 1 and isinstance(deliver, C.Basic.Deliver)
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered) == ("ctag", 9, True)
    data = data[used:]
    used, _, content = pframe.unmarshal(data)
    assert content.body_size == 2 and content.properties.content_type == "text/plain"
    data = data[used:]
    used, _, body = pframe.unmarshal(data)
    assert body.value == b"hi" and used == len(data)


def test_prefix_and_cached_tail_build_the_same_bytes_as_deliver_frames():
    # the delivery fast path of adapters/amqp/channel.py against the general one
    message = Message("e", "k", b"abc", Properties(message_id="m"))
    encoded = codec.Encoded.of(message)
    out: list = []
    codec.deliver_frames(5, fields.shortstr("c"), 2, False, encoded.exchange_and_key,
                         encoded.header, b"abc", 131072, out)
    fast = (codec.deliver_prefix(5, fields.shortstr("c"), len(encoded.exchange_and_key)) +
            struct.pack(">QB", 2, False) + encoded.tail_for(5, 3) + b"abc" + b"\xce")
    assert fast == b"".join(bytes(x) for x in out)


def test_content_larger_than_frame_max_is_split():
    out: list = []
    body = bytes(range(256)) * 40  # 10240 bytes
    codec.content_frames(3, fields.content_header_payload(Properties(), len(body)), body, 4096,
                         out)
    data = b"".join(bytes(x) for x in out)
    frames = []
    while data:
        used, channel, value = pframe.unmarshal(data)
        assert channel == 3 and used <= 4096
        frames.append(value)
        data = data[used:]
    assert frames[0].body_size == len(body)
    assert [len(f.value) for f in frames[1:]] == [4088, 4088, 2064]
    assert b"".join(f.value for f in frames[1:]) == body


def test_properties_round_trip_every_field():
    props = Properties(content_type="a/b", content_encoding="gzip",
                       headers={"k": "v", "n": 1, "x-death": [{"count": 2}]}, delivery_mode=2,
                       priority=9, correlation_id="c", reply_to="r", expiration="100",
                       message_id="m", timestamp=1700000000, type="t", user_id="u",
                       app_id="a")
    raw = fields.encode_properties(props)
    assert fields.decode_properties(raw, 0, len(raw)) == props
    # and pamqp, an independent decoder, reads the same
    from pamqp.header import ContentHeader
    payload = fields.content_header_payload(props, 0)
    ch = ContentHeader()
    ch.unmarshal(payload)
    assert ch.properties.correlation_id == "c" and ch.properties.headers["n"] == 1
    assert ch.properties.priority == 9 and ch.properties.app_id == "a"


def test_field_table_fixture_of_every_type():
    table = (b"\x01tt\x01" b"\x01bb\xff" b"\x01BB\xff" b"\x01ss\xff\xfe" b"\x01uu\xff\xfe"
             b"\x01II\xff\xff\xff\xfe" b"\x01ii\xff\xff\xff\xfe"
             b"\x01ll\xff\xff\xff\xff\xff\xff\xff\xfd" b"\x01ff\x3f\xc0\x00\x00"
             b"\x01dd\x3f\xf8\x00\x00\x00\x00\x00\x00" b"\x01DD\x02\x00\x00\x00\x7b"
             b"\x01SS\x00\x00\x00\x02hi" b"\x01AA\x00\x00\x00\x02t\x00"
             b"\x01TT\x00\x00\x00\x00\x00\x00\x00\x3c" b"\x01FF\x00\x00\x00\x00" b"\x01VV"
             b"\x01xx\x00\x00\x00\x01\x00")
    data = struct.pack(">I", len(table)) + table
    decoded, end = fields.decode_table(data)
    assert end == len(data)
    assert decoded == {"t": True, "b": -1, "B": 255, "s": -2, "u": 65534, "I": -2,
                       "i": 4294967294, "l": -3, "f": 1.5, "d": 1.5,
                       "D": decimal.Decimal("1.23"), "S": "hi", "A": [False],
                       "T": datetime.datetime(1970, 1, 1, 0, 1, tzinfo=datetime.timezone.utc),
                       "F": {}, "V": None, "x": bytearray(b"\x00")}


def test_field_table_errors():
    for bad in (b"\x00\x00\x00\x05\x01kZ\x00\x00",      # unknown type
                b"\x00\x00\x00\x09\x01kS\x00\x00\x00\x09",  # string past the end
                b"\x00\x00\x00\x02\x01k"):                 # entry without a value
        with pytest.raises((ValueError, struct.error, IndexError)):
            fields.decode_table(bad)


def test_messages_from_other_protocols_always_encode():
    from manifold.broker.message import Message
    long_topic = "a/" * 200  # an MQTT topic longer than an AMQP short string
    props = Properties(content_type="x" * 300, headers={"set": {1}, "huge": 2 ** 70,
                                                        "k" * 300: "v"},
                       priority="5", timestamp=-3)
    encoded = codec.Encoded.of(Message("amq.topic", long_topic, b"body", props))
    decoded = fields.decode_properties(encoded.header, 12, len(encoded.header))
    assert decoded.content_type == "x" * 255
    assert decoded.headers["set"] == "{1}" and decoded.headers["huge"] == str(2 ** 70)
    assert decoded.priority == 5 and decoded.timestamp == 0
    assert encoded.exchange_and_key.startswith(b"\x09amq.topic\xff")


def test_unfinished_content_over_many_channels_is_bounded():
    d = Decoder(frame_max=4096, max_body=5000)
    assert d.max_held == 1024 * 1024
    data = PROTOCOL_HEADER
    for ch in range(1, 400):
        chb = struct.pack(">H", ch)
        data += PUBLISH[:1] + chb + PUBLISH[3:]
        data += (b"\x02" + chb + b"\x00\x00\x00\x0e\x00\x3c\x00\x00" + struct.pack(">Q", 5000) +
                 b"\x00\x00\xce")
        data += b"\x03" + chb + struct.pack(">I", 4000) + b"z" * 4000 + b"\xce"
    d.receive_data(data)
    with pytest.raises(FrameError) as err:
        events_of(d)
    assert err.value.code == 506


def test_publishes_with_varying_routing_keys_decode_in_one_pass():
    d = Decoder()
    data = PROTOCOL_HEADER
    for key in (b"a.b", b"c", b"a.b", b"dd.e"):
        method = b"\x00\x3c\x00\x28\x00\x00\x00" + bytes((len(key),)) + key + b"\x00"
        data += codec.frame(1, 1, method) + HEADER + BODY
    d.receive_data(data)
    events = events_of(d)[1:]
    assert [e.routing_key for e in events] == ["a.b", "c", "a.b", "dd.e"]
    assert all(e.body == b"hello" for e in events)
    assert events[0].encoded is not events[1].encoded
    assert events[0].encoded.header is events[1].encoded.header  # same header bytes, kept once


def test_integers_we_write_are_longs():
    # x-death count and x-stream-offset must be 'l' (Java clients read them as Long)
    assert fields.encode_table({"n": 1}) == b"\x00\x00\x00\x0b\x01nl" + b"\x00" * 7 + b"\x01"
