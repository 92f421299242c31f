"""The memory alarm counts every body held in memory (ready, unacked, retained) plus a per-entry
overhead; paged-out bodies count only their overhead."""
import asyncio

from manifold.broker.core import Broker
from manifold.broker.message import Message, Properties
from manifold.broker.queue import ENTRY_OVERHEAD_BYTES
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore

from tests.unit.core_helpers import Recorder


async def test_unacked_bodies_count_until_acked(tmp_path):
    broker = Broker(Settings())
    await broker.start()
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q")
    for _ in range(10):
        vhost.publish("", "q", Message("", "", b"x" * 1000))
    assert broker.memory.used_bytes == 10 * (1000 + ENTRY_OVERHEAD_BYTES)
    consumer = Recorder(prefetch=0)
    vhost.consume("q", consumer)
    assert len(consumer.deliveries) == 10
    assert broker.memory.used_bytes == 10 * (1000 + ENTRY_OVERHEAD_BYTES)  # unacked: still held
    for delivery in consumer.deliveries[:4]:
        delivery.ack()
    for delivery in consumer.deliveries[4:]:
        delivery.reject(False)
    assert broker.memory.used_bytes == 0
    await broker.close()


async def test_paged_out_bodies_count_only_their_entry(tmp_path):
    broker = Broker(Settings(), store=FileStore(str(tmp_path)))
    await broker.start()
    vhost = broker.vhosts["/"]
    vhost.declare_queue("lazy", durable=True, arguments={"x-queue-mode": "lazy"})
    for _ in range(10):
        await vhost.publish("", "lazy", Message("", "", b"x" * 1000,
                                                Properties(delivery_mode=2))).wait
    await asyncio.sleep(0)
    assert broker.memory.used_bytes == 10 * ENTRY_OVERHEAD_BYTES
    vhost.purge_queue("lazy")
    assert broker.memory.used_bytes == 0
    await broker.close()


async def test_retained_mqtt_messages_count(tmp_path):
    from manifold.adapters.mqtt.server import MqttMessage, MqttServer
    settings = Settings()
    broker = Broker(settings, store=FileStore(str(tmp_path)))
    await broker.start()
    server = MqttServer(broker, settings, session_factory=lambda srv: None)
    server.load()

    def retained(body):
        return MqttMessage("amq.topic", "a.b", body, Properties(delivery_mode=2), origin=None,
                           retain=True, qos=1, mqtt_properties=None, timestamp_ms=0)

    await server.retain("a/b", retained(b"y" * 500), None)
    assert broker.memory.used_bytes == 500 + ENTRY_OVERHEAD_BYTES
    await server.retain("a/b", retained(b"z" * 100), None)  # replaced
    assert broker.memory.used_bytes == 100 + ENTRY_OVERHEAD_BYTES
    await server.retain("a/b", retained(b""), None)  # cleared
    assert broker.memory.used_bytes == 0
    await server.close()
    await broker.close()
