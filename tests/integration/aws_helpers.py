"""boto3 clients for the SNS/Kinesis/Firehose/S3 tests, pointed at a ``make_broker`` broker."""
from __future__ import annotations

import time
from typing import Any, Callable

import boto3
from botocore.config import Config


def aws_client(broker, service: str, **config):
    """An unmodified boto3 client (credentials guest/guest, us-east-1) for ``broker``."""
    return boto3.client(
        service, endpoint_url=f"http://127.0.0.1:{broker.ports['http']}", region_name="us-east-1",
        aws_access_key_id="guest", aws_secret_access_key="guest",
        config=Config(retries={"max_attempts": 1}, read_timeout=30, connect_timeout=5, **config))


def restart(make_broker, broker, **sections):
    broker.stop()
    broker.stop = lambda: None  # the fixture's teardown must not stop it twice
    return make_broker(**sections)


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """``check()``'s first truthy result within ``timeout`` seconds, else AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
