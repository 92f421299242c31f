"""SNS deliveries: one worker per confirmed subscription, reading its durable core queue.

Each confirmed subscription owns the durable queue ``sns.SUBSCRIPTION_ID`` bound with ``#`` to
the topic's exchange, so a Publish that answered is on disk in every subscription's queue (and an
AMQP publish to the exchange reaches every subscriber the same way). The worker takes messages off
that queue (at most ``PREFETCH`` at a time), applies the filter policy, sends with retries as the
DeliveryPolicy says, sends what still fails to the subscription's dead-letter queue
(RedrivePolicy), and only then acks. A message not yet acked when the broker dies is still in the
queue: delivery (and the HTTP retries) start again after the restart. At least once, as SNS.
"""
from __future__ import annotations

import asyncio
import email.message
import json
import logging
import shlex
import smtplib
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import urlparse

import aiohttp

from manifold.broker.consumer import Consumer, Delivery

from . import sns_filter, sns_wire
from .attributes import (DEDUP_HEADER, GROUP_HEADER, SEQUENCE_HEADER, body_text, header,
                         message_attributes)
from .http import AwsError, AwsRequest
from .sqs_messages import send_message  # the SQS send path: FIFO dedup, validation, fsync

log = logging.getLogger("manifold.aws.sns")

PREFETCH = 64
SUBJECT_HEADER = "x-sns-subject"
STRUCTURE_HEADER = "x-sns-message-structure"
SNS_HEADERS = (SUBJECT_HEADER, STRUCTURE_HEADER)
#: [SNS DeliveryPolicy] AWS's default for HTTP/S: 3 retries, 20 s apart
DEFAULT_RETRY = {"minDelayTarget": 20, "maxDelayTarget": 20, "numRetries": 3,
                 "numNoDelayRetries": 0, "numMinDelayRetries": 0, "numMaxDelayRetries": 0,
                 "backoffFunction": "linear"}
#: other protocols (sqs, lambda, firehose...): a few quick retries before the dead-letter queue
QUICK_RETRY = {**DEFAULT_RETRY, "minDelayTarget": 1, "maxDelayTarget": 5}
HTTP_PROTOCOLS = ("http", "https")


class DeliveryFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def retry_delays(policy: dict) -> list[float]:
    """The waits before each retry: no-delay retries, min-delay retries, the backoff phase
    (linear, arithmetic, geometric or exponential from min to max), then max-delay retries."""
    p = {**DEFAULT_RETRY, **policy}
    low, high = float(p["minDelayTarget"]), float(p["maxDelayTarget"])
    total = int(p["numRetries"])
    no_delay, at_min, at_max = (int(p["numNoDelayRetries"]), int(p["numMinDelayRetries"]),
                                int(p["numMaxDelayRetries"]))
    backoff = max(0, total - no_delay - at_min - at_max)
    delays = [0.0] * no_delay + [low] * at_min
    for i in range(1, backoff + 1):
        share = i / backoff
        kind = p["backoffFunction"]
        if kind == "exponential":
            delays.append(min(high, low * 2 ** (i - 1)))
        elif kind == "geometric":
            delays.append(min(high, low + (high - low) * share ** 2))
        else:  # linear, arithmetic
            delays.append(low + (high - low) * share)
    delays += [high] * at_max
    return delays[:total]


def text_for(message_text: str, structure: Any, protocol: str) -> str:
    """[SNS MessageStructure=json] the protocol's own entry, else ``default``."""
    if structure != "json":
        return message_text
    parsed = json.loads(message_text)
    return str(parsed.get(protocol, parsed.get("default", "")))


