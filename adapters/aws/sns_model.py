"""SNS topics and subscriptions as plain data, validation of their attributes, and the
message attribute rules of Publish.

A topic NAME is the durable topic exchange NAME in vhost ``/``; a confirmed subscription is the
durable queue ``sns.SUBSCRIPTION_ID`` bound to it with ``#`` (see sns_delivery.py).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from . import sns_filter
from .http import ACCOUNT_ID, REGION, AwsError

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_FIFO_NAME = re.compile(r"^[A-Za-z0-9_-]{1,251}\.fifo$")
TOPIC_ATTRIBUTES = {"DisplayName", "Policy", "DeliveryPolicy", "KmsMasterKeyId",
                    "SignatureVersion", "TracingConfig", "ContentBasedDeduplication", "FifoTopic",
                    "ArchivePolicy", "DataProtectionPolicy", "FifoThroughputScope"}
SUBSCRIPTION_ATTRIBUTES = {"DeliveryPolicy", "FilterPolicy", "FilterPolicyScope",
                           "RawMessageDelivery", "RedrivePolicy", "SubscriptionRoleArn",
                           "ReplayPolicy"}
PROTOCOLS = ("sqs", "http", "https", "email", "email-json", "lambda", "firehose", "sms",
             "application")
RAW_PROTOCOLS = ("sqs", "http", "https", "firehose")
MAX_MESSAGE_BYTES = 256 * 1024
ATTRIBUTE_TYPES = ("String", "String.Array", "Number", "Binary")


def invalid(message: str) -> AwsError:
    return AwsError("InvalidParameter", f"Invalid parameter: {message}")


def not_found(what: str = "Topic does not exist") -> AwsError:
    return AwsError("NotFound", what, 404)


def topic_arn(name: str) -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{name}"


def topic_name(arn: Any) -> str:
    if not isinstance(arn, str) or not arn.startswith("arn:aws:sns:"):
        raise invalid("TopicArn")
    parts = arn.split(":")
    if len(parts) != 6:
        raise invalid("TopicArn")
    return parts[5]


def default_policy(arn: str) -> str:
    return json.dumps({"Version": "2008-10-17", "Id": "__default_policy_ID", "Statement": [{
        "Sid": "__default_statement_ID", "Effect": "Allow", "Principal": {"AWS": "*"},
        "Action": ["SNS:Publish", "SNS:Subscribe", "SNS:GetTopicAttributes",
                   "SNS:SetTopicAttributes", "SNS:DeleteTopic", "SNS:ListSubscriptionsByTopic",
                   "SNS:AddPermission", "SNS:RemovePermission", "SNS:Receive"],
        "Resource": arn, "Condition": {"StringEquals": {"AWS:SourceOwner": ACCOUNT_ID}}}]})


@dataclass
class Topic:
    name: str
    attributes: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return topic_arn(self.name)

    @property
    def fifo(self) -> bool:
        return self.attributes.get("FifoTopic") == "true"

    @property
    def signature_version(self) -> str:
        return self.attributes.get("SignatureVersion", "1")

    def to_value(self) -> dict:
        return asdict(self)


@dataclass
class Subscription:
    id: str
    topic: str
    protocol: str
    endpoint: str
    base_url: str                    # this listener's URL as the subscriber saw it
    attributes: dict = field(default_factory=dict)
    confirmed: bool = False
    token: str = ""
    #: ConfirmSubscription's AuthenticateOnUnsubscribe: Unsubscribe must then be signed
    authenticate_on_unsubscribe: bool = False

    @property
    def topic_arn(self) -> str:
        return topic_arn(self.topic)

    @property
    def arn(self) -> str:
        return f"{self.topic_arn}:{self.id}"

    @property
    def queue(self) -> str:
        return f"sns.{self.id}"

    @property
    def raw(self) -> bool:
        return self.attributes.get("RawMessageDelivery") == "true"

    @property
    def filter_policy(self) -> dict | None:
        text = self.attributes.get("FilterPolicy")
        return json.loads(text) if text else None

    @property
    def filter_scope(self) -> str:
        return self.attributes.get("FilterPolicyScope", "MessageAttributes")

    @property
    def dead_letter_arn(self) -> str | None:
        text = self.attributes.get("RedrivePolicy")
        return json.loads(text).get("deadLetterTargetArn") if text else None

    def to_value(self) -> dict:
        return asdict(self)


# ================================================================== validation
def check_topic_name(name: Any, attributes: dict) -> None:
    fifo = attributes.get("FifoTopic") == "true"
    if not isinstance(name, str) or not (_FIFO_NAME if fifo else _TOPIC_NAME).match(name):
        if isinstance(name, str) and name.endswith(".fifo") and not fifo:
            raise invalid("Topic Name")
        raise invalid("Topic Name" if not fifo else
                      "Fifo Topic names must end with .fifo and must be made up of only "
                      "uppercase and lowercase ASCII letters, numbers, underscores, and "
                      "hyphens, and must be between 1 and 256 characters long.")


def check_topic_attribute(topic: Topic | None, name: str, value: Any, creating: bool) -> None:
    if name not in TOPIC_ATTRIBUTES:
        raise invalid("AttributeName")
    if not isinstance(value, str):
        raise invalid(f"Attributes Reason: {name} must be a string")
    if name == "FifoTopic" and not creating:
        raise invalid("AttributeName")
    if name in ("FifoTopic", "ContentBasedDeduplication") and value not in ("true", "false"):
        raise invalid(f"Attributes Reason: {name} must be true or false")
    if name == "ContentBasedDeduplication" and value == "true" and topic is not None and \
            not topic.fifo:
        raise invalid("Attributes Reason: Content-based deduplication can only be set for "
                      "FIFO topics")
    if name == "SignatureVersion" and value not in ("1", "2"):
        raise invalid("Attributes Reason: SignatureVersion must be 1 or 2")
    if name in ("Policy", "DeliveryPolicy") and value:
        try:
            json.loads(value)
        except ValueError:
            raise invalid(f"Attributes Reason: {name}: failed to parse JSON") from None


def check_subscription_attribute(protocol: str, name: str, value: Any) -> None:
    if name not in SUBSCRIPTION_ATTRIBUTES:
        raise invalid("AttributeName")
    if not isinstance(value, str):
        raise invalid(f"Attributes Reason: {name} must be a string")
    if name == "RawMessageDelivery":
        if value.lower() not in ("true", "false"):
            raise invalid("Attributes Reason: RawMessageDelivery: Invalid value [" + value +
                          "]. Must be true or false.")
        if protocol not in RAW_PROTOCOLS:
            raise invalid(f"Attributes Reason: Delivery protocol [{protocol}] does not support "
                          "raw message delivery.")
    elif name == "FilterPolicyScope":
        if value not in ("MessageAttributes", "MessageBody"):
            raise invalid("Attributes Reason: FilterPolicyScope: Invalid value [" + value +
                          "]. Please use either MessageBody or MessageAttributes")
    elif name == "RedrivePolicy" and value:
        try:
            policy = json.loads(value)
        except ValueError:
            raise invalid("RedrivePolicy: failed to parse JSON.") from None
        target = policy.get("deadLetterTargetArn") if isinstance(policy, dict) else None
        if not isinstance(target, str) or not target.startswith("arn:aws:sqs:"):
            raise invalid("RedrivePolicy: deadLetterTargetArn is an invalid arn")
    elif name == "DeliveryPolicy" and value:
        try:
            policy = json.loads(value)
        except ValueError:
            raise invalid("DeliveryPolicy: failed to parse JSON") from None
        retry = policy.get("healthyRetryPolicy", {}) if isinstance(policy, dict) else None
        if not isinstance(retry, dict):
            raise invalid("DeliveryPolicy: healthyRetryPolicy must be an object")
        for key in ("minDelayTarget", "maxDelayTarget", "numRetries", "numNoDelayRetries",
                    "numMinDelayRetries", "numMaxDelayRetries"):
            if key in retry and (not isinstance(retry[key], int) or retry[key] < 0):
                raise invalid(f"DeliveryPolicy: {key} must be a non-negative integer")
        if retry.get("numRetries", 3) > 100:
            raise invalid("DeliveryPolicy: numRetries must be between 0 and 100")
        if retry.get("minDelayTarget", 20) > retry.get("maxDelayTarget", 20):
            raise invalid("DeliveryPolicy: minDelayTarget must be less than or equal to "
                          "maxDelayTarget")


def check_subscription_attributes(protocol: str, attributes: dict) -> dict:
    """Validated (and normalised) subscription attributes."""
    out = {}
    for name, value in attributes.items():
        check_subscription_attribute(protocol, name, value)
        out[name] = value.lower() if name == "RawMessageDelivery" else value
    scope = out.get("FilterPolicyScope", "MessageAttributes")
    if out.get("FilterPolicy"):
        sns_filter.parse(out["FilterPolicy"], scope == "MessageBody")
    return out


def check_endpoint(protocol: Any, endpoint: Any) -> None:
    if protocol not in PROTOCOLS:
        raise invalid(f"Amazon SNS does not support this protocol string: {protocol}")
    if not isinstance(endpoint, str) or not endpoint:
        raise invalid("Endpoint")
    ok = {
        "sqs": endpoint.startswith("arn:aws:sqs:"),
        "http": endpoint.startswith("http://"),
        "https": endpoint.startswith("https://"),
        "email": "@" in endpoint, "email-json": "@" in endpoint,
        "lambda": endpoint.startswith("arn:aws:lambda:") and ":function:" in endpoint,
        "firehose": endpoint.startswith("arn:aws:firehose:") and ":deliverystream/" in endpoint,
        "sms": bool(re.match(r"^\+?[0-9]{5,15}$", endpoint)),
        "application": endpoint.startswith("arn:aws:sns:"),
    }[protocol]
    if not ok:
        raise invalid(f"{'SQS endpoint ARN' if protocol == 'sqs' else 'Endpoint'}: "
                      f"{endpoint}" if protocol != "http" else
                      "Endpoint must match the specified protocol")


def check_message_attributes(attributes: Any) -> dict:
    """Publish MessageAttributes: types String, String.Array, Number, Binary (and custom
    suffixes), as SNS validates them; values are checked, Binary values are bytes."""
    if not attributes:
        return {}
    if not isinstance(attributes, dict):
        raise AwsError("ParameterValueInvalid", "MessageAttributes must be a map")
    if len(attributes) > 10:
        raise invalid("Message attributes: number of message attributes exceeds 10")
    for name, value in attributes.items():
        if not isinstance(value, dict) or not value.get("DataType"):
            raise AwsError("ParameterValueInvalid", f"The message attribute '{name}' must "
                           "contain non-empty message attribute value.")
        data_type = value["DataType"]
        base = data_type if data_type == "String.Array" else data_type.split(".", 1)[0]
        if base not in ATTRIBUTE_TYPES:
            raise AwsError("ParameterValueInvalid", f"The message attribute '{name}' has an "
                           f"invalid message attribute type, the set of supported type "
                           "prefixes is Binary, Number, and String.")
        if base == "Binary":
            if value.get("BinaryValue") is None:
                raise AwsError("ParameterValueInvalid", f"The message attribute '{name}' with "
                               "type 'Binary' must use field 'Binary'.")
            continue
        text = value.get("StringValue")
        if not isinstance(text, str) or text == "":
            raise AwsError("ParameterValueInvalid", f"The message attribute '{name}' must "
                           "contain non-empty message attribute value for message attribute "
                           f"type '{base}'.")
        if base == "Number":
            try:
                number = float(text)
            except ValueError:
                number = None
            if number is None or abs(number) > 1e9:
                raise AwsError("ParameterValueInvalid", f"An invalid or out-of-range value "
                               f"'{text}' was supplied for message attribute '{name}' of type "
                               "'Number'.")
        if base == "String.Array":
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if not isinstance(parsed, list):
                raise AwsError("ParameterValueInvalid", f"The message attribute '{name}' has "
                               "an invalid message attribute type, String.Array value must be "
                               "a JSON array.")
    return attributes
