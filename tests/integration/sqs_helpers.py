"""boto3 clients for the SQS tests, pointed at a broker started by the ``make_broker`` fixture."""
from __future__ import annotations

import boto3
from botocore.config import Config


def sqs_client(broker, **config):
    """An unmodified boto3 SQS client for ``broker`` (credentials guest/guest, us-east-1)."""
    return boto3.client(
        "sqs", endpoint_url=f"http://127.0.0.1:{broker.ports['http']}", region_name="us-east-1",
        aws_access_key_id="guest", aws_secret_access_key="guest",
        config=Config(retries={"max_attempts": 1}, read_timeout=30, connect_timeout=5,
                      **config))
