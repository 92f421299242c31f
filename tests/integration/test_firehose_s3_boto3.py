"""Firehose and the minimal S3 API with unmodified boto3 clients: delivery streams buffer records
into S3 objects (read back with the s3 client), from DirectPut or a Kinesis stream, to an HTTP
endpoint with retries, and across a restart."""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from .aws_helpers import aws_client, restart, wait_for


@pytest.fixture
def clients(running_broker):
    return (aws_client(running_broker, "firehose"), aws_client(running_broker, "s3"),
            aws_client(running_broker, "kinesis"))


def objects(s3, bucket, prefix=""):
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def bodies(s3, bucket, prefix=""):
    return [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in objects(s3, bucket, prefix)]


def s3_destination(bucket, prefix="logs/", interval=0, size=1, **extra):
    return {"RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}", "Prefix": prefix,
            "BufferingHints": {"SizeInMBs": size, "IntervalInSeconds": interval}, **extra}


def test_s3_buckets_and_objects(running_broker):
    s3 = aws_client(running_broker, "s3")
    s3.create_bucket(Bucket="data")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["data"]
    s3.put_object(Bucket="data", Key="a/b/c.txt", Body=b"hello", ContentType="text/plain")
    s3.put_object(Bucket="data", Key="a/x y.bin", Body=b"\x00\x01")
    s3.put_object(Bucket="data", Key="top", Body=b"t")
    got = s3.get_object(Bucket="data", Key="a/b/c.txt")
    assert got["Body"].read() == b"hello" and got["ContentType"] == "text/plain"
    assert got["ETag"] == '"5d41402abc4b2a76b9719d911017c592"'
    assert s3.head_object(Bucket="data", Key="top")["ContentLength"] == 1
    assert objects(s3, "data") == ["a/b/c.txt", "a/x y.bin", "top"]
    listed = s3.list_objects_v2(Bucket="data", Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["a/"]
    assert [o["Key"] for o in listed["Contents"]] == ["top"]
    page = s3.list_objects_v2(Bucket="data", MaxKeys=2)
    assert page["IsTruncated"] and len(page["Contents"]) == 2
    rest = s3.list_objects_v2(Bucket="data", ContinuationToken=page["NextContinuationToken"])
    assert [o["Key"] for o in rest["Contents"]] == ["top"]
    s3.delete_object(Bucket="data", Key="top")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="data", Key="top")
    with pytest.raises(s3.exceptions.NoSuchBucket):
        s3.list_objects_v2(Bucket="nope")
    with pytest.raises(ClientError) as err:
        s3.delete_bucket(Bucket="data")
    assert err.value.response["Error"]["Code"] == "BucketNotEmpty"