class SubscriptionWorker(Consumer):
    def __init__(self, sns: Any, subscription: Any):
        super().__init__(f"sns-{subscription.id}", prefetch=PREFETCH)
        self.sns = sns
        self.subscription = subscription
        self.pending: deque[Delivery] = deque()
        self.in_progress: list[Delivery] = []
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def deliver(self, delivery: Delivery) -> None:
        self.pending.append(delivery)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch = list(self.pending)
                self.pending.clear()
                self.in_progress = batch
                if self.subscription.protocol in ("sqs", "firehose"):
                    await asyncio.gather(*(self._guarded(d) for d in batch))
                else:  # one at a time: endpoints see notifications in order
                    for delivery in batch:
                        await self._guarded(delivery)
                self.in_progress = []
                for delivery in batch:
                    delivery.ack()

    async def _guarded(self, delivery: Delivery) -> None:
        """A message that breaks the worker (a bug, not a failed delivery) is logged and
        dropped, so that the subscription's other messages still flow."""
        try:
            await self._one(delivery)
        except Exception:
            log.exception("SNS subscription %s: message dropped", self.subscription.arn)

    async def _one(self, delivery: Delivery) -> None:
        sub = self.subscription
        message = delivery.message
        attributes = {k: v for k, v in message_attributes(message).items()
                      if k not in SNS_HEADERS}
        text = body_text(message)
        if sub.filter_policy:
            values = (sns_filter.body_values(text) if sub.filter_scope == "MessageBody"
                      else sns_filter.attribute_values(attributes))
            if values is None or not sns_filter.matches(sub.filter_policy, values):
                return
        try:
            text = text_for(text, header(message, STRUCTURE_HEADER), sub.protocol)
        except ValueError:
            pass  # not JSON after all (an AMQP publish with the header set): send as is
        delays = retry_delays(self.sns.retry_policy(sub))
        failure = DeliveryFailed("Unknown", "not attempted")
        for attempt, delay in enumerate([0.0, *delays]):
            if delay:
                await asyncio.sleep(delay)
            try:
                await self.sns.sender.send(sub, message, text, attributes)
                return
            except Exception as exc:  # a failed attempt, never a dead worker
                if not isinstance(exc, DeliveryFailed):
                    log.exception("SNS delivery to %s failed unexpectedly", sub.endpoint)
                    exc = DeliveryFailed("InternalError", str(exc))
                failure = exc
                log.info("SNS delivery to %s (%s) failed, attempt %d: %s", sub.endpoint,
                         sub.protocol, attempt + 1, exc)
        await self.sns.sender.dead_letter(sub, message, text, attributes, failure)

    def close(self) -> list[Delivery]:
        """Stop; returns the deliveries not yet acked (the caller requeues them)."""
        self.task.cancel()
        left = [*self.in_progress, *self.pending]
        self.pending.clear()
        self.in_progress = []
        return left


