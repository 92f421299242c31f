"""Amazon Data Firehose (AWS JSON 1.1, target ``Firehose_20150804``): delivery streams that buffer
records and write them to the S3 API of this listener (s3.py) or POST them to an HTTP endpoint.

Delivery streams (their configuration and, for a Kinesis source, the read position per shard)
live in the store's ``firehose`` state log; their records in the durable core queue
``firehose.NAME`` until delivered (firehose_delivery.py). See MAPPING.md.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


from .firehose_delivery import (BufferConsumer, KinesisSource, buffer_queue, encode_batch,
                                object_key, post_http, record_message)
from .http import ACCOUNT_ID, REGION, WRONG_SHAPE, AwsApi, AwsError, AwsRequest, wrong_shape
from .sigv4 import require

log = logging.getLogger("manifold.aws.firehose")

VHOST = "/"
_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
MAX_RECORD_BYTES = 1000 * 1024
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
HTTP_BACKUP_PREFIX = "http-endpoint-failed/"


def invalid(message: str) -> AwsError:
    return AwsError("InvalidArgumentException", message)


def not_found(name: Any) -> AwsError:
    return AwsError("ResourceNotFoundException",
                    f"Firehose {name} under account {ACCOUNT_ID} not found.")


@dataclass
class DeliveryStream:
    name: str
    created_ms: int
    kind: str                        # DirectPut | KinesisStreamAsSource
    destination: str                 # s3 | http
    config: dict                     # the destination configuration as given (for Describe)
    source_stream: str = ""
    source_arn: str = ""
    bucket: str = ""
    prefix: str = ""
    size_bytes: int = 5 * 1024 * 1024
    interval_s: int = 300
    gzip: bool = False
    delimiter: bytes | None = None
    url: str = ""
    access_key: str = ""
    retry_s: int = 300
    backup_bucket: str = ""
    tags: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)   # source shard id -> next offset

    @property
    def arn(self) -> str:
        return f"arn:aws:firehose:{REGION}:{ACCOUNT_ID}:deliverystream/{self.name}"


def _bucket_of(arn: Any) -> str:
    if not isinstance(arn, str) or not arn.startswith("arn:aws:s3:::") or len(arn) <= 13:
        raise invalid(f"BucketARN {arn} is not a valid S3 bucket ARN")
    return arn[13:]


def _delimiter(config: dict) -> bytes | None:
    processing = config.get("ProcessingConfiguration") or {}
    if not processing.get("Enabled"):
        return None
    for processor in processing.get("Processors") or []:
        if processor.get("Type") == "AppendDelimiterToRecord":
            value = "\\n"
            for param in processor.get("Parameters") or []:
                if param.get("ParameterName") == "Delimiter":
                    value = str(param.get("ParameterValue", ""))
            # The console and the API write the delimiter escaped ("\\n"), as AWS reads it.
            return codecs.decode(value, "unicode_escape").encode("utf-8")
    return None


def _buffering(stream: DeliveryStream, config: dict) -> None:
    hints = config.get("BufferingHints") or {}
    size_mb = hints.get("SizeInMBs", 5)
    interval = hints.get("IntervalInSeconds", 300)
    if not isinstance(size_mb, int) or not 1 <= size_mb <= 128:
        raise invalid("BufferingHints.SizeInMBs must be between 1 and 128")
    if not isinstance(interval, int) or not 0 <= interval <= 900:
        raise invalid("BufferingHints.IntervalInSeconds must be between 0 and 900")
    stream.size_bytes = size_mb * 1024 * 1024
    stream.interval_s = interval


def _described(config: dict) -> dict:
    """The destination configuration as Describe shows it: the endpoint's AccessKey is secret."""
    endpoint = config.get("EndpointConfiguration")
    if isinstance(endpoint, dict) and "AccessKey" in endpoint:
        return {**config, "EndpointConfiguration": {k: v for k, v in endpoint.items()
                                                    if k != "AccessKey"}}
    return config


