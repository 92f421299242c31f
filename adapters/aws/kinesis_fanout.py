"""Kinesis enhanced fan-out: stream consumers and SubscribeToShard.

RegisterStreamConsumer / DescribeStreamConsumer / ListStreamConsumers /
DeregisterStreamConsumer keep named consumers with the stream (in the ``kinesis`` state log).
SubscribeToShard answers with an AWS event stream (``application/vnd.amazon.eventstream``): an
``initial-response`` event, then ``SubscribeToShardEvent``s (Records, ContinuationSequenceNumber,
MillisBehindLatest, ChildShards at the end of a closed shard) for ``SUBSCRIPTION_S`` seconds
(AWS: 5 minutes), as long as the client reads. Over HTTP/1.1 (boto3's transport), not HTTP/2.

Event stream message framing [AWS "Event stream encoding"]: total length (4 bytes), headers
length (4), CRC32 of those 8 bytes, headers (name length 1, name, type 7 = string, value length
2, value), payload, CRC32 of everything before.
"""
from __future__ import annotations

import asyncio
import json
import struct
import time
import zlib
from typing import Any

from aiohttp import web

from .http import AwsError, AwsRequest
from .kinesis_shards import sequence_number

SUBSCRIPTION_S = 300
POLL_S = 0.2
EMPTY_EVENT_EVERY_S = 1.0


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (struct.pack("!B", len(raw_name)) + raw_name + b"\x07" +
            struct.pack("!H", len(raw_value)) + raw_value)


def event_message(event_type: str, payload: dict) -> bytes:
    headers = (_header(":event-type", event_type) + _header(":content-type", "application/json")
               + _header(":message-type", "event"))
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack("!II", total, len(headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack("!I", zlib.crc32(message))


def consumer_arn(stream_arn: str, name: str, created_ms: int) -> str:
    return f"{stream_arn}/consumer/{name}:{created_ms // 1000}"


def _description(stream: Any, name: str, created_ms: int, with_stream: bool) -> dict:
    out = {"ConsumerName": name, "ConsumerARN": consumer_arn(stream.arn, name, created_ms),
           "ConsumerStatus": "ACTIVE", "ConsumerCreationTimestamp": created_ms / 1000}
    if with_stream:
        out["StreamARN"] = stream.arn
    return out


class FanOut:
    def __init__(self, kinesis: Any):
        self.kinesis = kinesis
        self.closing = False  # set at shutdown: open subscriptions end at once

    def _consumer(self, p: dict) -> tuple[Any, str]:
        arn = p.get("ConsumerARN")
        if isinstance(arn, str) and "/consumer/" in arn:
            stream_arn, _, rest = arn.partition("/consumer/")
            stream = self.kinesis.stream({"StreamARN": stream_arn})
            name = rest.rsplit(":", 1)[0]
        else:
            stream = self.kinesis.stream(p)
            name = p.get("ConsumerName")
        if name not in stream.consumers or (
                isinstance(arn, str) and arn != consumer_arn(stream.arn, name,
                                                             stream.consumers[name])):
            raise AwsError("ResourceNotFoundException", f"Consumer {name} not found.")
        return stream, name

    async def register(self, p: dict) -> dict:
        stream = self.kinesis.stream(p)
        name = p.get("ConsumerName")
        if not isinstance(name, str) or not name:
            raise AwsError("ValidationException", "ConsumerName is required")
        if name in stream.consumers:
            raise AwsError("ResourceInUseException", f"Consumer {name} already exists.")
        if len(stream.consumers) >= 20:
            raise AwsError("LimitExceededException", "A stream has at most 20 consumers.")
        stream.consumers[name] = int(time.time() * 1000)
        await self.kinesis.save(stream)
        return {"Consumer": _description(stream, name, stream.consumers[name], False)}

    async def describe(self, p: dict) -> dict:
        stream, name = self._consumer(p)
        return {"ConsumerDescription": _description(stream, name, stream.consumers[name], True)}

    async def list(self, p: dict) -> dict:
        stream = self.kinesis.stream(p)
        return {"Consumers": [_description(stream, n, c, False)
                              for n, c in sorted(stream.consumers.items())]}

    async def deregister(self, p: dict) -> dict:
        stream, name = self._consumer(p)
        del stream.consumers[name]
        await self.kinesis.save(stream)
        return {}

    async def subscribe(self, request: AwsRequest, p: dict) -> web.StreamResponse:
        stream, _name = self._consumer(p)
        shard = stream.shard(p.get("ShardId"))
        position = p.get("StartingPosition") or {}
        offset = self.kinesis.start_offset(stream, shard, position.get("Type"),
                                           position.get("SequenceNumber"),
                                           position.get("Timestamp"))
        response = web.StreamResponse(headers={
            "Content-Type": "application/vnd.amazon.eventstream",
            "x-amzn-RequestId": request.request_id})
        await response.prepare(request.http)
        await response.write(event_message("initial-response", {}))
        deadline = time.monotonic() + SUBSCRIPTION_S
        last_sent = 0.0
        try:
            while time.monotonic() < deadline and stream.name in self.kinesis.streams and \
                    not self.closing:
                page, next_offset, closed = await self.kinesis.read_page(
                    stream, shard, offset, 10000, int(time.time() * 1000))
                if page["Records"] or closed or time.monotonic() - last_sent >= \
                        EMPTY_EVENT_EVERY_S:
                    page["ContinuationSequenceNumber"] = sequence_number(
                        shard.index, max(next_offset - 1, 0))
                    page.setdefault("ChildShards", [])
                    await response.write(event_message("SubscribeToShardEvent", page))
                    last_sent = time.monotonic()
                    offset = next_offset
                    if closed:
                        break
                if not page["Records"]:
                    await asyncio.sleep(POLL_S)
        except ConnectionResetError:
            return response  # the client went away
        await response.write_eof()
        return response


def install(kinesis: Any, operations: dict) -> FanOut:
    fanout = FanOut(kinesis)
    operations.update({"RegisterStreamConsumer": fanout.register,
                       "DescribeStreamConsumer": fanout.describe,
                       "ListStreamConsumers": fanout.list,
                       "DeregisterStreamConsumer": fanout.deregister})
    return fanout
