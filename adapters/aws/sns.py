"""Amazon SNS (query protocol, 2010-03-31) on the core's exchanges: topics, subscriptions,
Publish and PublishBatch. See MAPPING.md and sns_model.py / sns_delivery.py.

Topics and subscriptions (and the message-signing key) live in the store's ``sns`` state log (a
DurableMap); each change is on disk before the call answers. A Publish answers once the message
is on disk in the queue of every confirmed subscription (and every durable AMQP queue bound to
the topic's exchange).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import secrets
import time
import uuid
from typing import Any

from aiohttp import web

from manifold.broker.errors import BrokerError

from . import sns_wire
from .attributes import to_message
from .http import ACCOUNT_ID, WRONG_SHAPE, AwsApi, AwsError, AwsRequest
from .sigv4 import require
from .sns_delivery import (DEFAULT_RETRY, HTTP_PROTOCOLS, QUICK_RETRY, STRUCTURE_HEADER,
                           SUBJECT_HEADER, Sender, SubscriptionWorker)
from .sns_model import (MAX_MESSAGE_BYTES, Subscription, Topic, check_endpoint,
                        check_message_attributes, check_subscription_attributes,
                        check_topic_attribute, check_topic_name, default_policy, invalid,
                        not_found, topic_name)

log = logging.getLogger("manifold.aws.sns")

VHOST = "/"
#: the permission (RabbitMQ's model) an operation needs on the topic's exchange
PERMISSIONS = {
    "CreateTopic": "configure", "DeleteTopic": "configure", "SetTopicAttributes": "configure",
    "TagResource": "configure", "UntagResource": "configure",
    "SetSubscriptionAttributes": "configure",
    "Publish": "write", "PublishBatch": "write", "Subscribe": "read",
}
DEDUP_WINDOW_MS = 5 * 60 * 1000
MAX_BATCH = 10
PAGE = 100


def _now_ms() -> int:
    return int(time.time() * 1000)


def _decode_binary(attributes: dict) -> dict:
    """Query-protocol Binary values arrive base64-encoded."""
    for value in attributes.values():
        if isinstance(value, dict) and isinstance(value.get("BinaryValue"), str):
            try:
                value["BinaryValue"] = base64.b64decode(value["BinaryValue"], validate=True)
            except (binascii.Error, ValueError):
                raise AwsError("ParameterValueInvalid", "Binary value is not valid base64") \
                    from None
    return attributes


class Sns:
    def __init__(self, broker: Any, settings: Any, sqs: Any, firehose: Any):
        self.vhost = broker.vhosts[VHOST]
        self.outbox = broker.outbox  # sms and application deliveries (broker/outbox.py)
        self.settings = settings
        self.sqs = sqs
        self.firehose = firehose
        self.state = broker.state_map("sns")
        saved = self.state.load()
        self.topics: dict[str, Topic] = {}
        self.subscriptions: dict[str, Subscription] = {}   # id -> subscription
        for key, value in saved.items():
            if key[0] == "topic":
                self.topics[key[1]] = Topic(**value)
            elif key[0] == "subscription":
                self.subscriptions[key[1]] = Subscription(**value)
        self.signer = sns_wire.Signer(saved.get(("signer", "")))
        self.sender = Sender(self)
        self.workers: dict[str, SubscriptionWorker] = {}
        self.background: set = set()
        self._last_sequence = 0

    async def start(self) -> None:
        if self.signer.created:
            await self.state.put_durably(("signer", ""), self.signer.saved())
        for topic in self.topics.values():
            self.vhost.declare_exchange(topic.name, "topic", durable=True)
        for sub in self.subscriptions.values():
            if sub.confirmed:
                self._start_worker(sub)

    async def close(self) -> None:
        for sub_id in list(self.workers):
            self._stop_worker(sub_id)
        for task in list(self.background):
            task.cancel()
        await self.sender.close()

    # -- helpers -------------------------------------------------------------------------------
    def _background(self, coroutine: Any) -> None:
        """A one-shot send (confirmation, unsubscribe notice) that the caller does not wait for."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _start_worker(self, sub: Subscription) -> None:
        if sub.queue not in self.vhost.queues:
            self.vhost.declare_queue(sub.queue, durable=True)
        self.vhost.bind_queue(sub.queue, sub.topic, "#")
        worker = SubscriptionWorker(self, sub)
        self.workers[sub.id] = worker
        self.vhost.consume(sub.queue, worker)

    def _stop_worker(self, sub_id: str) -> None:
        worker = self.workers.pop(sub_id, None)
        if worker is not None:
            left = worker.close()
            self.vhost.cancel(worker)
            self.vhost.requeue(left)

    def message_id(self, message: Any) -> str:
        own = message.properties.message_id
        if own:
            return str(own)
        # an AMQP publish without a message id: the same id on every redelivery
        digest = hashlib.sha256(message.body + str(message.timestamp_ms).encode()).hexdigest()
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"manifold:sns:{digest}"))

    def retry_policy(self, sub: Subscription) -> dict:
        """The subscription's healthyRetryPolicy, else the topic's default for HTTP/S."""
        text = sub.attributes.get("DeliveryPolicy")
        if text:
            policy = json.loads(text).get("healthyRetryPolicy")
            if policy:
                return policy
        topic = self.topics.get(sub.topic)
        if sub.protocol in HTTP_PROTOCOLS:
            text = topic.attributes.get("DeliveryPolicy") if topic else None
            if text:
                policy = (json.loads(text).get("http") or {}).get("defaultHealthyRetryPolicy")
                if policy:
                    return policy
            return DEFAULT_RETRY
        return QUICK_RETRY

    def function(self, arn: str) -> Any:
        name = arn.split(":function:", 1)[-1].split(":", 1)[0]
        return next((f for f in self.settings.functions if f.name == name), None)

    def base_url(self, request: AwsRequest) -> str:
        host = self.settings.http.advertised_host
        if host:
            port = request.http.url.port
            return f"http://{host}:{port}" if port and ":" not in host else f"http://{host}"
        return f"{request.http.scheme}://{request.http.host}"

    def topic(self, arn: Any) -> Topic:
        topic = self.topics.get(topic_name(arn))
        if topic is None:
            raise not_found()
        return topic

    def subscription(self, arn: Any) -> Subscription:
        if not isinstance(arn, str) or arn.count(":") != 6:
            raise invalid("SubscriptionArn")
        sub = self.subscriptions.get(arn.rsplit(":", 1)[1])
        if sub is None or sub.arn != arn:
            raise not_found("Subscription does not exist")
        return sub

    def check_permission(self, request: AwsRequest, p: dict) -> None:
        """AccessDenied unless the signing key's user may do this to the topic's exchange:
        configure (topic and subscription changes), write (Publish), read (Subscribe)."""
        action = PERMISSIONS.get(request.operation)
        if action is None or request.grant is None:
            return
        if request.operation == "CreateTopic":
            name = p.get("Name")
        elif request.operation in ("SetSubscriptionAttributes",):
            arn = p.get("SubscriptionArn")
            name = arn.split(":")[5] if isinstance(arn, str) and arn.count(":") == 6 else None
        else:
            arn = p.get("TopicArn") or p.get("ResourceArn")
            name = arn.split(":")[5] if isinstance(arn, str) and arn.count(":") == 5 else None
        if isinstance(name, str):
            require(request, action, "exchange", name)

    # -- topics --------------------------------------------------------------------------------
    async def create_topic(self, request: AwsRequest, p: dict) -> dict:
        name = p.get("Name")
        attributes = p.get("Attributes") or {}
        check_topic_name(name, attributes)
        existing = self.topics.get(name)
        if existing is not None:
            if any(existing.attributes.get(k, "") != v for k, v in attributes.items()
                   if k != "Policy"):
                raise invalid("Attributes Reason: Topic already exists with different "
                              "attributes")
            return {"TopicArn": existing.arn}
        topic = Topic(name, dict(attributes))
        for key, value in attributes.items():
            check_topic_attribute(topic, key, value, creating=True)
        if str(name).endswith(".fifo") != topic.fifo:
            raise invalid("Topic Name")
        topic.tags = {t["Key"]: t.get("Value", "") for t in p.get("Tags") or []}
        try:
            self.vhost.declare_exchange(name, "topic", durable=True)
        except BrokerError as exc:
            raise invalid(f"Topic Name: the exchange '{name}' exists with another type "
                          f"({exc})") from None
        self.topics[name] = topic
        await self.state.put_durably(("topic", name), topic.to_value())
        return {"TopicArn": topic.arn}

    async def delete_topic(self, request: AwsRequest, p: dict) -> dict:
        name = topic_name(p.get("TopicArn"))
        if name not in self.topics:
            return {}
        for sub in [s for s in self.subscriptions.values() if s.topic == name]:
            await self._remove_subscription(sub)
        del self.topics[name]
        self.vhost.delete_exchange(name)
        await self.state.delete_durably(("topic", name))
        return {}

    async def list_topics(self, request: AwsRequest, p: dict) -> dict:
        names = sorted(self.topics)
        start = int(p.get("NextToken") or 0)
        page = names[start:start + PAGE]
        out: dict[str, Any] = {"Topics": [{"TopicArn": self.topics[n].arn} for n in page]}
        if start + PAGE < len(names):
            out["NextToken"] = str(start + PAGE)
        return out

    async def get_topic_attributes(self, request: AwsRequest, p: dict) -> str:
        topic = self.topic(p.get("TopicArn"))
        subs = [s for s in self.subscriptions.values() if s.topic == topic.name]
        attributes = {"TopicArn": topic.arn, "Owner": ACCOUNT_ID,
                      "Policy": default_policy(topic.arn), "DisplayName": "",
                      "SubscriptionsConfirmed": str(sum(s.confirmed for s in subs)),
                      "SubscriptionsPending": str(sum(not s.confirmed for s in subs)),
                      "SubscriptionsDeleted": "0",
                      "EffectiveDeliveryPolicy": json.dumps({"http": {
                          "defaultHealthyRetryPolicy": DEFAULT_RETRY,
                          "disableSubscriptionOverrides": False}})}
        if topic.fifo:
            attributes["ContentBasedDeduplication"] = "false"
        attributes.update(topic.attributes)
        return sns_wire.attributes_xml(attributes)

    async def set_topic_attributes(self, request: AwsRequest, p: dict) -> dict:
        topic = self.topic(p.get("TopicArn"))
        name, value = p.get("AttributeName"), p.get("AttributeValue", "")
        check_topic_attribute(topic, name, value, creating=False)
        topic.attributes[name] = value
        await self.state.put_durably(("topic", topic.name), topic.to_value())
        return {}

    async def tag_resource(self, request: AwsRequest, p: dict) -> dict:
        topic = self.topic(p.get("ResourceArn"))
        tags = {t["Key"]: t.get("Value", "") for t in p.get("Tags") or []}
        if len({**topic.tags, **tags}) > 50:
            raise AwsError("TagLimitExceeded", "Could not complete request: tag quota of per "
                           "resource exceeded")
        topic.tags.update(tags)
        await self.state.put_durably(("topic", topic.name), topic.to_value())
        return {}

    async def untag_resource(self, request: AwsRequest, p: dict) -> dict:
        topic = self.topic(p.get("ResourceArn"))
        for key in p.get("TagKeys") or []:
            topic.tags.pop(key, None)
        await self.state.put_durably(("topic", topic.name), topic.to_value())
        return {}

    async def list_tags(self, request: AwsRequest, p: dict) -> dict:
        topic = self.topic(p.get("ResourceArn"))
        return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(topic.tags.items())]}

    # -- subscriptions -------------------------------------------------------------------------
    async def subscribe(self, request: AwsRequest, p: dict) -> dict:
        topic = self.topic(p.get("TopicArn"))
        protocol, endpoint = p.get("Protocol"), p.get("Endpoint")
        if isinstance(protocol, str):
            protocol = protocol.lower()
        check_endpoint(protocol, endpoint)
        attributes = check_subscription_attributes(protocol, p.get("Attributes") or {})
        self._check_targets(request, protocol, endpoint, attributes)
        if protocol == "lambda" and self.function(endpoint) is None:
            raise invalid(f"Lambda endpoint {endpoint}: no [[functions]] entry of that name")
        if protocol in ("email", "email-json") and not self.settings.sns.smtp_url:
            raise invalid("Endpoint Reason: email delivery needs [sns] smtp_url")
        if protocol == "sqs" and endpoint.endswith(".fifo") and not topic.fifo:
            raise invalid("Invalid parameter: Endpoint Reason: FIFO SQS Queues can not be "
                          "subscribed to standard SNS topics")
        for sub in self.subscriptions.values():
            if (sub.topic, sub.protocol, sub.endpoint) == (topic.name, protocol, endpoint):
                if attributes and any(sub.attributes.get(k) != v for k, v in attributes.items()):
                    raise invalid("Attributes Reason: Subscription already exists with "
                                  "different attributes")
                return {"SubscriptionArn": sub.arn if sub.confirmed or
                        p.get("ReturnSubscriptionArn") in ("true", True)
                        else "pending confirmation"}
        needs_confirmation = protocol in (*HTTP_PROTOCOLS, "email", "email-json")
        sub = Subscription(str(uuid.uuid4()), topic.name, protocol, endpoint,
                           self.base_url(request), attributes, confirmed=not needs_confirmation,
                           token=secrets.token_hex(64) if needs_confirmation else "")
        self.subscriptions[sub.id] = sub
        await self.state.put_durably(("subscription", sub.id), sub.to_value())
        if sub.confirmed:
            self._start_worker(sub)
            return {"SubscriptionArn": sub.arn}
        self._background(self.sender.confirm_request(sub))
        return {"SubscriptionArn": sub.arn if p.get("ReturnSubscriptionArn") in ("true", True)
                else "pending confirmation"}

    @staticmethod
    def _check_targets(request: AwsRequest, protocol: str, endpoint: str,
                       attributes: dict) -> None:
        """Whoever subscribes a queue (or names a dead-letter queue) must be allowed to write
        to it: deliveries go in on the subscriber's authority."""
        targets = []
        if protocol == "sqs":
            targets.append(endpoint.rsplit(":", 1)[-1])
        elif protocol == "firehose":
            targets.append("firehose." + endpoint.rsplit("/", 1)[-1])
        dead = attributes.get("RedrivePolicy")
        if dead:
            targets.append(json.loads(dead)["deadLetterTargetArn"].rsplit(":", 1)[-1])
        for name in targets:
            require(request, "write", "queue", name)

    async def confirm_subscription(self, request: AwsRequest, p: dict) -> dict:
        name = topic_name(p.get("TopicArn"))
        token = p.get("Token")
        if name not in self.topics:
            raise not_found()
        for sub in self.subscriptions.values():
            if sub.topic == name and sub.token and sub.token == token:
                if not sub.confirmed:
                    sub.confirmed = True
                    sub.authenticate_on_unsubscribe = str(
                        p.get("AuthenticateOnUnsubscribe", "")).lower() == "true"
                    await self.state.put_durably(("subscription", sub.id), sub.to_value())
                    self._start_worker(sub)
                return {"SubscriptionArn": sub.arn}
        raise invalid("Token")

    async def _remove_subscription(self, sub: Subscription) -> None:
        self._stop_worker(sub.id)
        self.subscriptions.pop(sub.id, None)
        self.vhost.delete_queue(sub.queue)
        await self.state.delete_durably(("subscription", sub.id))

    async def unsubscribe(self, request: AwsRequest, p: dict) -> dict:
        sub = self.subscription(p.get("SubscriptionArn"))
        if sub.authenticate_on_unsubscribe and request.user is None:
            raise AwsError("AuthorizationError", "The subscription requires an authenticated "
                           "Unsubscribe (AuthenticateOnUnsubscribe)", 403)
        await self._remove_subscription(sub)
        if sub.protocol in HTTP_PROTOCOLS and sub.confirmed:
            self._background(self.sender.unsubscribed(sub))
        return {}

    def _list(self, subs: list[Subscription], p: dict) -> dict:
        subs = sorted(subs, key=lambda s: (s.topic, s.id))
        start = int(p.get("NextToken") or 0)
        page = subs[start:start + PAGE]
        out: dict[str, Any] = {"Subscriptions": [
            {"SubscriptionArn": s.arn if s.confirmed else "PendingConfirmation",
             "Owner": ACCOUNT_ID, "Protocol": s.protocol, "Endpoint": s.endpoint,
             "TopicArn": s.topic_arn} for s in page]}
        if start + PAGE < len(subs):
            out["NextToken"] = str(start + PAGE)
        return out

    async def list_subscriptions(self, request: AwsRequest, p: dict) -> dict:
        return self._list(list(self.subscriptions.values()), p)

    async def list_subscriptions_by_topic(self, request: AwsRequest, p: dict) -> dict:
        topic = self.topic(p.get("TopicArn"))
        return self._list([s for s in self.subscriptions.values() if s.topic == topic.name], p)

    async def get_subscription_attributes(self, request: AwsRequest, p: dict) -> str:
        sub = self.subscription(p.get("SubscriptionArn"))
        attributes = {"SubscriptionArn": sub.arn, "TopicArn": sub.topic_arn, "Owner": ACCOUNT_ID,
                      "Protocol": sub.protocol, "Endpoint": sub.endpoint,
                      "ConfirmationWasAuthenticated": "true",
                      "PendingConfirmation": "false" if sub.confirmed else "true",
                      "RawMessageDelivery": "false",
                      "EffectiveDeliveryPolicy": json.dumps(
                          {"healthyRetryPolicy": self.retry_policy(sub)}),
                      **sub.attributes}
        return sns_wire.attributes_xml(attributes)

    async def set_subscription_attributes(self, request: AwsRequest, p: dict) -> dict:
        sub = self.subscription(p.get("SubscriptionArn"))
        name, value = p.get("AttributeName"), p.get("AttributeValue", "")
        merged = check_subscription_attributes(sub.protocol, {**sub.attributes, name: value})
        if name == "RedrivePolicy":
            self._check_targets(request, "", "", {name: value})
        sub.attributes = merged
        await self.state.put_durably(("subscription", sub.id), sub.to_value())
        return {}

    # -- publish -------------------------------------------------------------------------------
    def _sequence(self) -> str:
        self._last_sequence = max(self._last_sequence + 1, time.time_ns())
        return f"{self._last_sequence:020d}"

    def _prepare(self, topic: Topic, entry: dict) -> tuple[dict, Any]:
        """Check and publish one message; (result, awaitable until durable or None)."""
        text = entry.get("Message")
        if not isinstance(text, str) or not text:
            raise invalid("Empty message")
        structure = entry.get("MessageStructure")
        if structure is not None:
            if structure != "json":
                raise invalid("MessageStructure")
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise invalid("Message Structure - JSON message body failed to parse")
            if "default" not in parsed:
                raise invalid("Message Structure - No default entry in JSON message body")
        subject = entry.get("Subject")
        if subject is not None and (not isinstance(subject, str) or not subject or
                                    len(subject) > 100 or not subject.isascii() or
                                    any(c in subject for c in "\r\n")):
            raise invalid("Subject")
        attributes = check_message_attributes(_decode_binary(
            entry.get("MessageAttributes") or {}))
        size = len(text.encode()) + sum(
            len(k) + len(v.get("DataType", "")) + len(v.get("StringValue", "") or "") +
            len(v.get("BinaryValue", b"") or b"") for k, v in attributes.items())
        if size > MAX_MESSAGE_BYTES:
            raise invalid("Message too long")
        group = entry.get("MessageGroupId")
        dedup = entry.get("MessageDeduplicationId")
        window = None
        result: dict[str, Any] = {}
        if topic.fifo:
            if not group:
                raise invalid("The MessageGroupId parameter is required for FIFO topics")
            if not dedup:
                if topic.attributes.get("ContentBasedDeduplication") != "true":
                    raise invalid("The topic should either have ContentBasedDeduplication "
                                  "enabled or MessageDeduplicationId provided explicitly")
                dedup = hashlib.sha256(text.encode()).hexdigest()
            window = self.vhost.dedup_window(f"sns.topic.{topic.name}", DEDUP_WINDOW_MS)
            first = window.seen(dedup)
            if first is not None:  # [SNS FIFO] a duplicate within 5 minutes is not delivered
                return {"MessageId": first[0], "SequenceNumber": first[1]}, None
        elif dedup is not None:
            raise invalid("MessageDeduplicationId Reason: The request includes "
                          "MessageDeduplicationId parameter that is not valid for this topic "
                          "type")
        message_id = str(uuid.uuid4())
        sequence = self._sequence() if topic.fifo else None
        core = to_message(text, attributes, message_id=message_id, sent_ms=_now_ms(),
                          group_id=group if topic.fifo else None, dedup_id=dedup,
                          sequence_number=sequence, routing_key=topic.name)
        headers = dict(core.properties.headers or {})
        if subject is not None:
            headers[SUBJECT_HEADER] = subject
        if structure:
            headers[STRUCTURE_HEADER] = structure
        core.properties.headers = headers or None
        core.exchange = topic.name
        published = self.vhost.publish(topic.name, topic.name, core)
        waits = [published.wait] if published.wait is not None else []
        result["MessageId"] = message_id
        if window is not None:
            written = window.add(dedup, [message_id, sequence])
            if written is not None:
                waits.append(written)
            result["SequenceNumber"] = sequence
        return result, waits

    async def publish(self, request: AwsRequest, p: dict) -> dict:
        target = p.get("TargetArn")
        direct = p.get("PhoneNumber") or (
            target if isinstance(target, str) and ":endpoint/" in target else None)
        if direct:
            # [SNS] a direct publish to a phone number or a platform endpoint: no carrier to
            # reach, so it goes to the outbox (and the log), as LocalStack does
            text = p.get("Message")
            if not isinstance(text, str) or not text:
                raise invalid("Empty message")
            self.outbox.add({"protocol": "sms" if p.get("PhoneNumber") else
                                       "application", "endpoint": direct, "message": text,
                                       "timestamp": _now_ms()})
            log.info("SNS direct publish to %s (outbox): %s", direct, text[:200])
            return {"MessageId": str(uuid.uuid4())}
        topic = self.topic(p.get("TopicArn") or p.get("TargetArn"))
        result, waits = self._prepare(topic, p)
        for wait in waits or []:
            await wait  # [issue 13] Publish answers once every subscriber's copy is on disk
        return result

    async def publish_batch(self, request: AwsRequest, p: dict) -> dict:
        topic = self.topic(p.get("TopicArn"))
        entries = p.get("PublishBatchRequestEntries") or []
        if not entries:
            raise AwsError("EmptyBatchRequest", "The batch request doesn't contain any entries")
        if len(entries) > MAX_BATCH:
            raise AwsError("TooManyEntriesInBatchRequest", "The batch request contains more "
                           "entries than permissible.")
        ids = [e.get("Id") for e in entries]
        if len(set(ids)) != len(ids):
            raise AwsError("BatchEntryIdsNotDistinct", "Two or more batch entries in the "
                           "request have the same Id.")
        if any(not isinstance(i, str) or not i or len(i) > 80 or
               not all(c.isalnum() or c in "-_" for c in i) for i in ids):
            raise AwsError("InvalidBatchEntryId", "The Id of a batch entry in a batch request "
                           "doesn't abide by the specification.")
        if sum(len(str(e.get("Message", "")).encode()) for e in entries) > MAX_MESSAGE_BYTES:
            raise AwsError("BatchRequestTooLong", "The length of all the messages put together "
                           "is more than the limit.")
        successful, failed, waits = [], [], []
        for entry in entries:
            try:
                result, written = self._prepare(topic, entry)
            except AwsError as exc:
                failed.append({"Id": entry["Id"], "Code": exc.code, "Message": exc.message,
                               "SenderFault": True})
                continue
            successful.append({"Id": entry["Id"], **result})
            waits.extend(written or [])
        for wait in waits:
            await wait
        return {"Successful": successful, "Failed": failed}


