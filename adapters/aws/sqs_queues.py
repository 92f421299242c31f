"""SQS queue operations: create, find, list, delete, purge, attributes, tags, permissions.

Queue attributes live in the core queue's *policy* (``vhost.set_queue_policy``): the SQS texts
under ``sqs-attributes`` (what GetQueueAttributes returns), tags under ``sqs-tags``, and the core
settings derived from them (see MAPPING.md), so they survive restarts with the definitions and
AMQP clients can still declare the queue without arguments.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from .http import ACCOUNT_ID, AwsRequest
from .sqs_common import (SqsContext, core_error, int_param, invalid, is_fifo_name, missing,
                         name_from_arn, no_queue, now_ms, queue_arn, sqs_error, str_param,
                         valid_queue_name)

DEFAULTS = {"DelaySeconds": "0", "MaximumMessageSize": "1048576",
            "MessageRetentionPeriod": "345600", "ReceiveMessageWaitTimeSeconds": "0",
            "VisibilityTimeout": "30", "SqsManagedSseEnabled": "true"}
FIFO_DEFAULTS = {"FifoQueue": "true", "ContentBasedDeduplication": "false",
                 "DeduplicationScope": "queue", "FifoThroughputLimit": "perQueue"}
# name -> (low, high) for integer attributes
_RANGES = {"DelaySeconds": (0, 900), "MaximumMessageSize": (1024, 1048576),
           "MessageRetentionPeriod": (60, 1209600), "ReceiveMessageWaitTimeSeconds": (0, 20),
           "VisibilityTimeout": (0, 43200), "KmsDataKeyReusePeriodSeconds": (60, 86400)}
_FREE_TEXT = ("Policy", "KmsMasterKeyId")
_BOOLEANS = ("SqsManagedSseEnabled", "ContentBasedDeduplication", "FifoQueue")
_FIFO_ONLY = {"ContentBasedDeduplication": None, "DeduplicationScope": ("messageGroup", "queue"),
              "FifoThroughputLimit": ("perQueue", "perMessageGroupId")}
SETTABLE = (*_RANGES, *_FREE_TEXT, *_BOOLEANS, *_FIFO_ONLY, "RedrivePolicy", "RedriveAllowPolicy")
COMPUTED = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp",
            "QueueArn")
MAX_TAGS = 50
RECENTLY_DELETED_S = 60
PURGE_INTERVAL_S = 60


# ==================================================================== attributes
def _check_attributes(ctx: SqsContext, name: str, attributes: Any, creating: bool) -> dict:
    """Validated SQS attribute texts; InvalidAttributeName / InvalidAttributeValue otherwise."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise invalid("Attributes must be a map.")
    fifo = is_fifo_name(name)
    checked: dict[str, str] = {}
    for key, value in attributes.items():
        if key not in SETTABLE:
            raise sqs_error("InvalidAttributeName", f"Unknown Attribute {key}.")
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(
            value, dict) else str(value)
        if key in _RANGES:
            low, high = _RANGES[key]
            try:
                number = int(text)
            except ValueError:
                number = None
            if number is None or not low <= number <= high:
                raise sqs_error("InvalidAttributeValue",
                                f"Invalid value for the parameter {key}.")
            text = str(number)
        elif key in _BOOLEANS:
            if text.lower() not in ("true", "false"):
                raise sqs_error("InvalidAttributeValue", f"Invalid value for the parameter {key}.")
            text = text.lower()
        if key == "FifoQueue":
            if not creating:
                raise sqs_error("InvalidAttributeName", "Unknown Attribute FifoQueue.")
            if (text == "true") != fifo:
                raise invalid("The name of a FIFO queue can only include alphanumeric characters,"
                              " hyphens, or underscores, must end with .fifo suffix.")
        if key in _FIFO_ONLY:
            if not fifo:
                raise sqs_error("InvalidAttributeName", f"Unknown Attribute {key}.")
            allowed = _FIFO_ONLY[key]
            if allowed is not None and text not in allowed:
                raise sqs_error("InvalidAttributeValue", f"Invalid value for the parameter {key}.")
        if key == "RedrivePolicy" and text:
            text = _check_redrive_policy(ctx, name, text)
        if key == "RedriveAllowPolicy" and text:
            text = _check_redrive_allow_policy(text)
        if key == "Policy" and text:
            try:
                json.loads(text)
            except ValueError:
                raise sqs_error("InvalidAttributeValue",
                                "Invalid value for the parameter Policy.") from None
        checked[key] = text
    return checked


