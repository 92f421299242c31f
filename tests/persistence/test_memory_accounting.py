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


async def test_paged_out_bodies_in_cold_runs_count_nothing(tmp_path):
    # A lazy queue keeps no body in memory: its waiting messages are 12 bytes each in cold runs
    # (broker/coldrun.py), not entries, so the memory alarm has nothing to count.
    broker = Broker(Settings(), store=FileStore(str(tmp_path)))
    await broker.start()
    vhost = broker.vhosts["/"]
    vhost.declare_queue("lazy", durable=True, arguments={"x-queue-mode": "lazy"})
    for _ in range(10):
        await vhost.publish("", "lazy", Message("", "", b"x" * 1000,
                                                Properties(delivery_mode=2))).wait
    await asyncio.sleep(0)
    assert vhost.queues["lazy"].ready_count == 10
    assert broker.memory.used_bytes == 0
    consumer = Recorder(prefetch=3)
    vhost.consume("lazy", consumer)
    assert len(consumer.deliveries) == 3  # read back: held bodies count with their entries
    assert broker.memory.used_bytes == 3 * (1000 + ENTRY_OVERHEAD_BYTES)
    vhost.cancel(consumer)
    for delivery in consumer.deliveries:
        delivery.ack()
    vhost.purge_queue("lazy")
    assert broker.memory.used_bytes == 0
    await broker.close()


async def test_retained_mqtt_messages_count(tmp_path):
    from manifold.adapters.mqtt import make_server
    from manifold.adapters.mqtt.server import MqttMessage
    settings = Settings()
    broker = Broker(settings, store=FileStore(str(tmp_path)))
    await broker.start()
    server = make_server(broker, settings)

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
