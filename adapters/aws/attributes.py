"""SQS messages <-> the core's :class:`Message`: the one place that maps the two (see MAPPING.md).

SNS (delivery to SQS subscriptions) and SQS both build queue messages with :func:`to_message` and
read them back with :func:`from_message`, so a message keeps its body, attributes (with their data
types), id and timestamps whichever protocol put it in the queue or takes it out.

- Body: UTF-8 text <-> body bytes (bytes that are not UTF-8 are decoded with U+FFFD replacements).
- MessageAttributes <-> AMQP headers of the same name, types kept: ``String`` <-> str, ``Binary``
  <-> bytes, ``Number`` with an integer text (``"42"``) <-> int. Everything else (``"1.50"``,
  custom types like ``String.json``) keeps its text or bytes and records its data type in the
  ``x-sqs-data-types`` table header, so the exact value and type come back (their MD5 depends on
  both). Headers set over AMQP/STOMP/MQTT come out as attributes: bool -> String ``true``/``false``,
  float/Decimal -> Number, tables/arrays -> String (JSON); names SQS cannot carry are left out.
- MessageId <-> ``message_id`` property (a message without one gets a stable id from its queue
  position); SentTimestamp <-> the message's broker arrival time (``timestamp_ms``), else the AMQP
  ``timestamp`` property (seconds); ApproximateReceiveCount <-> the queue's delivery count.
- FIFO: MessageGroupId <-> ``x-message-group-id`` header (the core orders and locks by it),
  MessageDeduplicationId <-> ``x-deduplication-id``, SequenceNumber <-> ``x-sequence-number``.
- DelaySeconds (per message) -> ``x-delay`` header in ms (the core's per-message delay).
- AWSTraceHeader (system attribute) <-> ``x-sqs-aws-trace-header``.
"""
from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import re
import struct
import uuid
from typing import Any

from manifold.broker.message import Message, Properties

from .http import AwsError

DATA_TYPES_HEADER = "x-sqs-data-types"
GROUP_HEADER = "x-message-group-id"
DEDUP_HEADER = "x-deduplication-id"
SEQUENCE_HEADER = "x-sequence-number"
DELAY_HEADER = "x-delay"
TRACE_HEADER = "x-sqs-aws-trace-header"
#: headers that carry SQS fields other than message attributes: never shown as attributes
PRIVATE_HEADERS = frozenset({DATA_TYPES_HEADER, GROUP_HEADER, DEDUP_HEADER, SEQUENCE_HEADER,
                             DELAY_HEADER, TRACE_HEADER})
MAX_ATTRIBUTES = 10
# SQS attribute names: letters, digits, _ - . ; up to 256; no leading/trailing or double dot.
_NAME = re.compile(r"^(?!\.)(?!.*\.\.)[A-Za-z0-9_.\-]{1,256}(?<!\.)$")
_RESERVED_PREFIXES = ("aws.", "amazon.")
_DATA_TYPE = re.compile(r"^(String|Number|Binary)(\.[A-Za-z0-9_.\-]{1,250})?$")
_CANONICAL_INT = re.compile(r"^-?(0|[1-9][0-9]{0,17})$")
# XML 1.0 characters SQS accepts in bodies and string attributes.
_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# ==================================================================== validation
def check_text(text: str, what: str) -> None:
    """[SQS SendMessage] only #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF."""
    bad = _INVALID_CHARS.search(text)
    if bad:
        raise AwsError("InvalidMessageContents",
                       f"Invalid characters found. Deleted message {what} has character "
                       f"U+{ord(bad.group()):04X} outside the allowed set.",
                       query_code="InvalidMessageContents")


def is_attribute_name(name: str) -> bool:
    return bool(_NAME.match(name)) and not name.lower().startswith(_RESERVED_PREFIXES)


