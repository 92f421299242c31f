"""STOMP codec from byte fixtures: whole, byte by byte, with trailing bytes (h11 test_io style)."""
from __future__ import annotations

import pytest

from manifold.adapters.stomp.codec import (NEED_DATA, Frame, FrameCodec, FrameError, escape, serialize,
                                  unescape)


def feed_all(data: bytes, codec: FrameCodec | None = None) -> list:
    codec = codec or FrameCodec()
    codec.receive_data(data)
    out = []
    while (event := codec.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def feed_bytewise(data: bytes, codec: FrameCodec | None = None) -> list:
    codec = codec or FrameCodec()
    out = []
    for i in range(len(data)):
        codec.receive_data(data[i:i + 1])
        while (event := codec.next_event()) is not NEED_DATA:
            out.append(event)
    return out


# (name, wire bytes, expected frames, codec version)
FIXTURES = [
    ("connect-1.0", b"CONNECT\nlogin:guest\npasscode:guest\n\n\x00",
     [Frame("CONNECT", {"login": "guest", "passcode": "guest"})], "1.0"),
    ("no-headers", b"DISCONNECT\n\n\x00", [Frame("DISCONNECT")], "1.2"),
    ("body-until-nul", b"SEND\ndestination:/queue/a\n\nhello world\x00",
     [Frame("SEND", {"destination": "/queue/a"}, b"hello world")], "1.2"),
    ("content-length-with-nul",
     b"SEND\ndestination:/queue/a\ncontent-length:5\n\nh\x00l\x00o\x00",
     [Frame("SEND", {"destination": "/queue/a", "content-length": "5"}, b"h\x00l\x00o")], "1.1"),
    ("content-length-zero", b"SEND\ndestination:/q\ncontent-length:0\n\n\x00",
     [Frame("SEND", {"destination": "/q", "content-length": "0"}, b"")], "1.2"),
    ("crlf-1.2", b"SEND\r\ndestination:/queue/a\r\nx:y\r\n\r\nbody\x00",
     [Frame("SEND", {"destination": "/queue/a", "x": "y"}, b"body")], "1.2"),
    ("heartbeats-between", b"\n\n\r\nSEND\ndestination:/a\n\nb1\x00\n\r\n\nSEND\ndestination:/b\n\nb2\x00\n",
     [Frame("SEND", {"destination": "/a"}, b"b1"), Frame("SEND", {"destination": "/b"}, b"b2")],
     "1.2"),
    ("repeated-header-first-wins", b"SEND\ndestination:/a\nfoo:1\nfoo:2\n\n\x00",
     [Frame("SEND", {"destination": "/a", "foo": "1"})], "1.2"),
    ("escapes-1.2", b"SEND\ndestination:/a\nk\\cey:a\\nb\\cc\\\\d\\re\n\n\x00",
     [Frame("SEND", {"destination": "/a", "k:ey": "a\nb:c\\d\re"})], "1.2"),
    ("escapes-1.1", b"SEND\ndestination:/a\nk:a\\nb\\cc\\\\d\n\n\x00",
     [Frame("SEND", {"destination": "/a", "k": "a\nb:c\\d"})], "1.1"),
    ("no-escapes-1.0", b"SEND\ndestination:/a\nk:a\\nb\\c\n\n\x00",
     [Frame("SEND", {"destination": "/a", "k": "a\\nb\\c"})], "1.0"),
    ("connect-never-unescaped", b"CONNECT\npasscode:a\\cb\n\n\x00",
     [Frame("CONNECT", {"passcode": "a\\cb"})], "1.2"),
    ("colon-in-value", b"SEND\ndestination:/a\nurl:http://x:1/\n\n\x00",
     [Frame("SEND", {"destination": "/a", "url": "http://x:1/"})], "1.0"),
    ("utf8", "SEND\ndestination:/queue/caf\u00e9\nk:\u00fc\n\n\u00e9\x00".encode(),
     [Frame("SEND", {"destination": "/queue/caf\u00e9", "k": "\u00fc"}, "\u00e9".encode())],
     "1.2"),
]


@pytest.mark.parametrize("name,wire,expected,version", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_whole(name, wire, expected, version):
    assert feed_all(wire, FrameCodec(version=version)) == expected


@pytest.mark.parametrize("name,wire,expected,version", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_byte_by_byte(name, wire, expected, version):
    assert feed_bytewise(wire, FrameCodec(version=version)) == expected


@pytest.mark.parametrize("name,wire,expected,version", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_trailing_bytes_wait(name, wire, expected, version):
    codec = FrameCodec(version=version)
    tail = b"SEND\ndestination:/x\n\npart"
    assert feed_all(wire + tail, codec) == expected
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"ial\x00")
    assert codec.next_event() == Frame("SEND", {"destination": "/x"}, b"partial")


def test_every_prefix_needs_data():
    wire = b"SEND\ndestination:/a\ncontent-length:3\n\na\x00b\x00"
    for i in range(len(wire)):
        codec = FrameCodec()
        codec.receive_data(wire[:i])
        assert codec.next_event() is NEED_DATA


def test_heartbeats_counted():
    codec = FrameCodec()
    codec.receive_data(b"\n\r\n\n")
    assert codec.next_event() is NEED_DATA
    assert codec.heartbeats == 3
    assert codec.buffered == 0


def test_lone_cr_waits_for_lf():
    codec = FrameCodec()
    codec.receive_data(b"\r")
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"\n")
    assert codec.next_event() is NEED_DATA
    assert codec.heartbeats == 1


@pytest.mark.parametrize("wire,message", [
    (b"SEND\ndestination:/a\ncontent-length:3\n\nabcX", "Bad frame"),
    (b"SEND\ndestination:/a\ncontent-length:x\n\n\x00", "Bad content-length"),
    (b"SEND\ndestination:/a\nnocolon\n\n\x00", "Bad header"),
    (b"SEND\ndestination:/a\nk:bad\\t\n\n\x00", "Bad header"),
    (b"SEND\ndestination:/a\nk:bad\\\n\n\x00", "Bad header"),
    (b"\xff\xfe\n\n\x00", "Bad frame"),
    (b"\rX", "Bad frame"),
])
def test_malformed(wire, message):
    codec = FrameCodec(version="1.2")
    codec.receive_data(wire)
    with pytest.raises(FrameError) as info:
        codec.next_event()
    assert info.value.message == message


def test_bad_escape_keeps_receipt_of_earlier_headers():
    codec = FrameCodec(version="1.2")
    codec.receive_data(b"SEND\nreceipt:77\nk:\\x\n\n\x00")
    with pytest.raises(FrameError) as info:
        codec.next_event()
    assert info.value.headers == {"receipt": "77"}


def test_frame_over_limit_by_content_length():
    codec = FrameCodec(max_frame_bytes=100)
    codec.receive_data(b"SEND\nreceipt:9\ncontent-length:200\n\n")
    with pytest.raises(FrameError) as info:
        codec.next_event()
    assert info.value.message == "Frame too large"
    assert info.value.headers["receipt"] == "9"


def test_frame_over_limit_without_content_length():
    codec = FrameCodec(max_frame_bytes=100)
    codec.receive_data(b"SEND\ndestination:/a\n\n" + b"x" * 50)
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"x" * 60)
    with pytest.raises(FrameError):
        codec.next_event()


def test_header_block_over_limit():
    codec = FrameCodec(max_frame_bytes=100)
    codec.receive_data(b"SEND\n" + b"k:" + b"v" * 200)
    with pytest.raises(FrameError):
        codec.next_event()


def test_too_many_headers():
    codec = FrameCodec(max_headers=3)
    codec.receive_data(b"SEND\na:1\nb:2\nc:3\nd:4\n\n\x00")
    with pytest.raises(FrameError) as info:
        codec.next_event()
    assert info.value.message == "Too many headers"


def test_large_body_in_pieces_is_not_rescanned():
    codec = FrameCodec()
    codec.receive_data(b"SEND\ndestination:/a\n\n")
    for _ in range(1000):
        codec.receive_data(b"y" * 100)
        assert codec.next_event() is NEED_DATA
    codec.receive_data(b"\x00")
    frame = codec.next_event()
    assert frame.body == b"y" * 100000


# ------------------------------------------------------------------ serialize
def test_serialize_escapes_per_version():
    frame = Frame("MESSAGE", {"k:1": "a\nb:c\\d\re"}, b"x")
    assert serialize(frame, "1.2") == b"MESSAGE\nk\\c1:a\\nb\\cc\\\\d\\re\n\nx\x00"
    assert serialize(frame, "1.1") == b"MESSAGE\nk\\c1:a\\nb\\cc\\\\d\re\n\nx\x00"
    # 1.0 has no escapes; a raw LF would split the header, so it is blanked
    assert serialize(frame, "1.0") == b"MESSAGE\nk:1:a b:c\\d e\n\nx\x00"


def test_serialize_connected_never_escaped():
    frame = Frame("CONNECTED", {"server": "a:b"})
    assert serialize(frame, "1.2") == b"CONNECTED\nserver:a:b\n\n\x00"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_escape_roundtrip(version):
    value = "a\\b:c\nd" + ("\r" if version == "1.2" else "")
    assert unescape(escape(value, version), version) == value


def test_serialize_then_parse_binary_body():
    frame = Frame("SEND", {"destination": "/q", "content-length": "4"}, b"\x00\x01\x00\xff")
    assert feed_all(serialize(frame, "1.2"), FrameCodec(version="1.2")) == [frame]