def _check_redrive_policy(ctx: SqsContext, name: str, text: str) -> str:
    try:
        policy = json.loads(text)
        target = policy["deadLetterTargetArn"]
        count = int(policy["maxReceiveCount"])
    except (ValueError, KeyError, TypeError):
        raise invalid("Value for parameter RedrivePolicy is invalid. Reason: Redrive policy is not"
                      " a valid JSON map with deadLetterTargetArn and maxReceiveCount.") from None
    if not 1 <= count <= 1000:
        raise invalid(f"Value {text} for parameter RedrivePolicy is invalid. Reason: Invalid value"
                      " for maxReceiveCount: must be between 1 and 1000.")
    dlq_name = name_from_arn(target)
    dlq = ctx.vhost.queues.get(dlq_name) if dlq_name else None
    if dlq is None or not hasattr(dlq, "receive"):
        raise invalid(f"Value {text} for parameter RedrivePolicy is invalid. Reason: "
                      "Dead-letter target does not exist.")
    if is_fifo_name(dlq_name) != is_fifo_name(name):
        raise invalid(f"Value {text} for parameter RedrivePolicy is invalid. Reason: Dead-letter "
                      "queue must be same type of queue as the source.")
    allow = ctx.sqs_attributes(dlq).get("RedriveAllowPolicy")
    if allow and not source_allowed(json.loads(allow), name):
        raise invalid(f"Value {text} for parameter RedrivePolicy is invalid. Reason: Queue "
                      f"{queue_arn(dlq_name)} does not allow this queue as a dead-letter source.")
    return json.dumps({"deadLetterTargetArn": target, "maxReceiveCount": count},
                      separators=(",", ":"))


def _check_redrive_allow_policy(text: str) -> str:
    try:
        policy = json.loads(text)
        permission = policy["redrivePermission"]
    except (ValueError, KeyError, TypeError):
        raise sqs_error("InvalidAttributeValue",
                        "Invalid value for the parameter RedriveAllowPolicy.") from None
    sources = policy.get("sourceQueueArns", [])
    if permission not in ("allowAll", "denyAll", "byQueue") or not isinstance(sources, list) or (
            permission == "byQueue" and not 1 <= len(sources) <= 10) or (
            permission != "byQueue" and sources):
        raise sqs_error("InvalidAttributeValue",
                        "Invalid value for the parameter RedriveAllowPolicy.")
    return json.dumps(policy, separators=(",", ":"))


def source_allowed(allow_policy: dict, source_name: str) -> bool:
    permission = allow_policy.get("redrivePermission")
    if permission == "denyAll":
        return False
    if permission == "byQueue":
        return queue_arn(source_name) in allow_policy.get("sourceQueueArns", [])
    return True