class Firehose:
    def __init__(self, broker: Any, settings: Any, objects: Any, kinesis: Any):
        self.vhost = broker.vhosts[VHOST]
        self.objects = objects
        self.kinesis = kinesis
        self.http_timeout_s = settings.sns.http_timeout_s
        self.state = broker.state_map("firehose")
        self.streams: dict[str, DeliveryStream] = {}
        for name, value in self.state.load().items():
            self.streams[name] = DeliveryStream(**value)
        self.consumers: dict[str, BufferConsumer] = {}
        self.sources: dict[str, KinesisSource] = {}
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Resume delivery of every stream (records buffered before a restart go out now)."""
        for stream in self.streams.values():
            self._run(stream)

    def _run(self, stream: DeliveryStream) -> None:
        name = buffer_queue(stream.name)
        if name not in self.vhost.queues:
            self.vhost.declare_queue(name, durable=True)
        consumer = BufferConsumer(stream, self.deliver_batch)
        self.consumers[stream.name] = consumer
        self.vhost.consume(name, consumer)
        if stream.kind == "KinesisStreamAsSource":
            self.sources[stream.name] = KinesisSource(self, stream)

    def _stop(self, name: str) -> None:
        consumer = self.consumers.pop(name, None)
        if consumer is not None:
            left = consumer.close()
            self.vhost.cancel(consumer)
            # unacked deliveries go back to the queue (they are still on disk)
            self.vhost.requeue(left)
        source = self.sources.pop(name, None)
        if source is not None:
            source.close()

    async def close(self) -> None:
        for name in list(self.consumers):
            self._stop(name)
        if self.session is not None:
            await self.session.close()

    async def save(self, stream: DeliveryStream) -> None:
        await self.state.put_durably(stream.name, asdict(stream))

    def stream(self, params: dict) -> DeliveryStream:
        name = params.get("DeliveryStreamName")
        stream = self.streams.get(name) if isinstance(name, str) else None
        if stream is None:
            raise not_found(name)
        return stream

    # -- delivery ------------------------------------------------------------------------------
    async def deliver_batch(self, stream: DeliveryStream, records: list[bytes],
                            first_ms: int) -> None:
        data = encode_batch(stream, records)
        if stream.destination == "s3":
            await asyncio.to_thread(self.objects.put, stream.bucket, object_key(stream, first_ms),
                                    data, "application/octet-stream")
            return
        if self.session is None:
            self.session = aiohttp.ClientSession()
        deadline = time.monotonic() + stream.retry_s
        delay = 0.5
        while True:
            try:
                await post_http(self.session, stream, [r + (stream.delimiter or b"")
                                                       for r in records], self.http_timeout_s)
                return
            except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError) as exc:
                if time.monotonic() + delay > deadline:
                    log.warning("delivery stream %s: HTTP endpoint failed for %d s (%s)",
                                stream.name, stream.retry_s, exc)
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if stream.backup_bucket:
            # [Firehose HTTP endpoint] failed data goes to the backup bucket
            await asyncio.to_thread(self.objects.put, stream.backup_bucket,
                                    HTTP_BACKUP_PREFIX + object_key(stream, first_ms)
                                    [len(stream.prefix):], data, "application/octet-stream")
        else:
            log.error("delivery stream %s: %d records dropped (no S3 backup configured)",
                      stream.name, len(records))

    # -- operations ----------------------------------------------------------------------------
    async def create(self, p: dict) -> dict:
        name = p.get("DeliveryStreamName")
        if not isinstance(name, str) or not _NAME.match(name):
            raise AwsError("ValidationException", f"1 validation error detected: Value '{name}' "
                           "at 'deliveryStreamName' failed to satisfy constraint: Member must "
                           "satisfy regular expression pattern: [a-zA-Z0-9_.-]+")
        if name in self.streams:
            raise AwsError("ResourceInUseException",
                           f"Firehose {name} under account {ACCOUNT_ID} already exists.")
        kind = p.get("DeliveryStreamType", "DirectPut")
        s3 = p.get("ExtendedS3DestinationConfiguration") or p.get("S3DestinationConfiguration")
        http = p.get("HttpEndpointDestinationConfiguration")
        if (s3 is None) == (http is None):
            raise invalid("Exactly one destination configuration is required: "
                          "ExtendedS3DestinationConfiguration, S3DestinationConfiguration or "
                          "HttpEndpointDestinationConfiguration.")
        config = s3 if s3 is not None else http
        stream = DeliveryStream(name, int(time.time() * 1000), kind,
                                "s3" if s3 is not None else "http", config,
                                tags={t["Key"]: t.get("Value", "") for t in p.get("Tags") or []})
        _buffering(stream, config)
        stream.delimiter = _delimiter(config)
        if s3 is not None:
            stream.bucket = _bucket_of(s3.get("BucketARN"))
            stream.prefix = s3.get("Prefix") or ""
            stream.gzip = s3.get("CompressionFormat", "UNCOMPRESSED") == "GZIP"
            if s3.get("CompressionFormat", "UNCOMPRESSED") not in ("UNCOMPRESSED", "GZIP"):
                raise invalid(f"CompressionFormat {s3.get('CompressionFormat')} is not "
                              "supported here; use UNCOMPRESSED or GZIP")
        else:
            endpoint = http.get("EndpointConfiguration") or {}
            stream.url = endpoint.get("Url") or ""
            if not stream.url.startswith(("http://", "https://")):
                raise invalid("EndpointConfiguration.Url must be an http(s) URL")
            stream.access_key = endpoint.get("AccessKey") or ""
            stream.retry_s = (http.get("RetryOptions") or {}).get("DurationInSeconds", 300)
            stream.gzip = (http.get("RequestConfiguration") or {}).get(
                "ContentEncoding") == "GZIP"
            backup = http.get("S3Configuration") or {}
            if backup.get("BucketARN"):
                stream.backup_bucket = _bucket_of(backup["BucketARN"])
        if kind == "KinesisStreamAsSource":
            source = p.get("KinesisStreamSourceConfiguration") or {}
            arn = source.get("KinesisStreamARN")
            if not isinstance(arn, str) or ":stream/" not in arn:
                raise invalid("KinesisStreamSourceConfiguration.KinesisStreamARN is required")
            stream.source_arn = arn
            stream.source_stream = arn.rsplit(":stream/", 1)[1]
            if stream.source_stream not in self.kinesis.streams:
                raise invalid(f"Stream {stream.source_stream} under account {ACCOUNT_ID} not "
                              "found.")
            # [Firehose] a Kinesis source is read from its start (TRIM_HORIZON) on creation
        elif kind != "DirectPut":
            raise invalid(f"DeliveryStreamType {kind} is not supported here")
        self.streams[name] = stream
        await self.save(stream)
        self._run(stream)
        return {"DeliveryStreamARN": stream.arn}

    async def delete(self, p: dict) -> dict:
        stream = self.stream(p)
        self._stop(stream.name)
        del self.streams[stream.name]
        self.vhost.delete_queue(buffer_queue(stream.name))
        await self.state.delete_durably(stream.name)
        return {}

    async def describe(self, p: dict) -> dict:
        stream = self.stream(p)
        key = {"s3": "ExtendedS3DestinationDescription",
               "http": "HttpEndpointDestinationDescription"}[stream.destination]
        description: dict[str, Any] = {
            "DeliveryStreamName": stream.name, "DeliveryStreamARN": stream.arn,
            "DeliveryStreamStatus": "ACTIVE", "DeliveryStreamType": stream.kind,
            "VersionId": "1", "CreateTimestamp": stream.created_ms / 1000,
            "Destinations": [{"DestinationId": "destinationId-000000000001",
                              key: _described(stream.config)}],
            "HasMoreDestinations": False}
        if stream.destination == "s3":
            description["Destinations"][0]["S3DestinationDescription"] = stream.config
        if stream.kind == "KinesisStreamAsSource":
            description["Source"] = {"KinesisStreamSourceDescription": {
                "KinesisStreamARN": stream.source_arn,
                "DeliveryStartTimestamp": stream.created_ms / 1000}}
        return {"DeliveryStreamDescription": description}

    async def list(self, p: dict) -> dict:
        kind = p.get("DeliveryStreamType")
        names = sorted(n for n, s in self.streams.items() if kind in (None, s.kind))
        start = p.get("ExclusiveStartDeliveryStreamName")
        if start:
            names = [n for n in names if n > start]
        limit = p.get("Limit") or 10
        return {"DeliveryStreamNames": names[:limit], "HasMoreDeliveryStreams": len(names) > limit}

    def _data(self, record: Any) -> bytes:
        if not isinstance(record, dict):
            raise AwsError("ValidationException", "Record is required")
        try:
            data = base64.b64decode(record.get("Data") or "", validate=True)
        except (binascii.Error, ValueError):
            raise AwsError("SerializationException", "Data is not valid base64") from None
        if len(data) > MAX_RECORD_BYTES:
            raise AwsError("ValidationException", "1 validation error detected: Value at "
                           "'record.data' failed to satisfy constraint: Member must have length "
                           "less than or equal to 1024000")
        return data

    def _direct(self, p: dict) -> DeliveryStream:
        stream = self.stream(p)
        if stream.kind != "DirectPut":
            raise invalid("This operation is not permitted on KinesisStreamAsSource delivery "
                          "stream type.")
        return stream

    async def publish(self, stream: DeliveryStream, records: list[bytes]) -> list[str]:
        ids, waits = [], []
        for data in records:
            message = record_message(stream.name, data)
            published = self.vhost.publish("", buffer_queue(stream.name), message)
            ids.append(message.properties.message_id)
            if published.wait is not None:
                waits.append(published.wait)
        for wait in waits:
            await wait  # [Firehose PutRecord] answered once the record is durable
        return ids

    async def put_record(self, p: dict) -> dict:
        stream = self._direct(p)
        (record_id,) = await self.publish(stream, [self._data(p.get("Record"))])
        return {"RecordId": record_id, "Encrypted": False}

    async def put_record_batch(self, p: dict) -> dict:
        stream = self._direct(p)
        records = p.get("Records")
        if not isinstance(records, list) or not 1 <= len(records) <= MAX_BATCH_RECORDS:
            raise AwsError("ValidationException", "1 validation error detected: Value at "
                           "'records' failed to satisfy constraint: Member must have length "
                           "less than or equal to 500")
        datas = [self._data(r) for r in records]
        if sum(map(len, datas)) > MAX_BATCH_BYTES:
            raise invalid("Records size exceeds 4 MiB limit")
        ids = await self.publish(stream, datas)
        return {"FailedPutCount": 0, "Encrypted": False,
                "RequestResponses": [{"RecordId": i} for i in ids]}

    async def tag(self, p: dict) -> dict:
        stream = self.stream(p)
        stream.tags.update({t["Key"]: t.get("Value", "") for t in p.get("Tags") or []})
        await self.save(stream)
        return {}

    async def untag(self, p: dict) -> dict:
        stream = self.stream(p)
        for key in p.get("TagKeys") or []:
            stream.tags.pop(key, None)
        await self.save(stream)
        return {}

    async def list_tags(self, p: dict) -> dict:
        stream = self.stream(p)
        return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(stream.tags.items())],
                "HasMoreTags": False}


#: the permission (RabbitMQ's model) an operation needs on the queue ``firehose.NAME``
PERMISSIONS = {"CreateDeliveryStream": "configure", "DeleteDeliveryStream": "configure",
               "TagDeliveryStream": "configure", "UntagDeliveryStream": "configure",
               "PutRecord": "write", "PutRecordBatch": "write"}


def install(api: AwsApi, objects: Any, kinesis: Any) -> Firehose:
    firehose = Firehose(api.broker, api.settings, objects, kinesis)
    operations = {
        "CreateDeliveryStream": firehose.create,
        "DeleteDeliveryStream": firehose.delete,
        "DescribeDeliveryStream": firehose.describe,
        "ListDeliveryStreams": firehose.list,
        "PutRecord": firehose.put_record,
        "PutRecordBatch": firehose.put_record_batch,
        "TagDeliveryStream": firehose.tag,
        "UntagDeliveryStream": firehose.untag,
        "ListTagsForDeliveryStream": firehose.list_tags,
    }

    async def handle(request: AwsRequest) -> Any:
        operation = operations.get(request.operation)
        if operation is None:
            raise AwsError("UnknownOperationException", f"{request.operation} is not supported")
        action = PERMISSIONS.get(request.operation)
        name = request.params.get("DeliveryStreamName")
        if action is not None and isinstance(name, str):
            require(request, action, "queue", buffer_queue(name))
        try:
            return await operation(request.params)
        except WRONG_SHAPE as exc:
            raise wrong_shape(exc) from None

    async def on_startup(_app: web.Application) -> None:
        await firehose.start()

    async def on_shutdown(_app: web.Application) -> None:
        await firehose.close()

    api.register_json("Firehose_20150804", "firehose", handle, "application/x-amz-json-1.1")
    api.app.on_startup.append(on_startup)
    api.app.on_shutdown.append(on_shutdown)
    return firehose
