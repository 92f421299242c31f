"""A stream's retention changed after declaration (vhost.set_queue_policy), as Kinesis's
Increase/DecreaseStreamRetentionPeriod does: applied, validated, saved with the definitions."""
import pytest

from manifold.broker.errors import PreconditionFailed

from .core_helpers import make_vhost, send


def test_policy_max_age_applies_and_is_saved():
    vhost, clock = make_vhost()
    vhost.declare_queue("s", durable=True, arguments={"x-queue-type": "stream",
                                                      "x-max-age": "24h"})
    send(vhost, "", "s", "old")
    clock.advance(2 * 3600 * 1000)
    send(vhost, "", "s", "new")
    vhost.set_queue_policy("s", {"x-max-age": "1h"})
    clock.advance(1)
    assert vhost.queues["s"].max_age_ms == 3600 * 1000
    # (what is trimmed, and when, is the stream log's business: whole segments)
    assert [m.body for _, _, m in vhost.queues["s"].read(0, 10)][-1] == b"new"
    saved = vhost.definitions()["queues"]
    assert saved[0][3] == {"x-max-age": "1h"}
    # redeclaring with the original arguments is still equivalent
    vhost.declare_queue("s", durable=True, arguments={"x-queue-type": "stream",
                                                      "x-max-age": "24h"})


@pytest.mark.parametrize("policy", [{"x-max-age": "soon"}, {"x-max-length-bytes": -1},
                                    {"x-message-ttl": 5}])
def test_bad_stream_policies_are_refused(policy):
    vhost, _ = make_vhost()
    vhost.declare_queue("s", durable=True, arguments={"x-queue-type": "stream"})
    with pytest.raises(PreconditionFailed):
        vhost.set_queue_policy("s", policy)