def core_policy(attributes: dict, tags: dict) -> dict:
    """The core queue policy for SQS attribute texts (see MAPPING.md)."""
    policy: dict[str, Any] = {"sqs-attributes": attributes, "sqs-tags": tags,
                              "x-message-ttl": int(attributes["MessageRetentionPeriod"]) * 1000}
    delay = int(attributes.get("DelaySeconds", "0"))
    if delay:
        policy["x-delay"] = delay * 1000
    if attributes.get("FifoQueue") == "true":
        policy["x-message-groups"] = True
    redrive = attributes.get("RedrivePolicy")
    if redrive:
        parsed = json.loads(redrive)
        policy["x-dead-letter-exchange"] = ""
        policy["x-dead-letter-routing-key"] = name_from_arn(parsed["deadLetterTargetArn"])
        policy["x-delivery-limit"] = parsed["maxReceiveCount"] - 1
    # SQS never dead-letters for expiry (retention deletes) nor for anything but receive counts.
    policy["x-dead-letter-reasons"] = ["delivery_limit"]
    return policy


def _apply(ctx: SqsContext, name: str, attributes: dict, tags: dict) -> None:
    try:
        ctx.vhost.set_queue_policy(name, core_policy(attributes, tags))
    except Exception as exc:  # a core refusal (e.g. grouping change on a busy queue)
        raise core_error(exc) from None


