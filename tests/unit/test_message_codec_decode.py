"""A stored message decodes to every property it was stored with, each in its own field."""
import datetime
import decimal

from manifold.broker.message import PROPERTY_NAMES, Message, Properties
from manifold.broker.message_codec import decode_message, encode_message


def test_every_property_comes_back_in_its_own_field():
    values = {name: f"v-{name}" for name in PROPERTY_NAMES}
    values.update(headers={"n": 1, "d": decimal.Decimal("1.5"), "when": datetime.datetime(
        2026, 12, 4, tzinfo=datetime.timezone.utc)}, delivery_mode=2, priority=7,
        timestamp=1700000000)
    message = Message("ex", "rk", b"body", Properties(**values), timestamp_ms=123)
    back = decode_message(encode_message(message))
    assert {name: getattr(back.properties, name) for name in PROPERTY_NAMES} == values
    assert (back.exchange, back.routing_key, back.body, back.timestamp_ms) == \
        ("ex", "rk", b"body", 123)