# ================================================================== wiring
SNS_KEY = web.AppKey("manifold.sns", Sns)


def install(api: AwsApi, sqs: Any, firehose: Any) -> Sns:
    sns = Sns(api.broker, api.settings, sqs, firehose)
    operations = {
        "CreateTopic": sns.create_topic, "DeleteTopic": sns.delete_topic,
        "ListTopics": sns.list_topics, "GetTopicAttributes": sns.get_topic_attributes,
        "SetTopicAttributes": sns.set_topic_attributes, "TagResource": sns.tag_resource,
        "UntagResource": sns.untag_resource, "ListTagsForResource": sns.list_tags,
        "Subscribe": sns.subscribe, "ConfirmSubscription": sns.confirm_subscription,
        "Unsubscribe": sns.unsubscribe, "ListSubscriptions": sns.list_subscriptions,
        "ListSubscriptionsByTopic": sns.list_subscriptions_by_topic,
        "GetSubscriptionAttributes": sns.get_subscription_attributes,
        "SetSubscriptionAttributes": sns.set_subscription_attributes,
        "Publish": sns.publish, "PublishBatch": sns.publish_batch,
    }

    async def handle(request: AwsRequest) -> Any:
        if request.operation == "GetSigningCertificate":
            return web.Response(body=sns.signer.cert_pem, content_type="application/x-pem-file")
        operation = operations.get(request.operation)
        if operation is None:
            raise AwsError("InvalidAction", f"The action {request.operation} is not valid for "
                           "this endpoint.")
        if (request.service, request.operation) in api.unsigned and api.authenticate and (
                "Authorization" in request.http.headers or "X-Amz-Signature" in request.http.query):
            await api.authenticate(request)  # signed anyway: then the signature must hold
        params = sns_wire.unflatten(request.params)
        sns.check_permission(request, params)
        try:
            result = await operation(request, params)
        except WRONG_SHAPE as exc:  # query values are text: a number or JSON that is not
            raise AwsError("InvalidParameter", f"Invalid parameter: {exc}") from None
        xml = result if isinstance(result, str) else sns_wire.to_xml(result)
        return sns_wire.response(request.operation, xml, request.request_id)

    async def on_startup(_app: web.Application) -> None:
        await sns.start()

    async def on_shutdown(_app: web.Application) -> None:
        await sns.close()

    api.register_query("sns", handle)
    # [SNS] SubscribeURL and UnsubscribeURL are plain links; the token (or the subscription's
    # AuthenticateOnUnsubscribe) is what protects them, and the signing certificate is public.
    api.unsigned.update({("sns", "ConfirmSubscription"), ("sns", "GetSigningCertificate"),
                         ("sns", "Unsubscribe")})
    api.app.on_startup.append(on_startup)
    api.app.on_shutdown.append(on_shutdown)
    api.app[SNS_KEY] = sns
    return sns