# ==================================================================== operations
async def create_queue(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = str_param(params, "QueueName")
    if not valid_queue_name(name):
        raise invalid("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 "
                      "in length")
    attributes = params.get("Attributes") or {}
    if is_fifo_name(name) and not isinstance(attributes, dict):
        raise invalid("Attributes must be a map.")
    if is_fifo_name(name) and attributes.get("FifoQueue") is None:
        # AWS requires FifoQueue=true to create a FIFO queue.
        raise invalid("The name of a FIFO queue can only include alphanumeric characters, "
                      "hyphens, or underscores, must end with .fifo suffix.")
    checked = _check_attributes(ctx, name, attributes, creating=True)
    tags = _check_tags(params.get("tags") or params.get("Tags") or {})
    existing = ctx.vhost.queues.get(name)
    if existing is not None:
        queue = ctx.queue(name)
        current = {**DEFAULTS, **ctx.sqs_attributes(queue)}
        if any(current.get(k, "") != v for k, v in checked.items()):
            raise sqs_error("QueueNameExists",
                            "A queue already exists with the same name and a different value "
                            "for attribute(s) " + ", ".join(sorted(
                                k for k, v in checked.items() if current.get(k, "") != v)))
        if "sqs-attributes" not in queue.policy:  # a queue made over AMQP/STOMP becomes SQS's
            stamp = str(now_ms() // 1000)
            _apply(ctx, name, {**DEFAULTS, **checked, "CreatedTimestamp": stamp,
                               "LastModifiedTimestamp": stamp}, tags)
        return {"QueueUrl": ctx.queue_url(request, name)}
    deleted = ctx.deleted_at.get(name)
    if deleted is not None and now_ms() / 1000 - deleted < RECENTLY_DELETED_S:
        raise sqs_error("QueueDeletedRecently",
                        "You must wait 60 seconds after deleting a queue before you can create "
                        "another with the same name.")
    stamp = str(now_ms() // 1000)
    attributes = {**DEFAULTS, **(FIFO_DEFAULTS if is_fifo_name(name) else {}), **checked,
                  "CreatedTimestamp": stamp, "LastModifiedTimestamp": stamp}
    try:
        ctx.vhost.declare_queue(name, durable=True)
    except Exception as exc:
        raise core_error(exc) from None
    _apply(ctx, name, attributes, tags)
    return {"QueueUrl": ctx.queue_url(request, name)}


def _check_tags(tags: Any) -> dict:
    if not isinstance(tags, dict):
        raise invalid("Tags must be a map.")
    if len(tags) > MAX_TAGS:
        raise invalid(f"Too many tags added for queue. Maximum is {MAX_TAGS}.")
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or not isinstance(value, str) \
                or len(value) > 256:
            raise invalid("Tag keys must be 1 to 128 characters and values at most 256.")
    return dict(tags)


async def get_queue_url(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = str_param(params, "QueueName")
    owner = params.get("QueueOwnerAWSAccountId")
    if owner not in (None, "", ACCOUNT_ID):
        raise no_queue()
    ctx.queue(name)
    return {"QueueUrl": ctx.queue_url(request, name)}


def sqs_queue_names(ctx: SqsContext) -> list[str]:
    names = []
    for name, queue in ctx.vhost.queues.items():
        if (hasattr(queue, "receive") and queue.exclusive_owner is None and not queue.deleted
                and valid_queue_name(name)):
            names.append(name)
    return sorted(names)


def page(names: list[str], params: dict) -> tuple[list[str], str | None]:
    """ListQueues-style paging: ``MaxResults`` (1 to 1000) and an opaque ``NextToken``."""
    limit = int_param(params, "MaxResults", 1, 1000)
    token = params.get("NextToken")
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise invalid("Invalid NextToken value.") from None
        names = [n for n in names if n > after]
    if limit is None:
        return names[:1000], None
    chosen = names[:limit]
    more = len(names) > limit
    return chosen, (base64.urlsafe_b64encode(chosen[-1].encode()).decode() if more else None)


async def list_queues(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    prefix = params.get("QueueNamePrefix") or ""
    names = [n for n in sqs_queue_names(ctx) if n.startswith(prefix)]
    chosen, token = page(names, params)
    result: dict[str, Any] = {}
    if chosen:
        result["QueueUrls"] = [ctx.queue_url(request, n) for n in chosen]
    if token:
        result["NextToken"] = token
    return result


async def delete_queue(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    ctx.vhost.delete_queue(name)
    ctx.remember(ctx.deleted_at, name, RECENTLY_DELETED_S)
    return {}


async def purge_queue(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    ctx.queue(name)
    last = ctx.purged_at.get(name)
    now = now_ms() / 1000
    if last is not None and now - last < PURGE_INTERVAL_S:
        raise sqs_error("PurgeQueueInProgress",
                        f"Only one PurgeQueue operation on {name} is allowed every 60 seconds.",
                        403)
    ctx.remember(ctx.purged_at, name, PURGE_INTERVAL_S)
    ctx.vhost.purge_queue(name, in_flight=True)  # SQS purges in-flight and delayed too
    return {}


async def get_queue_attributes(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    queue = ctx.queue(name)
    wanted = params.get("AttributeNames") or []
    if not isinstance(wanted, list):
        raise invalid("AttributeNames must be a list.")
    for key in wanted:
        if key != "All" and key not in SETTABLE and key not in COMPUTED:
            raise sqs_error("InvalidAttributeName", f"Unknown Attribute {key}.")
    if not wanted:
        return {}
    stored = ctx.sqs_attributes(queue)
    values = {**DEFAULTS, **stored}
    values.setdefault("CreatedTimestamp", str(now_ms() // 1000))
    values.setdefault("LastModifiedTimestamp", values["CreatedTimestamp"])
    values["QueueArn"] = queue_arn(name)
    values["ApproximateNumberOfMessages"] = str(queue.ready_count)
    values["ApproximateNumberOfMessagesNotVisible"] = str(queue.unacked_count)
    values["ApproximateNumberOfMessagesDelayed"] = str(queue.delayed_count)
    keys = list(values) if "All" in wanted else wanted
    result = {k: values[k] for k in keys if values.get(k) not in (None, "")}
    return {"Attributes": result} if result else {}


async def set_queue_attributes(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    queue = ctx.queue(name)
    if params.get("Attributes") is None:
        raise missing("Attributes")
    checked = _check_attributes(ctx, name, params.get("Attributes"), creating=False)
    stored = {**DEFAULTS, **(FIFO_DEFAULTS if ctx.is_fifo(queue) else {}),
              **ctx.sqs_attributes(queue)}
    stored.setdefault("CreatedTimestamp", str(now_ms() // 1000))
    for key, value in checked.items():
        if value == "" and key in ("RedrivePolicy", "RedriveAllowPolicy", "Policy"):
            stored.pop(key, None)  # an empty value removes the policy
        else:
            stored[key] = value
    stored["LastModifiedTimestamp"] = str(now_ms() // 1000)
    _apply(ctx, name, stored, dict(queue.policy.get("sqs-tags", {})))
    return {}


async def tag_queue(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    queue = ctx.queue(name)
    new = _check_tags(params.get("Tags") or {})
    if not new:
        raise missing("Tags")
    tags = {**queue.policy.get("sqs-tags", {}), **new}
    _check_tags(tags)
    _apply(ctx, name, _stored(ctx, queue), tags)
    return {}


async def untag_queue(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    queue = ctx.queue(name)
    keys = params.get("TagKeys")
    if not keys:
        raise missing("TagKeys")
    tags = {k: v for k, v in queue.policy.get("sqs-tags", {}).items() if k not in keys}
    _apply(ctx, name, _stored(ctx, queue), tags)
    return {}


async def list_queue_tags(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    queue = ctx.queue(ctx.queue_name(request, params))
    tags = queue.policy.get("sqs-tags", {})
    return {"Tags": dict(tags)} if tags else {}


def _stored(ctx: SqsContext, queue: Any) -> dict:
    stored = {**DEFAULTS, **ctx.sqs_attributes(queue)}
    stored.setdefault("CreatedTimestamp", str(now_ms() // 1000))
    stored.setdefault("LastModifiedTimestamp", stored["CreatedTimestamp"])
    return stored


async def add_permission(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    """Adds a statement to the queue's ``Policy`` (kept and returned; not enforced here)."""
    name = ctx.queue_name(request, params)
    queue = ctx.queue(name)
    label = str_param(params, "Label")
    accounts = params.get("AWSAccountIds") or []
    actions = params.get("Actions") or []
    if not accounts:
        raise missing("AWSAccountIds")
    if not actions:
        raise missing("Actions")
    stored = _stored(ctx, queue)
    policy = json.loads(stored.get("Policy") or '{"Version":"2012-10-17","Statement":[]}')
    statements = policy.setdefault("Statement", [])
    if any(s.get("Sid") == label for s in statements):
        raise invalid(f"Value {label} for parameter Label is invalid. Reason: Already exists.")
    statements.append({"Sid": label, "Effect": "Allow",
                       "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]},
                       "Action": [f"SQS:{a}" for a in actions], "Resource": queue_arn(name)})
    stored["Policy"] = json.dumps(policy, separators=(",", ":"))
    _apply(ctx, name, stored, dict(queue.policy.get("sqs-tags", {})))
    return {}


async def remove_permission(ctx: SqsContext, request: AwsRequest, params: dict) -> dict:
    name = ctx.queue_name(request, params)
    queue = ctx.queue(name)
    label = str_param(params, "Label")
    stored = _stored(ctx, queue)
    policy = json.loads(stored.get("Policy") or "{}")
    statements = policy.get("Statement", [])
    kept = [s for s in statements if s.get("Sid") != label]
    if len(kept) == len(statements):
        raise invalid(f"Value {label} for parameter Label is invalid. Reason: can't find label.")
    if kept:
        policy["Statement"] = kept
        stored["Policy"] = json.dumps(policy, separators=(",", ":"))
    else:
        stored.pop("Policy", None)
    _apply(ctx, name, stored, dict(queue.policy.get("sqs-tags", {})))
    return {}


OPERATIONS = {
    "CreateQueue": create_queue, "GetQueueUrl": get_queue_url, "ListQueues": list_queues,
    "DeleteQueue": delete_queue, "PurgeQueue": purge_queue,
    "GetQueueAttributes": get_queue_attributes, "SetQueueAttributes": set_queue_attributes,
    "TagQueue": tag_queue, "UntagQueue": untag_queue, "ListQueueTags": list_queue_tags,
    "AddPermission": add_permission, "RemovePermission": remove_permission,
}
