"""The operator's read-only views of the AWS APIs' own state, registered on the broker's
``views`` (broker/views.py) so the management API serves them as ``/api/manifold/<name>``:
``sqs/queues``, ``sns/topics``, ``kinesis/streams``, ``firehose/streams``.

Each view is built fresh from the same objects the AWS operations use, so it shows what
GetQueueAttributes, ListSubscriptionsByTopic, ListShards and DescribeDeliveryStream would answer.
Values are plain JSON; hash keys stay decimal text (they exceed 64 bits, as AWS sends them).
"""
from __future__ import annotations

import json
from typing import Any

from manifold.broker.service import SERVICE_KEY

from .http import ACCOUNT_ID, AwsApi
from .sqs_common import queue_arn
from .sqs_queues import DEFAULTS, FIFO_DEFAULTS, sqs_queue_names


def _json_or_none(text: Any) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text  # kept as given rather than hidden


def _base_url(api: AwsApi) -> str:
    """This listener's URL as a client on this host would use it (the SQS queue URL base):
    ``advertised_host`` when set, else the bind address (loopback for a wildcard bind) and the
    port actually listened on."""
    service = api.app.get(SERVICE_KEY)
    https = service is not None and service.https_context is not None and \
        api.settings.tls.https
    scheme = "https" if https else "http"
    port = service.ports.get("http", api.settings.http.port) if service is not None \
        else api.settings.http.port
    host = api.settings.http.advertised_host
    if host and ":" in host:
        return f"{scheme}://{host}"
    if not host:
        bind = api.settings.server.bind
        host = "127.0.0.1" if bind in ("", "0.0.0.0", "::") else bind
    return f"{scheme}://{host}:{port}"


def sqs_queues(api: AwsApi, sqs: Any) -> list[dict]:
    base = _base_url(api)
    rows = []
    for name in sqs_queue_names(sqs):
        queue = sqs.vhost.queues.get(name)
        if queue is None:
            continue
        fifo = sqs.is_fifo(queue)
        attributes = {**DEFAULTS, **(FIFO_DEFAULTS if fifo else {}), **sqs.sqs_attributes(queue)}
        rows.append({
            "name": name, "url": f"{base}/{ACCOUNT_ID}/{name}", "arn": queue_arn(name),
            "fifo": fifo,
            "visibility_timeout_s": int(attributes.get("VisibilityTimeout", 30)),
            "redrive_policy": _json_or_none(attributes.get("RedrivePolicy")),
            "redrive_allow_policy": _json_or_none(attributes.get("RedriveAllowPolicy")),
            "approximate_number_of_messages": queue.ready_count,
            "approximate_number_of_messages_not_visible": queue.unacked_count,
            "approximate_number_of_messages_delayed": queue.delayed_count,
            "attributes": attributes,
            "tags": dict(queue.policy.get("sqs-tags", {})),
        })
    return rows


def _subscription(sub: Any) -> dict:
    return {
        "arn": sub.arn, "protocol": sub.protocol, "endpoint": sub.endpoint,
        # AWS lists an unconfirmed subscription's ARN as "PendingConfirmation"
        "confirmed": sub.confirmed, "pending_confirmation": not sub.confirmed,
        "raw_message_delivery": sub.raw,
        "filter_policy": sub.filter_policy, "filter_policy_scope": sub.filter_scope,
        "dead_letter_target_arn": sub.dead_letter_arn,
        "queue": sub.queue,  # the core queue that holds its deliveries
        "attributes": dict(sub.attributes),
    }


def sns_topics(sns: Any) -> list[dict]:
    rows = []
    for name in sorted(sns.topics):
        topic = sns.topics[name]
        subs = sorted((s for s in sns.subscriptions.values() if s.topic == name),
                      key=lambda s: s.id)
        rows.append({
            "name": name, "arn": topic.arn, "fifo": topic.fifo,
            "attributes": dict(topic.attributes), "tags": dict(topic.tags),
            "subscriptions_confirmed": sum(1 for s in subs if s.confirmed),
            "subscriptions_pending": sum(1 for s in subs if not s.confirmed),
            "subscriptions": [_subscription(s) for s in subs],
        })
    return rows


def _shard(stream: Any, shard: Any) -> dict:
    numbers = shard.describe()["SequenceNumberRange"]  # as ListShards / DescribeStream say
    return {
        "id": shard.id,
        "hash_key_range": {"starting": str(shard.start_hash), "ending": str(shard.end_hash)},
        "parent": shard.parent, "adjacent_parent": shard.adjacent_parent,
        "open": shard.open,
        "starting_sequence_number": numbers["StartingSequenceNumber"],
        "ending_sequence_number": numbers.get("EndingSequenceNumber"),  # once closed
        "core_stream": stream.queue_name(shard),
    }


def _kinesis_row(stream: Any) -> dict:
    return {
        "name": stream.name, "arn": stream.arn, "status": "ACTIVE", "mode": stream.mode,
        "retention_hours": stream.retention_hours, "created_ms": stream.created_ms,
        "open_shards": len(stream.open_shards()),
        "shards": [_shard(stream, s) for s in stream.shards],
        "consumers": sorted(stream.consumers), "tags": dict(stream.tags),
    }


def kinesis_streams(kinesis: Any) -> list[dict]:
    return [_kinesis_row(kinesis.streams[name]) for name in sorted(kinesis.streams)]


def _firehose_row(stream: Any) -> dict:
    return {
        "name": stream.name, "arn": stream.arn, "status": "ACTIVE", "type": stream.kind,
        "source_stream": stream.source_stream or None, "destination": stream.destination,
        "bucket": stream.bucket or None, "prefix": stream.prefix,
        # the endpoint URL only: its access key is a secret
        "url": stream.url or None,
        "buffer_size_bytes": stream.size_bytes, "buffer_interval_s": stream.interval_s,
        "gzip": stream.gzip, "created_ms": stream.created_ms, "tags": dict(stream.tags),
    }


def firehose_streams(firehose: Any) -> list[dict]:
    return [_firehose_row(firehose.streams[name]) for name in sorted(firehose.streams)]


def register(api: AwsApi, sqs: Any, sns: Any, kinesis: Any, firehose: Any) -> None:
    views = api.broker.views
    views.register("sqs/queues", lambda: sqs_queues(api, sqs))
    views.register("sns/topics", lambda: sns_topics(sns))
    views.register("kinesis/streams", lambda: kinesis_streams(kinesis))
    views.register("firehose/streams", lambda: firehose_streams(firehose))
