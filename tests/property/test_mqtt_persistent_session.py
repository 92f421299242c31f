"""Hypothesis: a persistent QoS 1 / QoS 2 subscriber that disconnects, reconnects and acknowledges at
random loses nothing: every published message is delivered until acknowledged; resends after a
reconnect carry DUP=1 and their original packet identifier; new messages arrive in publish order;
with QoS 2 every message is released (PUBREL) exactly once per PUBREC."""
from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings, strategies as st

from manifold.adapters.mqtt import codec as c
from manifold.adapters.mqtt.server import MqttServer
from manifold.adapters.mqtt.session import MqttSession
from manifold.broker.core import Broker
from manifold.config.settings import Settings
from tests.unit.test_mqtt_session import Client

ops = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.integers(1, 4)),
    st.tuples(st.just("ack"), st.integers(0, 4)),
    st.tuples(st.just("drop"), st.just(0)),
    st.tuples(st.just("reconnect"), st.just(0)),
), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from([1, 2]), st.sampled_from([4, 5]))
def test_persistent_session_loses_nothing(tmp_path_factory, script, qos, version):
    async def run() -> None:
        cfg = Settings().replace("server", data_dir=str(tmp_path_factory.mktemp("mqtt")))
        server = MqttServer(Broker(cfg), cfg, MqttSession)
        props = {"session_expiry_interval": 600} if version == 5 else {}

        def connect() -> Client:
            cl = Client(server, version)
            cl.send(c.Connect("persistent", protocol_level=version, clean_start=False,
                              properties=props))
            return cl

        async def settle() -> None:
            for _ in range(3):
                await asyncio.sleep(0)

        sub: Client | None = connect()
        sub.send(c.Subscribe(1, [("t", c.SubscriptionOptions(qos))]))
        pub = Client(server, version)
        pub.send(c.Connect("publisher", protocol_level=version))
        published: list[bytes] = []
        unacked: dict[int, bytes] = {}     # packet id -> payload, in arrival order
        done: set[bytes] = set()
        first_seen: list[bytes] = []

        def read(cl: Client) -> None:
            for p in cl.packets():
                if isinstance(p, c.Publish):
                    if p.payload in done:
                        raise AssertionError(f"{p.payload!r} delivered after it was acked")
                    if p.packet_id in unacked:
                        assert p.dup and unacked[p.packet_id] == p.payload  # [MQTT-4.4.0-1]
                    else:
                        assert not p.dup
                        unacked[p.packet_id] = p.payload
                        first_seen.append(p.payload)
                elif isinstance(p, c.Pubrel):
                    cl.send(c.Pubcomp(p.packet_id))

        def ack(cl: Client, n: int) -> None:
            for pid in list(unacked)[:n]:
                done.add(unacked.pop(pid))
                cl.send(c.Puback(pid) if qos == 1 else c.Pubrec(pid))

        for op, n in script:
            if op == "publish":
                for _ in range(n):
                    body = b"%d" % len(published)
                    published.append(body)
                    pid = len(published) % 60000 + 1
                    pub.send(c.Publish("t", body, qos, packet_id=pid))
                    if qos == 2:
                        pub.send(c.Pubrel(pid))
            elif op == "ack" and sub is not None:
                await settle()
                read(sub)
                ack(sub, n)
            elif op == "drop" and sub is not None:
                await settle()
                read(sub)
                sub.session.connection_lost()
                sub = None
            elif op == "reconnect":
                if sub is not None:
                    await settle()
                    read(sub)
                    sub.session.connection_lost()
                sub = connect()
            await settle()
        if sub is None:
            sub = connect()
        for _ in range(50):
            await settle()
            read(sub)
            if not unacked and len(done) == len(published):
                break
            ack(sub, len(unacked))
        assert done == set(published)
        assert first_seen == sorted(first_seen, key=lambda b: int(b))  # publish order

    asyncio.run(run())
