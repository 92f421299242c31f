"""Hypothesis: STOMP headers -> message properties -> MESSAGE headers gives the headers back."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from manifold.adapters.stomp.mapping import (FRAME_HEADERS, MESSAGE_RESERVED, DestinationError,
                                    destination_of, headers_to_properties, parse_destination,
                                    properties_to_headers)

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=10)
NAMES = TEXT.filter(lambda k: k not in MESSAGE_RESERVED and k not in FRAME_HEADERS)


@st.composite
def send_headers(draw):
    headers = draw(st.dictionaries(NAMES, TEXT, max_size=6))
    for key in ("content-type", "content-encoding", "correlation-id", "reply-to", "type",
                "user-id", "app-id", "amqp-message-id", "expiration"):
        if draw(st.booleans()):
            headers[key] = draw(TEXT)
    if draw(st.booleans()):
        headers["priority"] = str(draw(st.integers(0, 255)))
    if draw(st.booleans()):
        headers["timestamp"] = str(draw(st.integers(0, 2**40)))
    if draw(st.booleans()):
        headers["persistent"] = draw(st.sampled_from(["true", "false"]))
    return headers


@settings(max_examples=150, deadline=None)
@given(send_headers())
def test_headers_roundtrip_through_properties(headers):
    props = headers_to_properties(dict(headers, destination="/queue/x", receipt="r"))
    assert dict(properties_to_headers(props)) == headers


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["", "amq.topic", "amq.direct", "ex"]), TEXT.filter(lambda k: "/" not in k))
def test_message_destination_parses_back(exchange, key):
    destination = destination_of(exchange, key)
    try:
        kind, name, rest = parse_destination(destination)
    except DestinationError:
        assert key == "" and exchange in ("", "amq.topic")  # /queue/ and /topic/ need a name
        return
    if exchange == "":
        assert (kind, name) == ("queue", key)
    elif exchange == "amq.topic":
        assert (kind, name) == ("topic", key)
    else:
        assert (kind, name, rest) == ("exchange", exchange, key)
