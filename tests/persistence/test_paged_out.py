"""Messages whose body lives only on disk (lazy queues, backlogs past the resident limit) are
dead-lettered, expired, dropped, purged and requeued like any other, body intact; the dead-letter
copy is on disk before the original is settled."""
import asyncio

import pytest

from manifold.broker.core import Broker
from manifold.broker.message import Message, Properties
from manifold.config.settings import Settings
from manifold.persistence.filestore import FileStore

from tests.unit.core_helpers import Recorder

from .fsshim import PowerCutFS

pytestmark = pytest.mark.timeout(180)  # a hang fails; a loaded machine is only slow


def persistent(body, **props):
    return Message("", "", body, Properties(delivery_mode=2, **props))


async def open_broker(path, resident=None, fs=None):
    settings = Settings()
    if resident is not None:
        settings = settings.replace("queues", resident_bytes_per_queue=resident)
    broker = Broker(settings, store=FileStore(str(path), fs=fs))
    await broker.start()
    return broker, broker.vhosts["/"]


def declare_with_dlq(vhost, mode, **arguments):
    vhost.declare_exchange("dlx", "fanout", durable=True)
    vhost.declare_queue("dead", durable=True)
    vhost.bind_queue("dead", "dlx", "")
    args = {"x-dead-letter-exchange": "dlx", **arguments}
    if mode == "lazy":
        args["x-queue-mode"] = "lazy"
    vhost.declare_queue("src", durable=True, arguments=args)


async def fill(vhost, n, size=500):
    bodies = [f"{i:04d}".encode() + b"." * size for i in range(n)]
    for body in bodies:
        await asyncio.wait_for(vhost.publish("", "src", persistent(body)).wait, 5)
    return bodies


async def settled(vhost):
    for _ in range(50):  # dead-letter copies are written, then the originals settled
        await asyncio.sleep(0.01)


MODES = ["lazy", "backlog"]


def resident_for(mode):
    return 2000 if mode == "backlog" else None


@pytest.mark.parametrize("mode", MODES)
async def test_paged_out_messages_expire_into_the_dead_letter_queue(tmp_path, mode):
    broker, vhost = await open_broker(tmp_path, resident_for(mode))
    declare_with_dlq(vhost, mode, **{"x-message-ttl": 100})
    bodies = await fill(vhost, 30)
    assert vhost.queues["src"].resident_bytes < 30 * 500  # most bodies are on disk only
    await asyncio.sleep(0.3)  # the TTL passes; the timer expires them
    await settled(vhost)
    assert vhost.queues["src"].ready_count == 0
    assert [m.body for m in vhost.queues["dead"].ready_messages()] == bodies
    await broker.close()
    broker, vhost = await open_broker(tmp_path, resident_for(mode))
    assert vhost.queues["src"].ready_count == 0  # the originals were settled
    assert [m.body for m in vhost.queues["dead"].ready_messages()] == bodies
    await broker.close()


@pytest.mark.parametrize("mode", MODES)
async def test_paged_out_drop_head_dead_letters_the_oldest(tmp_path, mode):
    broker, vhost = await open_broker(tmp_path, resident_for(mode))
    declare_with_dlq(vhost, mode, **{"x-max-length": 5})
    bodies = await fill(vhost, 25)
    await settled(vhost)
    assert [m.body for m in vhost.queues["src"].ready_messages()] == bodies[-5:]
    assert [m.body for m in vhost.queues["dead"].ready_messages()] == bodies[:-5]
    await broker.close()


@pytest.mark.parametrize("mode", MODES)
async def test_paged_out_rejects_requeues_purge_and_delete(tmp_path, mode):
    broker, vhost = await open_broker(tmp_path, resident_for(mode))
    declare_with_dlq(vhost, mode, **{"x-delivery-limit": 1})
    bodies = await fill(vhost, 20)
    consumer = Recorder(prefetch=4)
    vhost.consume("src", consumer)
    first = list(consumer.deliveries[:4])
    for d in first:
        d.reject(True)  # back to the queue: delivered again, body intact
    again = [d.message.body for d in consumer.deliveries[4:8]]
    assert again == bodies[:4]
    for d in consumer.deliveries[4:8]:
        d.reject(True)  # past x-delivery-limit: dead-lettered
    vhost.cancel(consumer)
    for d in consumer.deliveries[8:]:
        if not d.settled:
            d.reject(False)  # rejected: dead-lettered
    await settled(vhost)
    dead = [m.body for m in vhost.queues["dead"].ready_messages()]
    assert sorted(dead) == sorted(bodies[:8])
    assert vhost.purge_queue("src") == 12
    await settled(vhost)
    vhost.delete_queue("dead")
    await broker.close()
    broker, vhost = await open_broker(tmp_path, resident_for(mode))
    assert vhost.queues["src"].ready_count == 0
    assert "dead" not in vhost.queues
    await broker.close()


async def test_dead_letter_copy_is_durable_before_the_original_is_settled(tmp_path):
    data = tmp_path / "data"
    fs = PowerCutFS(str(data))
    broker, vhost = await open_broker(data, 0, fs=fs)
    declare_with_dlq(vhost, "lazy", **{"x-message-ttl": 50})
    bodies = await fill(vhost, 20, size=50)
    cuts = []
    for i in range(40):  # power cuts at many moments while the messages expire and move
        cut = tmp_path / f"cut{i}"
        fs.image(str(cut))
        cuts.append(cut)
        await asyncio.sleep(0.005)
    await broker.close()
    for cut in cuts:
        broker, vhost = await open_broker(cut)
        left = {m.body for m in vhost.queues["src"].ready_messages()}
        dead = {m.body for m in vhost.queues["dead"].ready_messages()}
        assert left | dead == set(bodies), cut  # in one queue or both, never in neither
        await broker.close()
