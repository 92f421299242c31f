"""Hypothesis: every MQTT packet survives serialize -> decode (3.1.1 and 5.0), whatever the split of
the byte stream; topic mapping round-trips; the MQTT matcher agrees with the AMQP topic trie on the
mapped filter for topics that do not start with ``$``."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from manifold.adapters.mqtt import codec as c
from manifold.adapters.mqtt.decoder import MqttDecoder
from manifold.adapters.mqtt import topics
from manifold.broker.topic_trie import topic_matches

# MQTT strings: valid UTF-8 without U+0000 and without surrogates.
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=20)
topic_text = st.text(st.characters(blacklist_categories=("Cs",),
                                   blacklist_characters="\x00+#"), min_size=1, max_size=20)
pid = st.integers(1, 65535)
u16 = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)
pairs = st.lists(st.tuples(text, text), max_size=3)


def props(*names: str):
    kinds = {
        "payload_format_indicator": st.integers(0, 1), "message_expiry_interval": u32,
        "content_type": text, "response_topic": topic_text, "correlation_data": st.binary(max_size=20),
        "subscription_identifier": st.lists(st.integers(1, 268_435_455), min_size=1, max_size=2),
        "session_expiry_interval": u32, "receive_maximum": st.integers(1, 65535),
        "topic_alias_maximum": u16, "topic_alias": st.integers(1, 65535),
        "maximum_packet_size": st.integers(1, 2**32 - 1), "reason_string": text,
        "user_property": pairs.filter(bool), "will_delay_interval": u32,
        "assigned_client_identifier": text, "server_keep_alive": u16,
        "request_problem_information": st.integers(0, 1),
    }
    return st.fixed_dictionaries({}, optional={n: kinds[n] for n in names})


PUBLISH_PROPS = ("payload_format_indicator", "message_expiry_interval", "content_type",
                 "response_topic", "correlation_data", "subscription_identifier", "topic_alias",
                 "user_property")


@st.composite
def publishes(draw, v5: bool):
    qos = draw(st.integers(0, 2))
    return c.Publish(draw(topic_text), draw(st.binary(max_size=300)), qos, draw(st.booleans()),
                     draw(st.booleans()) if qos else False, draw(pid) if qos else None,
                     draw(props(*PUBLISH_PROPS)) if v5 else {})


@st.composite
def client_packets(draw, v5: bool):
    kind = draw(st.sampled_from(["publish", "ack", "subscribe", "unsubscribe", "ping",
                                 "disconnect"]))
    if kind == "publish":
        return draw(publishes(v5))
    if kind == "ack":
        cls = draw(st.sampled_from([c.Puback, c.Pubrec, c.Pubrel, c.Pubcomp]))
        if v5:
            return cls(draw(pid), draw(st.sampled_from([0, 0x10, 0x80, 0x92])),
                       draw(props("reason_string", "user_property")))
        return cls(draw(pid))
    if kind == "subscribe":
        subs = draw(st.lists(st.tuples(topic_text, st.builds(
            c.SubscriptionOptions, st.integers(0, 2),
            st.booleans() if v5 else st.just(False), st.booleans() if v5 else st.just(False),
            st.integers(0, 2) if v5 else st.just(0))), min_size=1, max_size=4))
        p = draw(props("user_property")) if v5 else {}
        if v5 and draw(st.booleans()):
            p["subscription_identifier"] = [draw(st.integers(1, 268_435_455))]
        return c.Subscribe(draw(pid), subs, p)
    if kind == "unsubscribe":
        return c.Unsubscribe(draw(pid), draw(st.lists(topic_text, min_size=1, max_size=4)),
                             draw(props("user_property")) if v5 else {})
    if kind == "ping":
        return c.Pingreq()
    if v5:
        return c.Disconnect(draw(st.sampled_from([0, 4, 0x80])),
                            draw(props("session_expiry_interval", "reason_string")))
    return c.Disconnect()


@st.composite
def connects(draw, level: int):
    v5 = level == 5
    will = None
    if draw(st.booleans()):
        will = c.Will(draw(topic_text), draw(st.binary(max_size=50)), draw(st.integers(0, 2)),
                      draw(st.booleans()),
                      draw(props("will_delay_interval", "content_type", "user_property"))
                      if v5 else {})
    username = draw(st.none() | text)
    password = draw(st.none() | st.binary(max_size=20)) if (username is not None or v5) else None
    return c.Connect(draw(text), protocol_level=level, clean_start=draw(st.booleans()),
                     keep_alive=draw(u16), will=will, username=username, password=password,
                     properties=draw(props("session_expiry_interval", "receive_maximum",
                                           "maximum_packet_size", "topic_alias_maximum",
                                           "request_problem_information", "user_property"))
                     if v5 else {})


def split_feed(decoder: c.MqttDecoder, data: bytes, cuts: list[int]) -> list:
    out = []
    points = sorted({min(max(0, x), len(data)) for x in cuts}) + [len(data)]
    start = 0
    for point in points:
        decoder.receive_data(data[start:point])
        start = point
        while True:
            ev = decoder.next_event()
            if ev is c.NEED_DATA:
                break
            out.append(ev)
    return out


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([3, 4, 5]).flatmap(lambda lvl: st.tuples(
    connects(lvl), st.lists(client_packets(lvl == 5), max_size=6))),
    st.lists(st.integers(0, 2000), max_size=8))
def test_client_stream_round_trips_under_any_split(session, cuts):
    connect, packets = session
    version = connect.protocol_level
    data = c.serialize(connect, version) + b"".join(c.serialize(p, version) for p in packets)
    decoded = split_feed(MqttDecoder("server"), data, cuts)
    assert decoded == [connect] + packets


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([4, 5]), st.data())
def test_server_packets_round_trip(version, data):
    v5 = version == 5
    packet = data.draw(st.one_of(
        publishes(v5),
        st.builds(c.Connack, st.booleans(), st.integers(0, 5),
                  props("session_expiry_interval", "assigned_client_identifier",
                        "server_keep_alive", "receive_maximum", "topic_alias_maximum",
                        "maximum_packet_size", "reason_string", "user_property")
                  if v5 else st.just({})),
        st.builds(c.Suback, pid, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1,
                                          max_size=5),
                  props("reason_string") if v5 else st.just({})),
        st.builds(c.Unsuback, pid, st.lists(st.sampled_from([0, 0x11]), min_size=1,
                                            max_size=5) if v5 else st.just([]),
                  props("reason_string") if v5 else st.just({})),
        st.just(c.Pingresp()),
    ))
    d = MqttDecoder("client", version=version)
    d.receive_data(c.serialize(packet, version))
    assert d.next_event() == packet
    assert d.next_event() is c.NEED_DATA


@given(st.binary(max_size=64))
def test_garbage_never_crashes_the_decoder(data):
    """Random bytes give packets, NEED_DATA or an MqttError; nothing else escapes."""
    d = MqttDecoder("server")
    d.receive_data(data)
    try:
        for _ in range(100):
            if d.next_event() is c.NEED_DATA:
                break
    except c.MqttError:
        pass


@given(topic_text)
def test_topic_mapping_round_trips(topic):
    assert topics.key_to_topic(topics.topic_to_key(topic)) == topic


level = st.sampled_from(["a", "b", "", "c.d"])
filter_level = st.sampled_from(["a", "b", "", "+", "c.d"])


@given(st.lists(filter_level, min_size=1, max_size=4), st.booleans(),
       st.lists(level, min_size=1, max_size=5))
def test_mqtt_matcher_agrees_with_topic_trie(filter_levels, hash_tail, topic_levels):
    topic_filter = "/".join(filter_levels + (["#"] if hash_tail else []))
    topic = "/".join(topic_levels)
    assert topics.matches(topic_filter, topic) == topic_matches(
        topics.filter_to_key(topic_filter), topics.topic_to_key(topic))
