"""Hypothesis: AMQP field tables and basic properties round-trip exactly; any split of a frame
stream decodes to the same events."""
from __future__ import annotations

import datetime
import decimal
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import decode as pdecode
from pamqp import encode as pencode

from manifold.adapters.amqp import codec, fields
from manifold.adapters.amqp.codec import NEED_DATA, PROTOCOL_HEADER, Decoder
from manifold.broker.message import Properties

UTC = datetime.timezone.utc

keys = st.text(min_size=0, max_size=20).filter(lambda k: len(k.encode()) <= 255)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=50),
    st.binary(max_size=30).map(bytearray),
    st.none(),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(9999, 1, 1))
    .map(lambda d: d.replace(microsecond=0, tzinfo=UTC)),
    st.builds(lambda m, s: decimal.Decimal(m).scaleb(-s),
              st.integers(min_value=-2 ** 31, max_value=2 ** 31 - 1),
              st.integers(min_value=0, max_value=20)),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)), max_leaves=20)
tables = st.dictionaries(keys, values, max_size=8)


def canon(value):
    """Type-aware form: True must not come back as 1, nor a table as a list."""
    if isinstance(value, dict):
        return ("F", tuple((k, canon(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("A", tuple(canon(v) for v in value))
    return (type(value).__name__, value)


@given(tables)
def test_field_tables_round_trip(table):
    data = fields.encode_table(table)
    decoded, end = fields.decode_table(data)
    assert end == len(data)
    assert canon(decoded) == canon(table)


@given(tables)
def test_pamqp_reads_our_tables(table):
    # an independent decoder agrees on everything it represents exactly (pamqp reads 'T' as
    # seconds-or-milliseconds and narrows nothing on decode)
    data = fields.encode_table(table)
    _, theirs = pdecode.field_table(data)
    assert len(theirs) == len(table)


simple = st.one_of(st.booleans(), st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1),
                   st.text(max_size=30), st.none(), st.binary(max_size=10).map(bytearray))
simple_tables = st.dictionaries(st.text(max_size=10).filter(lambda k: len(k.encode()) <= 128),
                                st.recursive(simple, lambda inner: st.one_of(
                                    st.lists(inner, max_size=4),
                                    st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                                    max_leaves=10), max_size=6)


@given(simple_tables)
def test_we_read_pamqp_tables(table):
    # what a pamqp-based client (aiormq, aio-pika) sends decodes to the same values
    data = pencode.field_table(table)
    decoded, end = fields.decode_table(data)
    assert end == len(data)
    assert canon(decoded) == canon(_sorted(table))


def _sorted(value):
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


short = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
octet = st.integers(min_value=0, max_value=255)
properties = st.builds(
    Properties,
    content_type=st.none() | short, content_encoding=st.none() | short,
    headers=st.none() | tables, delivery_mode=st.none() | octet, priority=st.none() | octet,
    correlation_id=st.none() | short, reply_to=st.none() | short,
    expiration=st.none() | short, message_id=st.none() | short,
    timestamp=st.none() | st.integers(min_value=0, max_value=2 ** 64 - 1),
    type=st.none() | short, user_id=st.none() | short, app_id=st.none() | short)


@given(properties)
def test_basic_properties_round_trip(props):
    raw = fields.encode_properties(props)
    decoded = fields.decode_properties(raw, 0, len(raw))
    assert decoded.as_dict().keys() == props.as_dict().keys()
    for name, value in props.as_dict().items():
        got = getattr(decoded, name)
        assert (canon(got) == canon(value)) if name == "headers" else got == value


def publish_bytes(channel: int, routing_key: str, body: bytes, props: Properties) -> bytes:
    method = (b"\x00\x3c\x00\x28\x00\x00" + fields.shortstr("") + fields.shortstr(routing_key) +
              b"\x00")
    header = fields.content_header_payload(props, len(body))
    out = [codec.frame(1, channel, method), codec.frame(2, channel, header)]
    for i in range(0, len(body), 4088):
        out.append(codec.frame(3, channel, body[i:i + 4088]))
    return b"".join(out)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=3), short,
                          st.binary(max_size=9000), properties), min_size=1, max_size=4),
       st.lists(st.integers(min_value=1, max_value=5000), max_size=6))
def test_any_split_gives_the_same_publishes(messages, cuts):
    data = PROTOCOL_HEADER + b"".join(publish_bytes(*m) for m in messages)
    d = Decoder(frame_max=4096)
    events = []
    pos = 0
    for cut in cuts + [len(data)]:
        d.receive_data(data[pos:pos + cut])
        pos += cut
        while (event := d.next_event()) is not NEED_DATA:
            events.append(event)
    d.receive_data(data[pos:])
    while (event := d.next_event()) is not NEED_DATA:
        events.append(event)
    publishes = events[1:]
    assert [(e.channel, e.routing_key, e.body) for e in publishes] == \
        [(c, rk, body) for c, rk, body, _ in messages]
    for event, (_, _, _, props) in zip(publishes, messages):
        assert canon(event.properties.headers) == canon(props.headers)
        assert event.properties.message_id == props.message_id


@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_anything_but_frame_errors(junk):
    d = Decoder()
    d.receive_data(PROTOCOL_HEADER + junk)
    try:
        while d.next_event() is not NEED_DATA:
            pass
    except codec.FrameError as err:
        assert err.code in (501, 502, 503, 505, 540)


def test_struct_sizes_are_what_the_spec_says():
    assert struct.calcsize(">BHI") == 7 and codec.FRAME_OVERHEAD == 8