def check_attributes(attributes: dict[str, Any], system: bool = False) -> None:
    """Validate MessageAttributes (or MessageSystemAttributes) as SQS does; raises AwsError."""
    if not isinstance(attributes, dict):
        raise AwsError("InvalidParameterValue", "MessageAttributes must be a map")
    if not system and len(attributes) > MAX_ATTRIBUTES:
        raise AwsError("InvalidParameterValue",
                       f"Number of message attributes [{len(attributes)}] exceeds the allowed "
                       f"maximum [{MAX_ATTRIBUTES}].")
    for name, value in attributes.items():
        if system:
            if name != "AWSTraceHeader":
                raise AwsError("InvalidParameterValue",
                               f"Message system attribute name '{name}' is invalid.")
        elif not is_attribute_name(name):
            raise AwsError("InvalidParameterValue",
                           f"Message attribute name '{name}' is invalid.")
        if not isinstance(value, dict):
            raise AwsError("InvalidParameterValue", f"Message attribute '{name}' is invalid.")
        data_type = value.get("DataType")
        if not data_type:
            raise AwsError("InvalidParameterValue",
                           f"The message attribute '{name}' must contain non-empty message "
                           "attribute type.")
        if not _DATA_TYPE.match(data_type) or len(data_type) > 256:
            raise AwsError("InvalidParameterValue",
                           f"The type of message attribute '{name}' is invalid. You must use "
                           "only the following supported type prefixes: Binary, Number, String.")
        base = data_type.split(".", 1)[0]
        if system and data_type != "String":
            raise AwsError("InvalidParameterValue",
                           f"The message system attribute '{name}' must be of type String.")
        if base == "Binary":
            blob = value.get("BinaryValue")
            if blob is None or value.get("StringValue") is not None:
                raise AwsError("InvalidParameterValue",
                               f"The message attribute '{name}' with type 'Binary' must use "
                               "field 'Binary'.")
            if not isinstance(blob, (bytes, bytearray)) or not blob:
                raise AwsError("InvalidParameterValue",
                               f"The message attribute '{name}' must contain non-empty message "
                               "attribute value for message attribute type 'Binary'.")
        else:
            text = value.get("StringValue")
            if text is None or value.get("BinaryValue") is not None:
                raise AwsError("InvalidParameterValue",
                               f"The message attribute '{name}' with type '{base}' must use "
                               "field 'String'.")
            if text == "":
                raise AwsError("InvalidParameterValue",
                               f"The message attribute '{name}' must contain non-empty message "
                               f"attribute value for message attribute type '{base}'.")
            check_text(text, f"attribute '{name}'")
            if base == "Number" and not _valid_number(text):
                raise AwsError("InvalidParameterValue",
                               f"Can't cast the value of message attribute '{name}' to a number.")


def _valid_number(text: str) -> bool:
    # SQS: up to 38 digits of precision, between -10^128 and 10^126.
    if not _NUMBER.match(text):
        return False
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return False
    return abs(value) < decimal.Decimal("1e126") and len(value.as_tuple().digits) <= 38


def attributes_size(attributes: dict[str, Any]) -> int:
    """Bytes that count towards MaximumMessageSize: name, data type and value of each."""
    total = 0
    for name, value in attributes.items():
        total += len(name.encode()) + len(value["DataType"].encode())
        if value["DataType"].startswith("Binary"):
            total += len(value["BinaryValue"])
        else:
            total += len(value["StringValue"].encode())
    return total


# ==================================================================== MD5s
def md5_of_body(body: str) -> str:
    return hashlib.md5(body.encode("utf-8")).hexdigest()


def md5_of_attributes(attributes: dict[str, Any]) -> str | None:
    """AWS's digest of (system) message attributes: for each name in sorted order, the
    length-prefixed (4-byte big-endian) name, data type, then a transport byte (1 string,
    2 binary) and the length-prefixed value. None when there are no attributes."""
    if not attributes:
        return None
    digest = hashlib.md5()
    for name in sorted(attributes):
        value = attributes[name]
        data_type = value["DataType"]
        for part in (name.encode("utf-8"), data_type.encode("utf-8")):
            digest.update(struct.pack(">I", len(part)) + part)
        if data_type.startswith("Binary"):
            blob = bytes(value["BinaryValue"])
            digest.update(b"\x02" + struct.pack(">I", len(blob)) + blob)
        else:
            text = value["StringValue"].encode("utf-8")
            digest.update(b"\x01" + struct.pack(">I", len(text)) + text)
    return digest.hexdigest()


