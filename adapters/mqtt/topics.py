"""MQTT topic names and filters: validation, matching, and the mapping to AMQP routing keys.

Mapping (adapters/INTEROP.md, shared with STOMP and AMQP): swap ``/`` and ``.`` character by character, so a
topic containing ``.`` round-trips (``a/b.c`` <-> ``a.b/c``); in filters ``+`` becomes ``*`` and
``#`` stays ``#``. The swap is its own inverse.
"""
from __future__ import annotations

_SWAP = str.maketrans({"/": ".", ".": "/"})


def topic_to_key(topic: str) -> str:
    """Swap ``/`` and ``.``. str.replace is several times faster than str.translate with a table,
    so the usual cases (only one of the two characters present) take one replace."""
    if "." not in topic:
        return topic.replace("/", ".")
    if "/" not in topic:
        return topic.replace(".", "/")
    if "\x00" in topic:  # only possible in a key from another protocol
        return topic.translate(_SWAP)
    return topic.replace(".", "\x00").replace("/", ".").replace("\x00", "/")


key_to_topic = topic_to_key  # the swap is its own inverse


def filter_to_key(topic_filter: str) -> str:
    return topic_to_key(topic_filter).replace("+", "*")


def valid_topic_name(topic: str) -> bool:
    """[MQTT-4.7.3-1] at least one character; [MQTT-3.3.2-2] no wildcards in a topic name."""
    return bool(topic) and "+" not in topic and "#" not in topic


def valid_topic_filter(topic_filter: str) -> bool:
    """[MQTT-4.7.1-2] ``#`` alone and last; [MQTT-4.7.1-3] ``+`` occupies a whole level."""
    if not topic_filter:
        return False  # [MQTT-4.7.3-1]
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """``$share/<group>/<filter>`` -> (group, filter); else (None, filter). Raises ValueError for
    a malformed shared subscription [MQTT-4.8.2-1/2]."""
    if not topic_filter.startswith("$share/"):
        return None, topic_filter
    rest = topic_filter[len("$share/"):]
    group, sep, inner = rest.partition("/")
    if not sep or not group or "+" in group or "#" in group or not inner:
        raise ValueError(f"malformed shared subscription {topic_filter!r}")
    return group, inner


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching [MQTT 4.7], including [MQTT-4.7.2-1]: a filter starting with a wildcard does
    not match a topic starting with ``$``."""
    if topic_filter == topic:
        return True
    if topic[:1] == "$" and topic_filter[:1] in ("+", "#"):
        return False
    f = topic_filter.split("/")
    t = topic.split("/")
    nf = len(f)
    for i, level in enumerate(f):
        if level == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return nf == len(t)
