"""SNS on the wire: query parameters in, XML out, and the JSON messages SNS sends to endpoints
(Notification, SubscriptionConfirmation) with their RSA signatures.

- Query input: ``Attributes.entry.1.key``, ``Tags.member.2.Value``,
  ``MessageAttributes.entry.1.Value.DataType``, ``PublishBatchRequestEntries.member.3.Message``
  are rebuilt into maps and lists (:func:`unflatten`).
- Signatures: [SNS "Verifying the signatures of Amazon SNS messages"] the listed fields as
  ``Name\\nvalue\\n`` in byte order, signed with SHA1withRSA (SignatureVersion 1) or
  SHA256withRSA (2). The key pair and its self-signed certificate are made once and kept in the
  store, and the certificate is served at SigningCertURL on this listener.
"""
from __future__ import annotations

import base64
import datetime
import json
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .http import query_tree

XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"
VERSION = "2010-03-31"


# ================================================================== query -> dict
def unflatten(params: dict[str, str]) -> dict[str, Any]:
    """Flat query parameters -> nested dicts; ``member.N`` -> lists, ``entry.N`` -> maps."""
    return _shape(query_tree(params))


def _shape(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if set(node) == {"member"} and isinstance(node["member"], dict):
        items = sorted(((int(k), v) for k, v in node["member"].items() if k.isdigit()))
        return [_shape(v) for _, v in items]
    if set(node) == {"entry"} and isinstance(node["entry"], dict):
        out = {}
        for _, entry in sorted((int(k), v) for k, v in node["entry"].items() if k.isdigit()):
            if not isinstance(entry, dict):
                continue
            key = entry.get("key", entry.get("Name"))
            value = entry.get("value", entry.get("Value"))
            if key is not None:
                out[key] = _shape(value)
        return out
    return {k: _shape(v) for k, v in node.items()}


# ================================================================== dict -> XML
def to_xml(value: Any, item_tag: str = "member") -> str:
    if isinstance(value, dict):
        return "".join(f"<{k}>{to_xml(v)}</{k}>" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return "".join(f"<{item_tag}>{to_xml(v)}</{item_tag}>" for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def attributes_xml(attributes: dict[str, str]) -> str:
    return "<Attributes>" + "".join(
        f"<entry><key>{escape(k)}</key><value>{escape(str(v))}</value></entry>"
        for k, v in attributes.items()) + "</Attributes>"


def response(operation: str, result_xml: str, request_id: str) -> web.Response:
    body = (f'<?xml version="1.0"?><{operation}Response xmlns="{XMLNS}"><{operation}Result>'
            f"{result_xml}</{operation}Result><ResponseMetadata><RequestId>{request_id}"
            f"</RequestId></ResponseMetadata></{operation}Response>")
    return web.Response(body=body.encode(), content_type="text/xml")


# ================================================================== messages to endpoints
def timestamp(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}


def string_to_sign(message: dict) -> bytes:
    fields = _SIGNED[message["Type"]]
    return "".join(f"{name}\n{message[name]}\n" for name in fields
                   if message.get(name) is not None).encode("utf-8")


class Signer:
    """The RSA key that signs messages and the certificate served at SigningCertURL."""

    def __init__(self, saved: Any):
        if saved:
            key_pem, cert_pem = saved
            self.key = serialization.load_pem_private_key(key_pem, password=None)
            self.cert_pem = cert_pem
            self.created = False
            return
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.manifold.local")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .sign(self.key, hashes.SHA256()))
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.created = True

    def saved(self) -> list[bytes]:
        key_pem = self.key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        return [key_pem, self.cert_pem]

    def sign(self, message: dict, version: str) -> None:
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        signature = self.key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
        message["SignatureVersion"] = version
        message["Signature"] = base64.b64encode(signature).decode()


def cert_url(base: str) -> str:
    return f"{base}/?Action=GetSigningCertificate&Version={VERSION}"


def subscribe_url(base: str, topic_arn: str, token: str) -> str:
    return (f"{base}/?Action=ConfirmSubscription&Version={VERSION}"
            f"&TopicArn={quote(topic_arn, safe='')}&Token={token}")


def unsubscribe_url(base: str, subscription_arn: str) -> str:
    return (f"{base}/?Action=Unsubscribe&Version={VERSION}"
            f"&SubscriptionArn={quote(subscription_arn, safe='')}")


def notification(base: str, *, message_id: str, topic_arn: str, subscription_arn: str,
                 message: str, subject: str | None, sent_ms: int,
                 attributes: dict[str, dict], sequence_number: str | None = None) -> dict:
    """The JSON Notification (before signing), as SQS, HTTP and email-json receive it."""
    out: dict[str, Any] = {"Type": "Notification", "MessageId": message_id,
                           "TopicArn": topic_arn}
    if subject is not None:
        out["Subject"] = subject
    out["Message"] = message
    out["Timestamp"] = timestamp(sent_ms)
    if sequence_number is not None:
        out["SequenceNumber"] = sequence_number
    out["SigningCertURL"] = cert_url(base)
    out["UnsubscribeURL"] = unsubscribe_url(base, subscription_arn)
    if attributes:
        out["MessageAttributes"] = {
            name: {"Type": a["DataType"],
                   "Value": base64.b64encode(a["BinaryValue"]).decode()
                   if "BinaryValue" in a else a["StringValue"]}
            for name, a in attributes.items()}
    return out


def confirmation(base: str, *, message_id: str, topic_arn: str, token: str,
                 sent_ms: int) -> dict:
    return {"Type": "SubscriptionConfirmation", "MessageId": message_id, "Token": token,
            "TopicArn": topic_arn,
            "Message": f"You have chosen to subscribe to the topic {topic_arn}.\nTo confirm the "
                       "subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": subscribe_url(base, topic_arn, token),
            "Timestamp": timestamp(sent_ms), "SigningCertURL": cert_url(base)}


def lambda_event(envelope: dict, subscription_arn: str) -> dict:
    """[AWS Lambda "Using Lambda with Amazon SNS"] the Records[].Sns event."""
    sns = {k: v for k, v in envelope.items() if k not in ("SigningCertURL", "UnsubscribeURL")}
    sns["SigningCertUrl"] = envelope.get("SigningCertURL")
    sns["UnsubscribeUrl"] = envelope.get("UnsubscribeURL")
    sns.setdefault("MessageAttributes", {})
    sns.setdefault("Subject", None)
    return {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0",
                         "EventSubscriptionArn": subscription_arn, "Sns": sns}]}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
