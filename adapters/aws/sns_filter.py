"""SNS subscription filter policies: validation (AWS's limits and error texts) and matching.

A policy is a JSON object: attribute name (``MessageAttributes`` scope) or body key path
(``MessageBody`` scope, nested objects) -> a list of conditions, any of which may match:
an exact string or number, ``{"prefix": s}``, ``{"suffix": s}``, ``{"equals-ignore-case": s}``,
``{"anything-but": value | [values] | {"prefix": s}}``, ``{"numeric": [op, n, (op, n)]}``,
``{"exists": bool}``, and ``null`` (body scope). ``"$or": [policy, ...]`` combines alternatives.
Every key of a policy must match (AND). String.Array attributes and body arrays match when one
element does. Model: AWS SNS "Subscription filter policies" documentation.
"""
from __future__ import annotations

import json
from typing import Any

from .http import AwsError

MAX_KEYS = 5
MAX_COMBINATIONS = 150
NUMERIC_LIMIT = 1_000_000_000
_OPERATORS = {"prefix", "suffix", "anything-but", "numeric", "exists", "equals-ignore-case"}
_COMPARE = {"=", "<", "<=", ">", ">="}
_MISSING = object()


def _bad(message: str) -> AwsError:
    return AwsError("InvalidParameter", f"Invalid parameter: FilterPolicy: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ================================================================== validation
def parse(text: Any, body_scope: bool) -> dict:
    """The policy as a dict, or InvalidParameter with AWS's wording."""
    if not isinstance(text, str):
        raise _bad("failed to parse JSON")
    try:
        policy = json.loads(text)
    except ValueError:
        raise _bad("failed to parse JSON") from None
    if not isinstance(policy, dict):
        raise _bad("Filter policy must be a JSON object")
    if not policy:
        return policy
    keys, combinations = _check(policy, body_scope, 0)
    if keys > MAX_KEYS:
        raise _bad(f"Filter policy can not have more than {MAX_KEYS} keys")
    if combinations > MAX_COMBINATIONS:
        raise _bad("Filter policy is too complex")
    return policy


def _check(policy: dict, body_scope: bool, depth: int) -> tuple[int, int]:
    """(keys, combinations) of a policy object, validating as it goes."""
    keys, combinations = 0, 1
    for key, value in policy.items():
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise _bad("$or must be an array of at least two objects")
            alternatives = []
            for alternative in value:
                if not isinstance(alternative, dict):
                    raise _bad("$or must be an array of at least two objects")
                alternatives.append(_check(alternative, body_scope, depth))
            keys += max(k for k, _ in alternatives)
            combinations *= sum(c for _, c in alternatives)
        elif isinstance(value, dict):
            if not body_scope:
                raise _bad(f"\"{key}\" must be an object or an array" if depth else
                           "Attributes filter policy can not have nested objects")
            inner_keys, inner = _check(value, body_scope, depth + 1)
            keys += inner_keys
            combinations *= inner
        elif isinstance(value, list):
            if not value:
                raise _bad("Empty arrays are not allowed")
            for condition in value:
                _check_condition(condition, body_scope)
            keys += 1
            combinations *= len(value)
        else:
            raise _bad(f"\"{key}\" must be an object or an array")
    return keys, combinations


def _check_condition(condition: Any, body_scope: bool) -> None:
    if condition is None:
        if not body_scope:
            raise _bad("Match value must be String, number, true, false, or null")
        return
    if isinstance(condition, (str, bool)) or _is_number(condition):
        if _is_number(condition) and abs(condition) > NUMERIC_LIMIT:
            raise _bad("Numeric value must be between -1.0E9 and 1.0E9 inclusive")
        return
    if not isinstance(condition, dict) or len(condition) != 1:
        raise _bad("Match value must be String, number, true, false, or null")
    (operator, operand), = condition.items()
    if operator not in _OPERATORS:
        raise _bad(f"Unrecognized match type {operator}")
    if operator in ("prefix", "suffix", "equals-ignore-case"):
        if not isinstance(operand, str):
            raise _bad(f"{operator} match pattern must be a string")
    elif operator == "exists":
        if not isinstance(operand, bool):
            raise _bad("exists match pattern must be either true or false.")
    elif operator == "anything-but":
        if isinstance(operand, dict):
            if set(operand) - {"prefix", "suffix"} or not all(
                    isinstance(v, str) for v in operand.values()):
                raise _bad("Unsupported anything-but pattern: " + json.dumps(operand))
        elif isinstance(operand, list):
            if not operand or not all(isinstance(v, str) or _is_number(v) for v in operand):
                raise _bad("Inside anything but list, start|null|boolean is not supported.")
        elif not (isinstance(operand, str) or _is_number(operand)):
            raise _bad("Inside anything but list, start|null|boolean is not supported.")
    elif operator == "numeric":
        _check_numeric(operand)


def _check_numeric(operand: Any) -> None:
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        raise _bad("Value of numeric must be an array.")
    pairs = [(operand[i], operand[i + 1]) for i in range(0, len(operand), 2)]
    for op, value in pairs:
        if op not in _COMPARE:
            raise _bad(f"Unrecognized numeric range operator: {op}")
        if not _is_number(value):
            raise _bad(f"Value of {op} must be numeric")
        if abs(value) > NUMERIC_LIMIT:
            raise _bad("Numeric value must be between -1.0E9 and 1.0E9 inclusive")
    if len(pairs) == 2:
        (low_op, low), (high_op, high) = pairs
        if low_op not in (">", ">=") or high_op not in ("<", "<="):
            raise _bad("Too many elements in numeric expression")
        if low >= high:
            raise _bad("Bottom must be less than top")
    elif pairs[0][0] == "=" and len(operand) != 2:
        raise _bad("Value of = must be numeric")


# ================================================================== matching
def matches(policy: dict, values: dict) -> bool:
    """``values``: attribute name -> value (str, number, or list for String.Array), or the
    parsed JSON body. Every key of the policy must match."""
    for key, conditions in policy.items():
        if key == "$or":
            if not any(matches(alternative, values) for alternative in conditions):
                return False
            continue
        value = values.get(key, _MISSING) if isinstance(values, dict) else _MISSING
        if isinstance(conditions, dict):
            candidates = value if isinstance(value, list) else [value]
            if not any(isinstance(v, dict) and matches(conditions, v) for v in candidates):
                return False
            continue
        if not any(_condition(c, value) for c in conditions):
            return False
    return True


def _condition(condition: Any, value: Any) -> bool:
    if isinstance(condition, dict) and "exists" in condition:
        return (value is not _MISSING) == condition["exists"]
    if value is _MISSING:
        return False
    if isinstance(value, list):
        if isinstance(condition, dict) and "anything-but" in condition:
            # [SNS] anything-but on an array matches when no element is excluded
            return bool(value) and all(_one(condition, v) for v in value)
        return any(_one(condition, v) for v in value)
    return _one(condition, value)


def _one(condition: Any, value: Any) -> bool:
    if condition is None:
        return value is None
    if isinstance(condition, bool) or isinstance(value, bool):
        return condition is value
    if isinstance(condition, str):
        return isinstance(value, str) and value == condition
    if _is_number(condition):
        return _is_number(value) and float(value) == float(condition)
    (operator, operand), = condition.items()
    if operator == "prefix":
        return isinstance(value, str) and value.startswith(operand)
    if operator == "suffix":
        return isinstance(value, str) and value.endswith(operand)
    if operator == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == operand.lower()
    if operator == "anything-but":
        if isinstance(operand, dict):
            if not isinstance(value, str):
                return True
            if "prefix" in operand:
                return not value.startswith(operand["prefix"])
            return not value.endswith(operand["suffix"])
        excluded = operand if isinstance(operand, list) else [operand]
        return not any(_one(e, value) for e in excluded)
    if operator == "numeric":
        if not _is_number(value):
            return False
        for i in range(0, len(operand), 2):
            op, bound = operand[i], float(operand[i + 1])
            number = float(value)
            if not {"=": number == bound, "<": number < bound, "<=": number <= bound,
                    ">": number > bound, ">=": number >= bound}[op]:
                return False
        return True
    return False


def attribute_values(attributes: dict[str, dict]) -> dict[str, Any]:
    """SNS MessageAttributes -> the values a policy sees: Number -> float, String.Array ->
    its JSON list, String -> str; Binary attributes are not matched."""
    values: dict[str, Any] = {}
    for name, attribute in attributes.items():
        data_type = attribute.get("DataType", "String")
        text = attribute.get("StringValue")
        if data_type.startswith("Binary") or text is None:
            continue
        if data_type.startswith("Number"):
            try:
                values[name] = float(text)
            except ValueError:
                continue
        elif data_type == "String.Array":
            try:
                parsed = json.loads(text)
            except ValueError:
                continue
            values[name] = parsed if isinstance(parsed, list) else [parsed]
        else:
            values[name] = text
    return values


def body_values(body: str) -> dict | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
