"""Hypothesis: through the whole pipeline (codec, session, amq.topic trie, session queue, delivery)
an MQTT subscriber receives exactly the messages a naive MQTT matcher says it should, once each,
at min(publish QoS, highest matching subscription QoS), in publish order; topics with ``.``,
empty levels and ``$`` prefixes included."""
from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings, strategies as st

from manifold.adapters.mqtt import codec as c
from manifold.adapters.mqtt.server import MqttServer
from manifold.adapters.mqtt.session import MqttSession
from manifold.broker.core import Broker
from manifold.config.settings import Settings
from tests.unit.test_mqtt_session import Client


def naive_match(topic_filter: str, topic: str) -> bool:
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    f, t = topic_filter.split("/"), topic.split("/")

    def go(i: int, j: int) -> bool:
        if i == len(f):
            return j == len(t)
        if f[i] == "#":
            return True
        if j == len(t):
            return False
        return (f[i] == "+" or f[i] == t[j]) and go(i + 1, j + 1)

    return go(0, 0)


level = st.sampled_from(["a", "b", "c.d", "", "$x"])
topic = st.lists(level, min_size=1, max_size=3).map("/".join).filter(bool)
filter_level = st.sampled_from(["a", "b", "c.d", "", "+", "$x"])


@st.composite
def topic_filter(draw):
    levels = draw(st.lists(filter_level, min_size=1, max_size=3))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(topic_filter(), st.integers(0, 2), min_size=1, max_size=4),
       st.lists(st.tuples(topic, st.integers(0, 2)), min_size=1, max_size=12),
       st.sampled_from([4, 5]))
def test_subscriber_gets_exactly_the_matching_messages(tmp_path_factory, subs, publishes,
                                                       version):
    async def run() -> list:
        data_dir = tmp_path_factory.mktemp("mqtt")
        cfg = Settings().replace("server", data_dir=str(data_dir))
        server = MqttServer(Broker(cfg), cfg, MqttSession)
        sub = Client(server, version)
        sub.send(c.Connect("sub", protocol_level=version))
        sub.send(c.Subscribe(1, [(f, c.SubscriptionOptions(q)) for f, q in subs.items()]))
        pub = Client(server, version)
        pub.send(c.Connect("pub", protocol_level=version))
        for i, (t, q) in enumerate(publishes):
            pub.send(c.Publish(t, b"%d" % i, q, packet_id=i + 1 if q else None))
        for _ in range(3):
            await asyncio.sleep(0)
        got = []
        for p in sub.packets():
            if isinstance(p, c.Publish):
                got.append((p.topic, int(p.payload), p.qos))
        return got

    got = asyncio.run(run())
    expected = []
    for i, (t, q) in enumerate(publishes):
        matching = [sq for f, sq in subs.items() if naive_match(f, t)]
        if matching:
            expected.append((t, i, min(q, max(matching))))
    assert got == expected
