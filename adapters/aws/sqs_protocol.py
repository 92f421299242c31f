"""SQS's two wire forms, turned into one: the operations see JSON-shaped parameters (as AWS JSON
1.0 sends them, with Binary values as bytes) and return JSON-shaped results.

- JSON 1.0 (current SDKs): only Binary attribute values need decoding from base64 (and encoding
  back in results).
- Query (``Action=SendMessage&Version=2012-11-05&...``, older SDKs, AWS CLI v1): flat, 1-based
  indexed names (``MessageAttribute.1.Name``, ``Attribute.2.Value``,
  ``SendMessageBatchRequestEntry.3.MessageBody``) are rebuilt into lists and maps; results are
  rendered as the XML members of ``<ActionResult>`` with SQS's element names (flattened lists:
  ``<Message>``, ``<QueueUrl>``, ``<Attribute><Name/><Value/></Attribute>``...).
"""
from __future__ import annotations

import base64
import binascii
from typing import Any
from xml.sax.saxutils import escape

from .http import AwsError, query_tree

# query list name -> (JSON name, kind): kind "list", or ("map", key field, value field)
_QUERY_COLLECTIONS: dict[str, tuple[str, Any]] = {
    "Attribute": ("Attributes", ("map", "Name", "Value")),
    "AttributeName": ("AttributeNames", "list"),
    "MessageAttribute": ("MessageAttributes", ("map", "Name", "Value")),
    "MessageSystemAttribute": ("MessageSystemAttributes", ("map", "Name", "Value")),
    "MessageAttributeName": ("MessageAttributeNames", "list"),
    "MessageSystemAttributeName": ("MessageSystemAttributeNames", "list"),
    "Tag": ("Tags", ("map", "Key", "Value")),
    "TagKey": ("TagKeys", "list"),
    "SendMessageBatchRequestEntry": ("Entries", "list"),
    "DeleteMessageBatchRequestEntry": ("Entries", "list"),
    "ChangeMessageVisibilityBatchRequestEntry": ("Entries", "list"),
    "AWSAccountId": ("AWSAccountIds", "list"),
    "ActionName": ("Actions", "list"),
}
_INTEGERS = ("DelaySeconds", "MaxNumberOfMessages", "VisibilityTimeout", "WaitTimeSeconds",
             "MaxResults", "MaxNumberOfMessagesPerSecond")


# Parameter name -> its JSON type in the 2012-11-05 model (the same names in every operation).
_STRINGS = ("QueueName", "QueueUrl", "QueueNamePrefix", "NextToken", "QueueOwnerAWSAccountId",
            "Label", "MessageBody", "MessageGroupId", "MessageDeduplicationId", "ReceiptHandle",
            "ReceiveRequestAttemptId", "SourceArn", "DestinationArn", "TaskHandle", "Id")
_STRING_LISTS = ("AttributeNames", "MessageSystemAttributeNames", "MessageAttributeNames",
                 "TagKeys", "AWSAccountIds", "Actions")
_STRING_MAPS = ("Attributes", "tags", "Tags")
_ATTRIBUTE_MAPS = ("MessageAttributes", "MessageSystemAttributes")


def _invalid(name: str, reason: str) -> AwsError:
    return AwsError("InvalidParameterValue",
                    f"Value for parameter {name} is invalid. Reason: {reason}.",
                    query_code="InvalidParameterValue")


def _text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(name, "not valid Unicode text") from None


def check_shapes(params: dict) -> dict:
    """Type-check parameters against the model's shapes (JSON clients can send anything) so that
    the operations meet only what they expect; JSON nulls count as absent."""
    for name in [k for k, v in params.items() if v is None]:
        del params[name]
    for name, value in params.items():
        if not isinstance(name, str):
            raise _invalid(str(name), "unknown parameter")
        _text(name, name)
        if name in _STRINGS:
            _text(name, value)
        elif name in _INTEGERS:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise _invalid(name, "must be an integer")
        elif name in _STRING_LISTS:
            if not isinstance(value, list):
                raise _invalid(name, "must be a list of strings")
            for item in value:
                _text(name, item)
        elif name in _STRING_MAPS:
            if not isinstance(value, dict):
                raise _invalid(name, "must be a map of strings")
            for key, item in value.items():
                _text(name, key)
                _text(name, item)
        elif name in _ATTRIBUTE_MAPS:
            _check_attribute_map(name, value)
        elif name == "Entries":
            if not isinstance(value, list):
                raise _invalid(name, "must be a list of entries")
            for entry in value:
                if not isinstance(entry, dict):
                    raise _invalid(name, "must be a list of entries")
                check_shapes(entry)
    return params