# ==================================================================== SQS -> core
def to_message(body: str, attributes: dict[str, Any] | None = None, *,
               message_id: str | None = None, sent_ms: int = 0,
               system_attributes: dict[str, Any] | None = None, group_id: str | None = None,
               dedup_id: str | None = None, sequence_number: str | None = None,
               delay_s: int | None = None, sender_id: str | None = None,
               routing_key: str = "") -> Message:
    """A persistent core message for an SQS send (or an SNS delivery to a queue). Attributes
    must have been checked with :func:`check_attributes`."""
    headers: dict[str, Any] = {}
    types: dict[str, str] = {}
    for name, value in (attributes or {}).items():
        data_type = value["DataType"]
        base = data_type.split(".", 1)[0]
        if base == "Binary":
            headers[name] = bytes(value["BinaryValue"])
            if data_type != "Binary":
                types[name] = data_type
        elif data_type == "Number" and _CANONICAL_INT.match(value["StringValue"]):
            headers[name] = int(value["StringValue"])
        else:
            headers[name] = value["StringValue"]
            if data_type != "String":
                types[name] = data_type
    if types:
        headers[DATA_TYPES_HEADER] = types
    trace = (system_attributes or {}).get("AWSTraceHeader")
    if trace is not None:
        headers[TRACE_HEADER] = trace["StringValue"]
    if group_id is not None:
        headers[GROUP_HEADER] = group_id
    if dedup_id is not None:
        headers[DEDUP_HEADER] = dedup_id
    if sequence_number is not None:
        headers[SEQUENCE_HEADER] = sequence_number
    if delay_s:
        headers[DELAY_HEADER] = delay_s * 1000
    props = Properties(headers=headers or None, delivery_mode=2,
                       message_id=message_id or str(uuid.uuid4()),
                       timestamp=sent_ms // 1000 if sent_ms else None, user_id=sender_id)
    return Message("", routing_key, body.encode("utf-8"), props, timestamp_ms=sent_ms)


# ==================================================================== core -> SQS
def message_id_of(message: Message, queue_name: str, msg_id: int) -> str:
    """The SQS MessageId: the message's own id, else one derived from its place in its queue (the
    same on every receive)."""
    own = message.properties.message_id
    if own:
        return str(own)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"manifold:{queue_name}:{msg_id}"))


def sent_timestamp_ms(message: Message, fallback_ms: int) -> int:
    if message.timestamp_ms:
        return message.timestamp_ms
    stamp = message.properties.timestamp
    if isinstance(stamp, datetime.datetime):
        return int(stamp.timestamp() * 1000)
    if isinstance(stamp, (int, float)) and stamp > 0:
        return int(stamp * 1000)
    return fallback_ms


def body_text(message: Message) -> str:
    return message.body.decode("utf-8", errors="replace")


def message_attributes(message: Message) -> dict[str, dict[str, Any]]:
    """Every header SQS can carry, as MessageAttributes with their data types."""
    headers = message.properties.headers
    if not headers:
        return {}
    types = headers.get(DATA_TYPES_HEADER)
    types = types if isinstance(types, dict) else {}
    result: dict[str, dict[str, Any]] = {}
    for name, value in headers.items():
        if name in PRIVATE_HEADERS or value is None or not is_attribute_name(name):
            continue
        converted = _attribute_of(value, types.get(name))
        if converted is not None:
            result[name] = converted
    return result


def _attribute_of(value: Any, data_type: str | None) -> dict[str, Any] | None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"DataType": data_type or "Binary", "BinaryValue": bytes(value)}
    if isinstance(value, bool):
        text, default = ("true" if value else "false"), "String"
    elif isinstance(value, int):
        text, default = str(value), "Number"
    elif isinstance(value, (float, decimal.Decimal)):
        text, default = (repr(value) if isinstance(value, float) else str(value)), "Number"
    elif isinstance(value, str):
        text, default = value, "String"
    elif isinstance(value, datetime.datetime):
        text, default = value.isoformat(), "String"
    elif isinstance(value, (dict, list, tuple)):
        text, default = json.dumps(value, default=str, separators=(",", ":")), "String"
    else:
        return None
    if not text:
        return None  # SQS attributes are never empty
    chosen = data_type if data_type and not data_type.startswith("Binary") else default
    return {"DataType": chosen, "StringValue": text}


def select_attributes(attributes: dict[str, dict[str, Any]],
                      names: list[str] | None) -> dict[str, dict[str, Any]]:
    """ReceiveMessage's MessageAttributeNames: ``All``, ``.*``, a name, or ``prefix.*``."""
    if not names or not attributes:
        return {}
    if "All" in names or ".*" in names:
        return attributes
    chosen = {}
    for name, value in attributes.items():
        for wanted in names:
            if wanted == name or (wanted.endswith(".*") and name.startswith(wanted[:-1])):
                chosen[name] = value
                break
    return chosen


def header(message: Message, name: str) -> Any:
    headers = message.properties.headers
    return headers.get(name) if headers else None
