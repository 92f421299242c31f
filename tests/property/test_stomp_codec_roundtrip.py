"""Hypothesis: serialize then parse gives the frame back, for any split of the bytes."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from manifold.adapters.stomp.codec import NEED_DATA, Frame, FrameCodec, FrameError, serialize

COMMANDS = st.sampled_from(["SEND", "SUBSCRIBE", "MESSAGE", "ACK", "NACK", "BEGIN", "RECEIPT",
                            "ERROR"])
# Header text: anything but NUL; 1.1 cannot carry CR (no escape for it), 1.2 can.
TEXT_12 = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                  max_size=12)
TEXT_11 = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
                  max_size=12)
KEY_12 = TEXT_12.filter(lambda k: k != "content-length")
KEY_11 = TEXT_11.filter(lambda k: k != "content-length")


@st.composite
def frames(draw, version):
    key, text = (KEY_12, TEXT_12) if version == "1.2" else (KEY_11, TEXT_11)
    headers = draw(st.dictionaries(key, text, max_size=6))
    body = draw(st.binary(max_size=64))
    if draw(st.booleans()) or b"\x00" in body:
        headers["content-length"] = str(len(body))
    return Frame(draw(COMMANDS), headers, body)


def parse_in_pieces(data: bytes, cuts: list[int], version: str) -> list:
    codec = FrameCodec(version=version)
    out = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:]):
        codec.receive_data(data[a:b])
        while (event := codec.next_event()) is not NEED_DATA:
            out.append(event)
    return out


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["1.1", "1.2"]).flatmap(
    lambda v: st.tuples(st.just(v), st.lists(frames(v), min_size=1, max_size=4))),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    st.lists(st.sampled_from([b"", b"\n", b"\r\n"]), min_size=4, max_size=4))
def test_roundtrip_any_split(version_frames, cuts, eols):
    version, sent = version_frames
    data = b"".join(serialize(f, version) + eols[i % 4] for i, f in enumerate(sent))
    assert parse_in_pieces(data, cuts, version) == sent


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_garbage_never_hangs_or_crashes_unexpectedly(data, cuts):
    """Arbitrary bytes either parse, wait for more, or raise FrameError: never anything else."""
    try:
        parse_in_pieces(data, cuts, "1.2")
    except FrameError:
        pass
