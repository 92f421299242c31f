"""Amazon Kinesis Data Streams (AWS JSON 1.1, target ``Kinesis_20131202``) on the core's streams.

Each shard is the core stream ``STREAM.SHARD_ID`` in vhost ``/`` (durable, ``x-queue-type:
stream``, ``x-max-age`` = the retention period), so AMQP clients read it with
``x-stream-offset``. The stream list, shard tree (hash ranges, parents, where closed shards end)
and tags live in the store's ``kinesis`` state log (a DurableMap): every change is on disk before
the call answers. Records are the stream's messages: body = Data, header
``x-kinesis-partition-key``; PutRecord answers after the record's fsync. See MAPPING.md.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import re
import time
from typing import Any

from manifold.broker.errors import BrokerError
from manifold.broker.message import Message, Properties

from . import kinesis_fanout
from .http import ACCOUNT_ID, WRONG_SHAPE, AwsApi, AwsError, AwsRequest, wrong_shape
from .sigv4 import require
from .kinesis_shards import (MAX_HASH_KEY, KinesisStream, hash_key_of, invalid, make_iterator,
                             parse_iterator, parse_sequence_number, sequence_number)

VHOST = "/"
PARTITION_KEY_HEADER = "x-kinesis-partition-key"
_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
MAX_RECORD_BYTES = 1024 * 1024
MAX_PUT_RECORDS = 500
MAX_PUT_RECORDS_BYTES = 5 * 1024 * 1024
MAX_GET_RECORDS = 10000
MAX_GET_BYTES = 10 * 1024 * 1024
#: pages (GetRecords, SubscribeToShard) read at once: each holds up to MAX_GET_BYTES of records
#: and a reader's read-ahead while it reads, so cold reads stay within a fixed amount of memory
#: however many clients ask; the others wait their turn (other calls are served meanwhile)
PAGES_AT_ONCE = 8
ON_DEMAND_SHARDS = 4


def not_found(name: str) -> AwsError:
    return AwsError("ResourceNotFoundException",
                    f"Stream {name} under account {ACCOUNT_ID} not found.")


def now_ms() -> int:
    return int(time.time() * 1000)


class Kinesis:
    def __init__(self, broker: Any, settings: Any):
        self.vhost = broker.vhosts[VHOST]
        self.iterator_ttl_ms = settings.kinesis.iterator_ttl_s * 1000
        self.page_slots = asyncio.Semaphore(PAGES_AT_ONCE)
        self.state = broker.state_map("kinesis")
        self.streams: dict[str, KinesisStream] = {
            name: KinesisStream.from_value(value) for name, value in self.state.load().items()}
        for stream in self.streams.values():
            for shard in stream.shards:
                self._declare(stream, shard)

    # -- helpers -------------------------------------------------------------------------------
    def _declare(self, stream: KinesisStream, shard: Any) -> None:
        name = stream.queue_name(shard)
        if name not in self.vhost.queues:
            self.vhost.declare_queue(name, durable=True, arguments={
                "x-queue-type": "stream", "x-max-age": f"{stream.retention_hours}h"})
        self._apply_retention(stream, shard)

    def _apply_retention(self, stream: KinesisStream, shard: Any) -> None:
        """The shard stream's max age = the retention period (a stream policy, so the AMQP
        declare arguments stay as they were and the change is saved with the definitions)."""
        name = stream.queue_name(shard)
        wanted = {"x-max-age": f"{stream.retention_hours}h"}
        if name in self.vhost.queues and getattr(self.vhost.queues[name], "policy", None) != wanted:
            self.vhost.set_queue_policy(name, wanted)

    def core_stream(self, stream: KinesisStream, shard: Any) -> Any:
        return self.vhost.queue(stream.queue_name(shard))

    async def save(self, stream: KinesisStream) -> None:
        await self.state.put_durably(stream.name, stream.to_value())

    def stream(self, params: dict) -> KinesisStream:
        name = params.get("StreamName")
        arn = params.get("StreamARN")
        if not name and isinstance(arn, str) and ":stream/" in arn:
            name = arn.rsplit(":stream/", 1)[1]
        if not isinstance(name, str) or not name:
            raise invalid("Either StreamName or StreamARN should be provided.")
        stream = self.streams.get(name)
        if stream is None:
            raise not_found(name)
        return stream

    # -- streams -------------------------------------------------------------------------------
    async def create_stream(self, p: dict) -> dict:
        name = p.get("StreamName")
        if not isinstance(name, str) or not _NAME.match(name):
            raise AwsError("ValidationException", f"1 validation error detected: Value '{name}' "
                           "at 'streamName' failed to satisfy constraint: Member must satisfy "
                           "regular expression pattern: [a-zA-Z0-9_.-]+")
        if name in self.streams:
            raise AwsError("ResourceInUseException",
                           f"Stream {name} under account {ACCOUNT_ID} already exists.")
        mode = (p.get("StreamModeDetails") or {}).get("StreamMode", "PROVISIONED")
        if mode not in ("PROVISIONED", "ON_DEMAND"):
            raise invalid(f"Invalid StreamMode {mode}")
        count = p.get("ShardCount")
        if mode == "ON_DEMAND":
            count = ON_DEMAND_SHARDS if count is None else count
        if not isinstance(count, int) or not 1 <= count <= 1024:
            raise invalid("ShardCount must be between 1 and 1024 for a provisioned stream.")
        stream = KinesisStream(name, now_ms(), mode=mode)
        stream.add_even_shards(count)
        for shard in stream.shards:
            self._declare(stream, shard)
        self.streams[name] = stream
        await self.save(stream)
        return {}

    async def delete_stream(self, p: dict) -> dict:
        stream = self.stream(p)
        del self.streams[stream.name]
        for shard in stream.shards:
            self.vhost.delete_queue(stream.queue_name(shard))
        await self.state.delete_durably(stream.name)
        return {}

    def _shards_page(self, stream: KinesisStream, p: dict, limit_key: str) -> tuple[list, bool]:
        shards = stream.shards
        start = p.get("ExclusiveStartShardId")
        if start:
            shards = [s for s in shards if s.id > start]
        limit = p.get(limit_key) or 10000
        return [s.describe() for s in shards[:limit]], len(shards) > limit

    def _summary(self, stream: KinesisStream) -> dict:
        return {"StreamName": stream.name, "StreamARN": stream.arn, "StreamStatus": "ACTIVE",
                "StreamModeDetails": {"StreamMode": stream.mode},
                "RetentionPeriodHours": stream.retention_hours,
                "StreamCreationTimestamp": stream.created_ms / 1000,
                "EnhancedMonitoring": [{"ShardLevelMetrics": []}], "EncryptionType": "NONE"}

    async def describe_stream(self, p: dict) -> dict:
        stream = self.stream(p)
        shards, more = self._shards_page(stream, p, "Limit")
        return {"StreamDescription": {**self._summary(stream), "Shards": shards,
                                      "HasMoreShards": more}}

    async def describe_stream_summary(self, p: dict) -> dict:
        stream = self.stream(p)
        return {"StreamDescriptionSummary": {**self._summary(stream),
                                             "OpenShardCount": len(stream.open_shards()),
                                             "ConsumerCount": 0}}

    async def list_streams(self, p: dict) -> dict:
        names = sorted(self.streams)
        start = p.get("ExclusiveStartStreamName") or p.get("NextToken")
        if start:
            names = [n for n in names if n > start]
        limit = p.get("Limit") or 100
        page = names[:limit]
        return {"StreamNames": page, "HasMoreStreams": len(names) > limit,
                **({"NextToken": page[-1]} if len(names) > limit else {}),
                "StreamSummaries": [{"StreamName": n, "StreamARN": self.streams[n].arn,
                                     "StreamStatus": "ACTIVE",
                                     "StreamModeDetails": {"StreamMode": self.streams[n].mode},
                                     "StreamCreationTimestamp": self.streams[n].created_ms / 1000}
                                    for n in page]}

    async def list_shards(self, p: dict) -> dict:
        token = p.get("NextToken")
        if token:
            name, _, start = str(token).partition("|")
            stream = self.stream({"StreamName": name})
            p = {**p, "ExclusiveStartShardId": start}
        else:
            stream = self.stream(p)
        kind = (p.get("ShardFilter") or {}).get("Type")
        shards, more = self._shards_page(stream, p, "MaxResults")
        if kind in ("AT_LATEST", "AT_TRIM_HORIZON_OPEN"):
            shards = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
        out: dict[str, Any] = {"Shards": shards}
        if more and shards:
            out["NextToken"] = f"{stream.name}|{shards[-1]['ShardId']}"
        return out

    async def change_retention(self, p: dict, increase: bool) -> dict:
        stream = self.stream(p)
        hours = p.get("RetentionPeriodHours")
        if not isinstance(hours, int) or not 24 <= hours <= 8760:
            raise invalid(f"Minimum allowed retention period is 24 hours and maximum is 8760 "
                          f"hours. Requested retention period ({hours} hours) is invalid.")
        if increase and hours < stream.retention_hours:
            raise invalid(f"Requested retention period ({hours} hours) for stream {stream.name} "
                          f"can not be shorter than existing retention period "
                          f"({stream.retention_hours} hours). Use "
                          "DecreaseRetentionPeriod API.")
        if not increase and hours > stream.retention_hours:
            raise invalid(f"Requested retention period ({hours} hours) for stream {stream.name} "
                          f"can not be longer than existing retention period "
                          f"({stream.retention_hours} hours). Use "
                          "IncreaseRetentionPeriod API.")
        stream.retention_hours = hours
        for shard in stream.shards:
            self._apply_retention(stream, shard)
        await self.save(stream)
        return {}

    # -- tags ----------------------------------------------------------------------------------
    async def add_tags(self, p: dict) -> dict:
        stream = self.stream(p)
        tags = p.get("Tags") or {}
        if not isinstance(tags, dict) or len({**stream.tags, **tags}) > 50:
            raise invalid("A stream cannot have more than 50 tags.")
        stream.tags.update({str(k): str(v) for k, v in tags.items()})
        await self.save(stream)
        return {}

    async def remove_tags(self, p: dict) -> dict:
        stream = self.stream(p)
        for key in p.get("TagKeys") or []:
            stream.tags.pop(key, None)
        await self.save(stream)
        return {}

    async def list_tags(self, p: dict) -> dict:
        stream = self.stream(p)
        keys = sorted(stream.tags)
        start = p.get("ExclusiveStartTagKey")
        if start:
            keys = [k for k in keys if k > start]
        limit = p.get("Limit") or 50
        return {"Tags": [{"Key": k, "Value": stream.tags[k]} for k in keys[:limit]],
                "HasMoreTags": len(keys) > limit}

    # -- records -------------------------------------------------------------------------------
    def _record(self, stream: KinesisStream, entry: dict) -> tuple[Any, Message, int]:
        """(shard, message, size) for one PutRecord(s) entry, validated."""
        key = entry.get("PartitionKey")
        if not isinstance(key, str) or not 1 <= len(key) <= 256:
            raise AwsError("ValidationException", "1 validation error detected: Value at "
                           "'partitionKey' failed to satisfy constraint: Member must have "
                           "length between 1 and 256")
        try:
            data = base64.b64decode(entry.get("Data") or "", validate=True)
        except (binascii.Error, ValueError):
            raise AwsError("SerializationException", "Data is not valid base64") from None
        if len(data) > MAX_RECORD_BYTES:
            raise AwsError("ValidationException", "1 validation error detected: Value at "
                           "'data' failed to satisfy constraint: Member must have length less "
                           "than or equal to 1048576")
        explicit = entry.get("ExplicitHashKey")
        if explicit is not None:
            if not isinstance(explicit, str) or not explicit.isdigit() or \
                    int(explicit) > MAX_HASH_KEY:
                raise invalid(f"Invalid ExplicitHashKey. ExplicitHashKey must be in the range: "
                              f"[0, {MAX_HASH_KEY}]. Specified value was {explicit}")
            hash_key = int(explicit)
        else:
            hash_key = hash_key_of(key)
        shard = stream.shard_for(hash_key)
        message = Message("", stream.queue_name(shard), data, Properties(
            headers={PARTITION_KEY_HEADER: key}, delivery_mode=2))
        return shard, message, len(data) + len(key.encode())

    def _append(self, stream: KinesisStream, shard: Any, message: Message) -> tuple[str, Any]:
        """Publish one record; (sequence number, awaitable durability or None)."""
        core = self.core_stream(stream, shard)
        offset = core.next_offset
        result = self.vhost.publish("", stream.queue_name(shard), message)
        return sequence_number(shard.index, offset), result.wait

    async def put_record(self, p: dict) -> dict:
        stream = self.stream(p)
        shard, message, _ = self._record(stream, p)
        seq, wait = self._append(stream, shard, message)
        if wait is not None:
            await wait
        return {"ShardId": shard.id, "SequenceNumber": seq, "EncryptionType": "NONE"}

    async def put_records(self, p: dict) -> dict:
        stream = self.stream(p)
        entries = p.get("Records")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_PUT_RECORDS:
            raise AwsError("ValidationException", "1 validation error detected: Value at "
                           "'records' failed to satisfy constraint: Member must have length "
                           f"less than or equal to {MAX_PUT_RECORDS}")
        prepared = [self._record(stream, e if isinstance(e, dict) else {}) for e in entries]
        if sum(size for _, _, size in prepared) > MAX_PUT_RECORDS_BYTES:
            raise invalid("Records size exceeds 5 MB limit")
        results, waits = [], []
        for shard, message, _ in prepared:
            seq, wait = self._append(stream, shard, message)
            results.append({"SequenceNumber": seq, "ShardId": shard.id})
            if wait is not None:
                waits.append(wait)
        for wait in waits:
            await wait
        return {"FailedRecordCount": 0, "Records": results, "EncryptionType": "NONE"}

    # -- reading -------------------------------------------------------------------------------
    async def get_shard_iterator(self, p: dict) -> dict:
        stream = self.stream(p)
        shard = stream.shard(p.get("ShardId"))
        offset = self.start_offset(stream, shard, p.get("ShardIteratorType"),
                                   p.get("StartingSequenceNumber"), p.get("Timestamp"))
        return {"ShardIterator": make_iterator(stream, shard, offset, now_ms())}

    def start_offset(self, stream: KinesisStream, shard: Any, kind: Any, sequence: Any,
                     stamp: Any) -> int:
        """Where a reader of ``shard`` starts for an iterator (or StartingPosition) type."""
        core = self.core_stream(stream, shard)
        end = shard.end_offset if shard.end_offset is not None else core.next_offset
        if kind == "TRIM_HORIZON":
            offset = core.first_offset
        elif kind == "LATEST":
            offset = end
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            index, offset = parse_sequence_number(sequence)
            if index != shard.index:
                raise invalid(f"Invalid StartingSequenceNumber. It encodes {index}, while it "
                              f"was used in a call to a shard with {shard.id}")
            offset += 1 if kind == "AFTER_SEQUENCE_NUMBER" else 0
        elif kind == "AT_TIMESTAMP":
            if not isinstance(stamp, (int, float)):
                raise invalid("Must specify timestampInMillis parameter for iterator of type "
                              "AT_TIMESTAMP. Current request has no timestamp parameter.")
            if stamp * 1000 > now_ms():
                raise invalid("The timestampInMillis parameter cannot be greater than the "
                              "currentTimestampInMillis.")
            offset = core.resolve_offset(datetime.datetime.fromtimestamp(
                stamp, datetime.timezone.utc))
        else:
            raise AwsError("ValidationException", f"1 validation error detected: Value '{kind}' "
                           "at 'shardIteratorType' failed to satisfy constraint: Member must "
                           "satisfy enum value set: [AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER, "
                           "AT_TIMESTAMP, TRIM_HORIZON, LATEST]")
        return min(max(offset, core.first_offset), end)

    async def get_records(self, p: dict) -> dict:
        name, created, sid, offset, issued = parse_iterator(p.get("ShardIterator"))
        limit = p.get("Limit") or MAX_GET_RECORDS
        if not isinstance(limit, int) or not 1 <= limit <= MAX_GET_RECORDS:
            raise invalid(f"Limit must be between 1 and {MAX_GET_RECORDS}")
        stream = self.streams.get(name)
        if stream is None or stream.created_ms != created:
            raise not_found(name)
        shard = stream.shard(sid)
        now = now_ms()
        if now - issued > self.iterator_ttl_ms:
            raise AwsError("ExpiredIteratorException",
                           f"Iterator expired. The iterator was created at time {issued} while "
                           f"right now it is {now} which is further in the future than the "
                           f"tolerated delay of {self.iterator_ttl_ms} milliseconds.")
        out, position, closed = await self.read_page(stream, shard, offset, limit, now)
        out["NextShardIterator"] = None if closed else make_iterator(stream, shard, position, now)
        return out

    async def read_page(self, stream: KinesisStream, shard: Any, offset: int, limit: int,
                        now: int) -> tuple[dict, int, bool]:
        """(page, next offset, whether the closed shard's end was reached): ``Records``,
        ``MillisBehindLatest`` and, at the end of a closed shard, ``ChildShards``. Records on
        disk are read in the store's reader thread (Stream.read_later): other clients are
        served meanwhile, and at most PAGES_AT_ONCE pages are read at a time."""
        async with self.page_slots:
            return await self._read_page(stream, shard, offset, limit, now)

    async def _read_page(self, stream: KinesisStream, shard: Any, offset: int, limit: int,
                         now: int) -> tuple[dict, int, bool]:
        core = self.core_stream(stream, shard)
        end = shard.end_offset if shard.end_offset is not None else core.next_offset
        records, position = [], max(offset, core.first_offset)
        for record_offset, stamp, message in await core.read_later(
                position, min(limit, end - position), MAX_GET_BYTES):
            key = message.headers.get(PARTITION_KEY_HEADER)
            records.append({"SequenceNumber": sequence_number(shard.index, record_offset),
                            "ApproximateArrivalTimestamp": stamp / 1000,
                            "Data": base64.b64encode(message.body).decode(),
                            "PartitionKey": key if isinstance(key, str) else
                            message.routing_key or "-"})
            position = record_offset + 1
        behind = 0
        if position < core.next_offset:
            following = await core.read_later(position, 1)
            behind = max(0, now - following[0][1]) if following else 0
        out: dict[str, Any] = {"Records": records, "MillisBehindLatest": behind}
        closed = shard.end_offset is not None and position >= shard.end_offset
        if closed:
            # [Kinesis GetRecords] the last page of a closed shard names its children and has no
            # NextShardIterator
            out["ChildShards"] = [{"ShardId": c.id, "ParentShards": [
                x for x in (c.parent, c.adjacent_parent) if x],
                "HashKeyRange": c.describe()["HashKeyRange"]} for c in stream.children_of(shard)]
        return out, position, closed

    # -- resharding ----------------------------------------------------------------------------
    def _close(self, stream: KinesisStream, shard: Any) -> None:
        shard.end_offset = self.core_stream(stream, shard).next_offset

    def _open_shard(self, stream: KinesisStream, sid: Any, what: str) -> Any:
        if not isinstance(sid, str):
            raise AwsError("ValidationException", f"{what} is required")
        shard = stream.shard(sid)
        if not shard.open:
            raise AwsError("ResourceInUseException", f"Shard {sid} in stream {stream.name} "
                           f"under account {ACCOUNT_ID} has already been merged or split, and "
                           "thus is not eligible for merging or splitting.")
        return shard

    async def split_shard(self, p: dict) -> dict:
        stream = self.stream(p)
        parent = self._open_shard(stream, p.get("ShardToSplit"), "ShardToSplit")
        key = p.get("NewStartingHashKey")
        if not isinstance(key, str) or not key.isdigit() or \
                not parent.start_hash < int(key) <= parent.end_hash:
            raise invalid(f"NewStartingHashKey {key} used in SplitShard() on shard {parent.id} "
                          f"in stream {stream.name} under account {ACCOUNT_ID} is not both "
                          f"greater than one plus the shard's StartingHashKey "
                          f"{parent.start_hash} and less than the shard's EndingHashKey "
                          f"{parent.end_hash}.")
        self._close(stream, parent)
        for start, end in ((parent.start_hash, int(key) - 1), (int(key), parent.end_hash)):
            self._declare(stream, stream.new_shard(start, end, parent.id))
        await self.save(stream)
        return {}

    async def merge_shards(self, p: dict) -> dict:
        stream = self.stream(p)
        first = self._open_shard(stream, p.get("ShardToMerge"), "ShardToMerge")
        second = self._open_shard(stream, p.get("AdjacentShardToMerge"), "AdjacentShardToMerge")
        if first.end_hash + 1 != second.start_hash and second.end_hash + 1 != first.start_hash:
            raise invalid(f"Shards {first.id} and {second.id} in stream {stream.name} under "
                          f"account {ACCOUNT_ID} are not an adjacent pair of shards eligible "
                          "for merging")
        self._close(stream, first)
        self._close(stream, second)
        child = stream.new_shard(min(first.start_hash, second.start_hash),
                                 max(first.end_hash, second.end_hash), first.id, second.id)
        self._declare(stream, child)
        await self.save(stream)
        return {}

    async def update_shard_count(self, p: dict) -> dict:
        """Uniform scaling: every open shard closes, ``TargetShardCount`` even children open."""
        stream = self.stream(p)
        target = p.get("TargetShardCount")
        if not isinstance(target, int) or not 1 <= target <= 1024:
            raise invalid("TargetShardCount must be between 1 and 1024")
        current = len(stream.open_shards())
        opened = stream.open_shards()
        for shard in opened:
            self._close(stream, shard)
        width = (MAX_HASH_KEY + 1) // target
        for i in range(target):
            start, end = i * width, MAX_HASH_KEY if i == target - 1 else (i + 1) * width - 1
            parent = next((s.id for s in opened if s.holds(start)), None)
            self._declare(stream, stream.new_shard(start, end, parent))
        await self.save(stream)
        return {"StreamName": stream.name, "StreamARN": stream.arn,
                "CurrentShardCount": current, "TargetShardCount": target}


#: the permission (RabbitMQ's model) an operation needs, checked on the stream's name as a queue
PERMISSIONS = {
    "CreateStream": "configure", "DeleteStream": "configure", "SplitShard": "configure",
    "MergeShards": "configure", "UpdateShardCount": "configure",
    "IncreaseStreamRetentionPeriod": "configure", "DecreaseStreamRetentionPeriod": "configure",
    "AddTagsToStream": "configure", "RemoveTagsFromStream": "configure",
    "PutRecord": "write", "PutRecords": "write", "GetShardIterator": "read", "GetRecords": "read",
    "RegisterStreamConsumer": "configure", "DeregisterStreamConsumer": "configure",
    "SubscribeToShard": "read",
}


def check_permission(request: AwsRequest) -> None:
    action = PERMISSIONS.get(request.operation)
    if action is None or request.grant is None:
        return
    p = request.params
    name = p.get("StreamName")
    arn = p.get("StreamARN")
    if not name and isinstance(arn, str) and ":stream/" in arn:
        name = arn.rsplit(":stream/", 1)[1]
    if request.operation == "GetRecords":
        name = parse_iterator(p.get("ShardIterator"))[0]
    consumer = p.get("ConsumerARN")
    if not name and isinstance(consumer, str) and ":stream/" in consumer:
        name = consumer.rsplit(":stream/", 1)[1].split("/consumer/", 1)[0]
    if isinstance(name, str):
        require(request, action, "queue", name)


def install(api: AwsApi) -> Kinesis:
    kinesis = Kinesis(api.broker, api.settings)
    operations = {
        "CreateStream": kinesis.create_stream,
        "DeleteStream": kinesis.delete_stream,
        "DescribeStream": kinesis.describe_stream,
        "DescribeStreamSummary": kinesis.describe_stream_summary,
        "ListStreams": kinesis.list_streams,
        "ListShards": kinesis.list_shards,
        "IncreaseStreamRetentionPeriod": lambda p: kinesis.change_retention(p, True),
        "DecreaseStreamRetentionPeriod": lambda p: kinesis.change_retention(p, False),
        "AddTagsToStream": kinesis.add_tags,
        "RemoveTagsFromStream": kinesis.remove_tags,
        "ListTagsForStream": kinesis.list_tags,
        "PutRecord": kinesis.put_record,
        "PutRecords": kinesis.put_records,
        "GetShardIterator": kinesis.get_shard_iterator,
        "GetRecords": kinesis.get_records,
        "SplitShard": kinesis.split_shard,
        "MergeShards": kinesis.merge_shards,
        "UpdateShardCount": kinesis.update_shard_count,
        "SubscribeToShard": None,  # streams its answer: handled below with the request
    }
    fanout = kinesis_fanout.install(kinesis, operations)

    async def handle(request: AwsRequest) -> Any:
        if request.operation not in operations:
            raise AwsError("UnknownOperationException", f"{request.operation} is not supported")
        operation = operations[request.operation]
        check_permission(request)
        try:
            if request.operation == "SubscribeToShard":
                return await fanout.subscribe(request, request.params)
            return await operation(request.params)
        except BrokerError as exc:  # a core refusal (e.g. a shard stream deleted over AMQP)
            raise AwsError("ResourceNotFoundException", str(exc)) from None
        except WRONG_SHAPE as exc:
            raise wrong_shape(exc) from None

    async def on_shutdown(_app: Any) -> None:
        fanout.closing = True

    api.register_json("Kinesis_20131202", "kinesis", handle, "application/x-amz-json-1.1")
    api.app.on_shutdown.append(on_shutdown)
    return kinesis
