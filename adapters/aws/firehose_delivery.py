"""Firehose's delivery side: buffer records, write them out as one S3 object or one HTTP POST.

A delivery stream's records wait in the durable core queue ``firehose.NAME`` (persistent
messages, fsynced before PutRecord answers). A :class:`BufferConsumer` takes them off that queue
until the buffer holds ``SizeInMBs`` or ``IntervalInSeconds`` has passed since its first record,
then writes the batch and only then acks every record in it: records buffered when the broker
dies are still unacked in the queue and are delivered after the restart (at least once, as AWS).
Credit stops at the size limit, so a backlog never sits in memory beyond one buffer.

A ``KinesisStreamAsSource`` stream is fed by :class:`KinesisSource`, which reads the source
stream's shards from a saved position per shard and publishes the records into the same queue.
"""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import time
import uuid
from typing import Any

import aiohttp

from manifold.broker.consumer import Consumer, Delivery
from manifold.broker.message import Message, Properties

log = logging.getLogger("manifold.aws.firehose")

RETRY_DELAY_S = 1.0


def buffer_queue(name: str) -> str:
    return f"firehose.{name}"


def record_message(name: str, data: bytes) -> Message:
    return Message("", buffer_queue(name), data, Properties(
        delivery_mode=2, message_id=str(uuid.uuid4())), timestamp_ms=int(time.time() * 1000))


class BufferConsumer(Consumer):
    """Collects deliveries of one delivery stream's queue and flushes them as one batch."""

    def __init__(self, stream: Any, deliver_batch: Any):
        super().__init__(f"firehose-{stream.name}")
        self.stream = stream
        self.deliver_batch = deliver_batch  # async (stream, [bytes], first_ms) -> None
        self.buffer: list[Delivery] = []
        self.writing: list[Delivery] = []   # the batch being written, acked once it is out
        self.buffered_bytes = 0
        self.flushing: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def has_credit(self) -> bool:
        return (not self.closed and self.flushing is None
                and self.buffered_bytes < self.stream.size_bytes)

    def deliver(self, delivery: Delivery) -> None:
        self.buffer.append(delivery)
        self.buffered_bytes += len(delivery.message.body)
        loop = asyncio.get_running_loop()
        if self.buffered_bytes >= self.stream.size_bytes or self.stream.interval_s == 0:
            self._cancel_timer()
            self.timer = loop.call_soon(self._flush)  # after the pump's loop, in one batch
        elif self.timer is None:
            self.timer = loop.call_later(self.stream.interval_s, self._flush)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _flush(self) -> None:
        self.timer = None
        if self.flushing is None and self.buffer and not self.closed:
            self.flushing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        batch, self.buffer = self.buffer, []
        self.writing = batch
        try:
            first_ms = min(d.message.timestamp_ms or int(time.time() * 1000) for d in batch)
            while not self.closed:
                try:
                    await self.deliver_batch(self.stream, [d.message.body for d in batch],
                                             first_ms)
                    break
                except Exception as exc:  # destination down: keep the batch and try again
                    log.warning("delivery stream %s: delivery failed (%s); retrying",
                                self.stream.name, exc)
                    await asyncio.sleep(RETRY_DELAY_S)
            else:
                return  # shutting down: the records stay unacked in the queue
            for delivery in batch:
                delivery.ack()
        finally:
            self.buffered_bytes -= sum(len(d.message.body) for d in batch)
            self.flushing = None
            self.writing = []
        if self.buffer:
            self._flush()
        self.resume()

    def close(self) -> list[Delivery]:
        """Stop; returns the deliveries not acked (the caller requeues them)."""
        self.closed = True
        self._cancel_timer()
        left = [*self.writing, *self.buffer]
        if self.flushing is not None:
            self.flushing.cancel()
        self.buffer, self.writing = [], []
        return left


def encode_batch(stream: Any, records: list[bytes]) -> bytes:
    """The processors, then the concatenation, then the compression (Firehose's order)."""
    if stream.delimiter is not None:
        records = [r + stream.delimiter for r in records]
    data = b"".join(records)
    return gzip.compress(data) if stream.gzip else data


def object_key(stream: Any, first_ms: int) -> str:
    """[Firehose S3 object name format] prefix + YYYY/MM/DD/HH/ (UTC) +
    DeliveryStreamName-DeliveryStreamVersion-YYYY-MM-DD-HH-MM-SS-RandomString."""
    when = time.gmtime(first_ms / 1000)
    name = (f"{stream.name}-1-{time.strftime('%Y-%m-%d-%H-%M-%S', when)}-"
            f"{uuid.uuid4()}")
    return f"{stream.prefix}{time.strftime('%Y/%m/%d/%H/', when)}{name}" + \
        (".gz" if stream.gzip else "")


async def post_http(session: aiohttp.ClientSession, stream: Any, records: list[bytes],
                    timeout_s: float) -> None:
    """[Firehose HTTP endpoint delivery request] one JSON POST; 200 with the request id is
    success, anything else raises."""
    request_id = str(uuid.uuid4())
    body = json.dumps({"requestId": request_id, "timestamp": int(time.time() * 1000),
                       "records": [{"data": base64.b64encode(r).decode()} for r in records]})
    headers = {"Content-Type": "application/json", "X-Amz-Firehose-Request-Id": request_id,
               "X-Amz-Firehose-Source-Arn": stream.arn,
               "X-Amz-Firehose-Protocol-Version": "1.0"}
    if stream.access_key:
        headers["X-Amz-Firehose-Access-Key"] = stream.access_key
    data = body.encode()
    if stream.gzip:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    async with session.post(stream.url, data=data, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP endpoint answered {response.status}")


class KinesisSource:
    """Moves records from a Kinesis stream's shards into a delivery stream's queue."""

    def __init__(self, firehose: Any, stream: Any):
        self.firehose = firehose
        self.stream = stream
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                moved = await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery stream %s: reading the Kinesis source failed",
                              self.stream.name)
                moved = 0
            if not moved:
                await asyncio.sleep(0.1)

    async def _poll(self) -> int:
        kinesis = self.firehose.kinesis
        source = kinesis.streams.get(self.stream.source_stream)
        if source is None:
            return 0
        moved = 0
        for shard in source.shards:
            core = kinesis.core_stream(source, shard)
            position = self.stream.positions.get(shard.id, core.first_offset)
            records = await core.read_later(max(position, core.first_offset), 500)
            if not records:
                continue
            waits = []
            for offset, _stamp, message in records:
                published = self.firehose.vhost.publish(
                    "", buffer_queue(self.stream.name), record_message(self.stream.name,
                                                                       message.body))
                if published.wait is not None:
                    waits.append(published.wait)
            for wait in waits:
                await wait
            self.stream.positions[shard.id] = records[-1][0] + 1
            moved += len(records)
        if moved:
            await self.firehose.save(self.stream)
        return moved

    def close(self) -> None:
        self.task.cancel()