class Sender:
    """How a message reaches each protocol's endpoint."""

    def __init__(self, sns: Any):
        self.sns = sns
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def envelope(self, sub: Any, message: Any, text: str, attributes: dict) -> dict:
        topic = self.sns.topics.get(sub.topic)
        envelope = sns_wire.notification(
            sub.base_url, message_id=self.sns.message_id(message), topic_arn=sub.topic_arn,
            subscription_arn=sub.arn, message=text, subject=header(message, SUBJECT_HEADER),
            sent_ms=message.timestamp_ms or int(time.time() * 1000), attributes=attributes,
            sequence_number=header(message, SEQUENCE_HEADER))
        self.sns.signer.sign(envelope, topic.signature_version if topic else "1")
        return envelope

    async def send(self, sub: Any, message: Any, text: str, attributes: dict) -> None:
        protocol = sub.protocol
        if protocol == "sqs":
            await self._sqs(sub.endpoint, sub, message, text if sub.raw else sns_wire.dumps(
                self.envelope(sub, message, text, attributes)), attributes if sub.raw else {})
        elif protocol in HTTP_PROTOCOLS:
            await self._http(sub, message, text, attributes)
        elif protocol in ("email", "email-json"):
            if protocol == "email":
                subject = header(message, SUBJECT_HEADER) or "AWS Notification Message"
                body = (f"{text}\n\n--\nIf you wish to stop receiving notifications from this "
                        f"topic, please click or visit the link below to unsubscribe:\n"
                        f"{sns_wire.unsubscribe_url(sub.base_url, sub.arn)}\n")
            else:
                subject = header(message, SUBJECT_HEADER) or "AWS Notification Message"
                body = json.dumps(self.envelope(sub, message, text, attributes))
            await self.mail(sub.endpoint, subject, body)
        elif protocol == "lambda":
            await self._lambda(sub, sns_wire.lambda_event(
                self.envelope(sub, message, text, attributes), sub.arn))
        elif protocol == "firehose":
            data = text if sub.raw else sns_wire.dumps(self.envelope(sub, message, text,
                                                                     attributes))
            await self._firehose(sub, data.encode("utf-8"))
        else:  # sms, application: no carrier to reach; the outbox and the log show them
            entry = {"protocol": protocol, "endpoint": sub.endpoint, "message": text,
                     "subscription": sub.arn, "timestamp": int(time.time() * 1000)}
            self.sns.outbox.add(entry)
            log.info("SNS %s to %s (outbox): %s", protocol, sub.endpoint, text[:200])

    async def _sqs(self, queue_arn: str, sub: Any, message: Any, body: str,
                   attributes: dict, extra: dict | None = None) -> None:
        ctx = self.sns.sqs
        name = queue_arn.rsplit(":", 1)[-1]
        params: dict[str, Any] = {"QueueUrl": f"http://sns/000000000000/{name}",
                                  "MessageBody": body,
                                  "MessageAttributes": {**attributes, **(extra or {})}}
        try:
            queue = ctx.queue(name)
            if ctx.is_fifo(queue):
                group = header(message, GROUP_HEADER)
                dedup = header(message, DEDUP_HEADER)
                params["MessageGroupId"] = str(group or "default")
                params["MessageDeduplicationId"] = str(dedup or self.sns.message_id(message))
            await send_message(ctx, AwsRequest(None, "sqs", "json", "SendMessage", {}, None),
                               params)
        except AwsError as exc:
            raise DeliveryFailed(exc.code, exc.message) from None

    async def _http(self, sub: Any, message: Any, text: str, attributes: dict) -> None:
        headers = {"x-amz-sns-message-type": "Notification",
                   "x-amz-sns-message-id": self.sns.message_id(message),
                   "x-amz-sns-topic-arn": sub.topic_arn,
                   "x-amz-sns-subscription-arn": sub.arn,
                   "Content-Type": "text/plain; charset=UTF-8",
                   "User-Agent": "Amazon Simple Notification Service Agent"}
        if sub.raw:
            headers["x-amz-sns-rawdelivery"] = "true"
            body = text
        else:
            body = json.dumps(self.envelope(sub, message, text, attributes))
        await self.post(sub.endpoint, body, headers)

    async def post(self, url: str, body: str, headers: dict) -> None:
        try:
            async with self._session().post(
                    url, data=body.encode("utf-8"), headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.sns.settings.sns.http_timeout_s)) \
                    as response:
                await response.read()
                if not 200 <= response.status < 300:
                    raise DeliveryFailed("EndpointError", f"HTTP {response.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise DeliveryFailed("EndpointUnreachable", str(exc) or type(exc).__name__) from None

    async def mail(self, to: str, subject: str, body: str) -> None:
        url = self.sns.settings.sns.smtp_url
        if not url:
            raise DeliveryFailed("EmailNotConfigured", "no [sns] smtp_url")
        parsed = urlparse(url)
        mail = email.message.EmailMessage()
        mail["From"] = self.sns.settings.sns.smtp_from
        mail["To"] = to
        mail["Subject"] = subject
        mail.set_content(body)

        def send() -> None:
            with smtplib.SMTP(parsed.hostname or "127.0.0.1", parsed.port or 25,
                              timeout=self.sns.settings.sns.http_timeout_s) as smtp:
                smtp.send_message(mail)

        try:
            await asyncio.to_thread(send)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed("SmtpError", str(exc)) from None

    async def _lambda(self, sub: Any, event: dict) -> None:
        function = self.sns.function(sub.endpoint)
        if function is None:
            raise DeliveryFailed("FunctionNotFound", f"no [[functions]] entry for {sub.endpoint}")
        payload = json.dumps(event)
        if function.url:
            await self.post(function.url, payload, {"Content-Type": "application/json"})
            return
        process = await asyncio.create_subprocess_exec(
            *shlex.split(function.command), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(process.communicate(payload.encode()),
                                            function.timeout_s)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise DeliveryFailed("FunctionTimeout", f"{function.name} timed out") from None
        if process.returncode != 0:
            raise DeliveryFailed("FunctionError", f"{function.name} exited with "
                                 f"{process.returncode}: {err.decode(errors='replace')[:200]}")

    async def _firehose(self, sub: Any, data: bytes) -> None:
        firehose = self.sns.firehose
        name = sub.endpoint.rsplit("/", 1)[-1]
        stream = firehose.streams.get(name)
        if stream is None:
            raise DeliveryFailed("ResourceNotFound", f"no delivery stream {name}")
        await firehose.publish(stream, [data])

    async def dead_letter(self, sub: Any, message: Any, text: str, attributes: dict,
                          failure: DeliveryFailed) -> None:
        """[SNS redrive policy] the message, as the endpoint would have got it, goes to the
        subscription's SQS dead-letter queue with ErrorCode/ErrorMessage attributes."""
        target = sub.dead_letter_arn
        if not target:
            log.warning("SNS message to %s dropped after retries: %s", sub.endpoint, failure)
            return
        body = sns_wire.dumps(self.envelope(sub, message, text, attributes))
        extra = {"ErrorCode": {"DataType": "String", "StringValue": failure.code},
                 "ErrorMessage": {"DataType": "String", "StringValue": str(failure)[:256]},
                 "TopicArn": {"DataType": "String", "StringValue": sub.topic_arn}}
        try:
            await self._sqs(target, sub, message, body, {}, extra)
        except DeliveryFailed as exc:
            log.warning("SNS message to %s dropped: its dead-letter queue failed too: %s",
                        sub.endpoint, exc)

    async def unsubscribed(self, sub: Any) -> None:
        """[SNS] an HTTP/S endpoint hears of its unsubscription (UnsubscribeConfirmation); one
        attempt. Its SubscribeURL does not restore the subscription here (the token is gone)."""
        envelope = sns_wire.confirmation(sub.base_url, message_id=str(uuid.uuid4()),
                                         topic_arn=sub.topic_arn, token=sub.token,
                                         sent_ms=int(time.time() * 1000))
        envelope["Type"] = "UnsubscribeConfirmation"
        envelope["Message"] = (f"You have chosen to deactivate subscription {sub.arn}.\nTo "
                               "cancel this operation and restore the subscription, visit the "
                               "SubscribeURL included in this message.")
        topic = self.sns.topics.get(sub.topic)
        self.sns.signer.sign(envelope, topic.signature_version if topic else "1")
        try:
            await self.post(sub.endpoint, json.dumps(envelope), {
                "x-amz-sns-message-type": "UnsubscribeConfirmation",
                "x-amz-sns-message-id": envelope["MessageId"],
                "x-amz-sns-topic-arn": sub.topic_arn, "x-amz-sns-subscription-arn": sub.arn,
                "Content-Type": "text/plain; charset=UTF-8",
                "User-Agent": "Amazon Simple Notification Service Agent"})
        except DeliveryFailed as exc:
            log.info("SNS UnsubscribeConfirmation to %s failed: %s", sub.endpoint, exc)

    async def confirm_request(self, sub: Any) -> None:
        """The SubscriptionConfirmation POST (http/https) or mail (email/email-json)."""
        envelope = sns_wire.confirmation(sub.base_url, message_id=str(uuid.uuid4()),
                                         topic_arn=sub.topic_arn, token=sub.token,
                                         sent_ms=int(time.time() * 1000))
        topic = self.sns.topics.get(sub.topic)
        self.sns.signer.sign(envelope, topic.signature_version if topic else "1")
        try:
            if sub.protocol in HTTP_PROTOCOLS:
                await self.post(sub.endpoint, json.dumps(envelope), {
                    "x-amz-sns-message-type": "SubscriptionConfirmation",
                    "x-amz-sns-message-id": envelope["MessageId"],
                    "x-amz-sns-topic-arn": sub.topic_arn,
                    "Content-Type": "text/plain; charset=UTF-8",
                    "User-Agent": "Amazon Simple Notification Service Agent"})
            elif sub.protocol == "email-json":
                await self.mail(sub.endpoint, "AWS Notification - Subscription Confirmation",
                                json.dumps(envelope))
            else:
                await self.mail(sub.endpoint, "AWS Notification - Subscription Confirmation",
                                f"You have chosen to subscribe to the topic:\n{sub.topic_arn}\n\n"
                                f"To confirm this subscription, click or visit the link below "
                                f"(If this was in error no action is necessary):\n"
                                f"{envelope['SubscribeURL']}\n")
        except DeliveryFailed as exc:
            log.warning("SNS subscription confirmation to %s failed: %s", sub.endpoint, exc)