def test_direct_put_interval_zero_delimiter_and_key_layout(clients):
    firehose, s3, _ = clients
    s3.create_bucket(Bucket="out")
    firehose.create_delivery_stream(
        DeliveryStreamName="clicks", DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration=s3_destination("out", ProcessingConfiguration={
            "Enabled": True, "Processors": [{"Type": "AppendDelimiterToRecord", "Parameters": [
                {"ParameterName": "Delimiter", "ParameterValue": "\\n"}]}]}))
    desc = firehose.describe_delivery_stream(DeliveryStreamName="clicks")
    assert desc["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == ["clicks"]
    firehose.put_record_batch(DeliveryStreamName="clicks",
                              Records=[{"Data": b"a"}, {"Data": b"b"}, {"Data": b"c"}])
    got = wait_for(lambda: b"".join(bodies(s3, "out")).count(b"\n") == 3 and bodies(s3, "out"))
    assert sorted(b"".join(got).split(b"\n")[:-1]) == [b"a", b"b", b"c"]
    key = objects(s3, "out")[0]
    now = time.gmtime()
    assert re.match(r"^logs/\d{4}/\d{2}/\d{2}/\d{2}/clicks-1-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-",
                    key), key
    assert key.startswith(time.strftime("logs/%Y/", now))


def test_size_buffering_and_gzip_without_delimiter(clients):
    firehose, s3, _ = clients
    s3.create_bucket(Bucket="zipped")
    firehose.create_delivery_stream(
        DeliveryStreamName="big", ExtendedS3DestinationConfiguration=s3_destination(
            "zipped", prefix="z/", interval=900, size=1, CompressionFormat="GZIP"))
    chunk = b"x" * (300 * 1024)
    for _ in range(3):
        firehose.put_record(DeliveryStreamName="big", Record={"Data": chunk})
    time.sleep(0.5)
    assert objects(s3, "zipped") == []  # 900 KiB < 1 MiB and the interval is 15 minutes
    firehose.put_record(DeliveryStreamName="big", Record={"Data": b"yy" + chunk})
    keys = wait_for(lambda: objects(s3, "zipped"))
    assert keys[0].endswith(".gz")
    data = gzip.decompress(s3.get_object(Bucket="zipped", Key=keys[0])["Body"].read())
    assert data == chunk * 3 + b"yy" + chunk  # concatenated as sent


def test_kinesis_source_refuses_put_record_and_delivers_stream_records(clients):
    firehose, s3, kinesis = clients
    s3.create_bucket(Bucket="fromkinesis")
    kinesis.create_stream(StreamName="src", ShardCount=2)
    for i in range(4):
        kinesis.put_record(StreamName="src", Data=b"k%d" % i, PartitionKey=f"p{i}")
    firehose.create_delivery_stream(
        DeliveryStreamName="fromk", DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={
            "KinesisStreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/src",
            "RoleARN": "arn:aws:iam::000000000000:role/r"},
        ExtendedS3DestinationConfiguration=s3_destination("fromkinesis", prefix=""))
    with pytest.raises(firehose.exceptions.InvalidArgumentException):
        firehose.put_record(DeliveryStreamName="fromk", Record={"Data": b"no"})
    kinesis.put_record(StreamName="src", Data=b"k4", PartitionKey="late")
    got = wait_for(lambda: len(b"".join(bodies(s3, "fromkinesis"))) == 10 and
                   b"".join(bodies(s3, "fromkinesis")))
    assert sorted(re.findall(rb"k\d", got)) == [b"k0", b"k1", b"k2", b"k3", b"k4"]
    with pytest.raises(firehose.exceptions.ResourceNotFoundException):
        firehose.describe_delivery_stream(DeliveryStreamName="missing")


def test_buffered_records_are_delivered_after_a_restart(make_broker):
    broker = make_broker()
    firehose, s3 = aws_client(broker, "firehose"), aws_client(broker, "s3")
    s3.create_bucket(Bucket="later")
    firehose.create_delivery_stream(
        DeliveryStreamName="slow",
        ExtendedS3DestinationConfiguration=s3_destination("later", interval=3))
    firehose.put_record(DeliveryStreamName="slow", Record={"Data": b"kept"})
    assert objects(s3, "later") == []  # still buffered when the broker stops
    broker = restart(make_broker, broker)
    s3 = aws_client(broker, "s3")
    assert wait_for(lambda: bodies(s3, "later"), timeout=60) == [b"kept"]
    firehose = aws_client(broker, "firehose")
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == ["slow"]


class Endpoint:
    """A local aiohttp HTTP endpoint that fails the first ``failures`` requests."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.requests: list[tuple[dict, dict]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def handler(request: web.Request) -> web.Response:
            body = json.loads(await request.read())
            self.requests.append((dict(request.headers), body))
            if len(self.requests) <= self.failures:
                return web.Response(status=503)
            return web.json_response({"requestId": body["requestId"],
                                      "timestamp": int(time.time() * 1000)})

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/ingest", handler)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = self.runner.addresses[0][1]

        self.loop.run_until_complete(start())
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_http_endpoint_destination_retries(clients):
    firehose, s3, _ = clients
    endpoint = Endpoint(failures=2)
    try:
        firehose.create_delivery_stream(
            DeliveryStreamName="web", HttpEndpointDestinationConfiguration={
                "EndpointConfiguration": {"Url": f"http://127.0.0.1:{endpoint.port}/ingest",
                                          "Name": "local", "AccessKey": "secret"},
                "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
                "RetryOptions": {"DurationInSeconds": 60},
                "S3Configuration": {"RoleARN": "arn:aws:iam::000000000000:role/r",
                                    "BucketARN": "arn:aws:s3:::backup"}})
        firehose.put_record(DeliveryStreamName="web", Record={"Data": b"payload"})
        wait_for(lambda: len(endpoint.requests) >= 3, timeout=60)
        headers, body = endpoint.requests[-1]
        assert headers["X-Amz-Firehose-Access-Key"] == "secret"
        assert [base64.b64decode(r["data"]) for r in body["records"]] == [b"payload"]
        time.sleep(0.3)
        assert len(endpoint.requests) == 3  # success ends the retries
    finally:
        endpoint.close()


def test_http_endpoint_failures_go_to_the_backup_bucket(clients):
    firehose, s3, _ = clients
    s3.create_bucket(Bucket="backup")
    endpoint = Endpoint(failures=1000)
    try:
        firehose.create_delivery_stream(
            DeliveryStreamName="down", HttpEndpointDestinationConfiguration={
                "EndpointConfiguration": {"Url": f"http://127.0.0.1:{endpoint.port}/ingest"},
                "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
                "RetryOptions": {"DurationInSeconds": 1},
                "S3Configuration": {"RoleARN": "arn:aws:iam::000000000000:role/r",
                                    "BucketARN": "arn:aws:s3:::backup"}})
        firehose.put_record(DeliveryStreamName="down", Record={"Data": b"lost?"})
        keys = wait_for(lambda: objects(s3, "backup"), timeout=60)
        assert keys[0].startswith("http-endpoint-failed/")
        assert bodies(s3, "backup") == [b"lost?"]
        assert len(endpoint.requests) >= 2
    finally:
        endpoint.close()


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli_lists_what_firehose_delivered(clients, running_broker, tmp_path):
    firehose, s3, _ = clients
    s3.create_bucket(Bucket="cli")
    firehose.create_delivery_stream(DeliveryStreamName="tocli",
                                    ExtendedS3DestinationConfiguration=s3_destination("cli"))
    firehose.put_record(DeliveryStreamName="tocli", Record={"Data": b"seen by the cli"})
    key = wait_for(lambda: objects(s3, "cli"))[0]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "guest", "AWS_SECRET_ACCESS_KEY": "guest",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    endpoint = f"http://127.0.0.1:{running_broker.ports['http']}"
    listed = subprocess.run(["aws", "--endpoint-url", endpoint, "s3", "ls", "--recursive",
                             "s3://cli/"], env=env, capture_output=True, text=True, timeout=180)
    assert listed.returncode == 0, listed.stderr
    assert key in listed.stdout
    copied = subprocess.run(["aws", "--endpoint-url", endpoint, "s3", "cp", f"s3://cli/{key}",
                             str(tmp_path / "out")], env=env, capture_output=True, text=True,
                            timeout=180)
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "out").read_bytes() == b"seen by the cli"
