"""The AWS HTTP APIs (SQS, SNS, Kinesis, Firehose, S3) on one aiohttp listener.

``make_http_app`` is what ``broker/service.py`` looks for: it returns the aiohttp application the
service serves on ``[http] port``. Each AWS service lives in its own module and registers its
operations on the shared :class:`~manifold.adapters.aws.http.AwsApi` dispatcher.
"""
from __future__ import annotations

from typing import Any

from . import firehose, kinesis, s3, sns, sqs, views
from .http import AwsApi
from .sigv4 import SigV4Verifier


def make_http_app(broker: Any, settings: Any):
    api = AwsApi(broker, settings)
    # Every request is signed (AWS Signature Version 4) with a key of [[access_keys]].
    api.authenticate = SigV4Verifier(broker)
    # Each service module adds its handlers here.
    queues = sqs.install(api)
    streams = kinesis.install(api)
    objects = s3.install(api)
    deliveries = firehose.install(api, objects, streams)
    topics = sns.install(api, queues, deliveries)
    # What the operator sees under /api/manifold/ (management API, through broker.views)
    views.register(api, queues, topics, streams, deliveries)
    return api.app