def _check_attribute_map(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _invalid(name, "must be a map")
    for key, item in value.items():
        _text(name, key)
        if not isinstance(item, dict):
            raise _invalid(name, f"attribute {key} must be a structure")
        for field in ("DataType", "StringValue"):
            if item.get(field) is not None:
                _text(name, item[field])
        blob = item.get("BinaryValue")
        if blob is not None and not isinstance(blob, (str, bytes, bytearray)):
            raise _invalid(name, f"attribute {key} has a BinaryValue that is not a blob")
        for field in ("StringListValues", "BinaryListValues"):
            if item.get(field) is not None and not isinstance(item[field], list):
                raise _invalid(name, f"attribute {key} has a {field} that is not a list")


def _bad_binary() -> AwsError:
    return AwsError("InvalidParameterValue", "A Binary message attribute value is not valid "
                    "base64.", query_code="InvalidParameterValue")


def _decode_binary(attributes: Any) -> None:
    if not isinstance(attributes, dict):
        return
    for value in attributes.values():
        if isinstance(value, dict) and isinstance(value.get("BinaryValue"), str):
            try:
                value["BinaryValue"] = base64.b64decode(value["BinaryValue"], validate=True)
            except (binascii.Error, ValueError):
                raise _bad_binary() from None


def decode_binaries(params: dict) -> dict:
    """Binary attribute values (base64 on both wires) -> bytes, in a send or its entries."""
    for holder in [params, *(e for e in params.get("Entries") or [] if isinstance(e, dict))]:
        _decode_binary(holder.get("MessageAttributes"))
        _decode_binary(holder.get("MessageSystemAttributes"))
    return params


def from_query(flat: dict[str, str]) -> dict:
    """Flat query parameters -> JSON-shaped parameters."""
    return _shape(query_tree(flat))


def _shape(tree: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if key in _QUERY_COLLECTIONS and isinstance(value, dict):
            json_name, kind = _QUERY_COLLECTIONS[key]
            items = [value[i] for i in sorted((k for k in value if k.isdigit()), key=int)]
            if kind == "list":
                out[json_name] = [_shape(i) if isinstance(i, dict) else i for i in items]
            else:
                _, key_field, value_field = kind
                mapped = {}
                for item in items:
                    if isinstance(item, dict) and key_field in item:
                        inner = item.get(value_field)
                        mapped[item[key_field]] = _shape(inner) if isinstance(inner, dict) \
                            else inner
                out[json_name] = mapped
        elif isinstance(value, dict):
            out[key] = _shape(value)
        elif key in _INTEGERS:
            try:
                out[key] = int(value)
            except ValueError:
                out[key] = value  # the operation reports it as InvalidParameterValue
        else:
            out[key] = value
    return out


def to_json(result: Any) -> Any:
    """bytes -> base64 text, recursively (the JSON wire form of Binary values)."""
    if isinstance(result, dict):
        return {k: to_json(v) for k, v in result.items()}
    if isinstance(result, list):
        return [to_json(v) for v in result]
    if isinstance(result, (bytes, bytearray)):
        return base64.b64encode(bytes(result)).decode("ascii")
    return result


# ==================================================================== results as XML
# A carriage return would be read back as a newline (XML end-of-line handling): keep it exact.
_XML_ENTITIES = {"\r": "&#xD;"}
# JSON result member -> how the query protocol spells it
_XML_LISTS = {"QueueUrls": "QueueUrl", "queueUrls": "QueueUrl", "Messages": "Message",
              "Results": "ListMessageMoveTasksResultEntry", "Failed": "BatchResultErrorEntry"}
_SUCCESS_ENTRY = {"SendMessageBatch": "SendMessageBatchResultEntry",
                  "DeleteMessageBatch": "DeleteMessageBatchResultEntry",
                  "ChangeMessageVisibilityBatch": "ChangeMessageVisibilityBatchResultEntry"}
# JSON map member -> (element, key element, value element)
_XML_MAPS = {"Attributes": ("Attribute", "Name", "Value"), "Tags": ("Tag", "Key", "Value"),
             "MessageAttributes": ("MessageAttribute", "Name", "Value")}


def to_xml(operation: str, result: dict) -> str:
    return "".join(_member(operation, key, value) for key, value in result.items())


def _member(operation: str, key: str, value: Any) -> str:
    if isinstance(value, list):
        element = _SUCCESS_ENTRY.get(operation) if key == "Successful" else _XML_LISTS.get(key,
                                                                                          key)
        return "".join(_element(element, item, operation) for item in value)
    if key in _XML_MAPS and isinstance(value, dict):
        element, key_name, value_name = _XML_MAPS[key]
        return "".join(f"<{element}><{key_name}>{escape(str(k))}</{key_name}>"
                       f"{_element(value_name, v, operation)}</{element}>"
                       for k, v in value.items())
    return _element(key, value, operation)


def _element(name: str, value: Any, operation: str) -> str:
    if isinstance(value, dict):
        inner = "".join(_member(operation, k, v) for k, v in value.items())
        return f"<{name}>{inner}</{name}>"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (bytes, bytearray)):
        text = base64.b64encode(bytes(value)).decode("ascii")
    else:
        text = escape(str(value), _XML_ENTITIES)
    return f"<{name}>{text}</{name}>"
