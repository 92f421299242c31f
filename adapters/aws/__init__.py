"""The AWS HTTP APIs (SQS, SNS, Kinesis, Firehose, S3) on one aiohttp listener.

``make_http_app`` is what ``broker/service.py`` looks for: it returns the aiohttp application the
service serves on ``[http] port``. Each AWS service lives in its own module and registers its
operations on the shared :class:`~manifold.adapters.aws.http.AwsApi` dispatcher.
"""
from __future__ import annotations

from typing import Any

from . import sqs
from .http import AwsApi
from .sigv4 import SigV4Verifier


def make_http_app(broker: Any, settings: Any):
    api = AwsApi(broker, settings)
    # Every request is signed (AWS Signature Version 4) with a key of [[access_keys]].
    api.authenticate = SigV4Verifier(broker)
    # Each service module adds its handlers here.
    sqs.install(api)
    return api.app
