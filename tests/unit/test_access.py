"""broker/access.py: passwords, permissions as RabbitMQ's, topic permissions, login back-off."""
import pytest

from manifold.broker.access import (AccessControl, LoginBackoff, LoginRefused, hash_password,
                                    verify_password)
from manifold.broker.core import Broker
from manifold.broker.errors import AccessRefused, NotAllowed, PreconditionFailed
from manifold.config.settings import ConfigError, Settings, from_mapping

HASH = hash_password("s3cret")


def settings(**tables) -> Settings:
    return from_mapping(tables)


def test_hash_is_salted_and_verifies():
    assert HASH.startswith("$scrypt$ln=14,r=8,p=1$")
    assert hash_password("s3cret") != HASH  # salted
    assert verify_password(HASH, "s3cret") and not verify_password(HASH, "s3cret ")
    assert "s3cret" not in HASH


def test_users_tables_with_hash_plaintext_and_tags(caplog):
    caplog.set_level("WARNING")
    access = AccessControl(settings(users=[
        {"name": "app", "password_hash": HASH, "tags": ["administrator"]},
        {"name": "dev", "password": "devpw"}]))
    assert "user 'dev' has a plaintext password" in caplog.text and "devpw" not in caplog.text
    assert access.authenticate("app", "s3cret", "10.0.0.1").tags == ("administrator",)
    assert access.authenticate("app", "s3cret", "10.0.0.1").name == "app"  # cached path
    assert access.authenticate("dev", "devpw", "10.0.0.1").name == "dev"
    for name, password in (("app", "wrong"), ("dev", "s3cret"), ("nobody", "x"), ("app", None)):
        with pytest.raises(LoginRefused):
            access.authenticate(name, password, "10.0.0.1")


def test_bad_hash_and_bad_expression_are_config_errors():
    with pytest.raises(ConfigError, match="password_hash"):
        AccessControl(settings(users=[{"name": "a", "password_hash": "nope"}]))
    with pytest.raises(ConfigError, match="bad permission expression"):
        AccessControl(settings(permissions=[{"user": "guest", "configure": "("}]))
    with pytest.raises(ConfigError, match="unknown key 'colour' in \\[\\[users\\]\\]"):
        settings(users=[{"name": "a", "colour": "red"}])
    with pytest.raises(ConfigError, match="lacks 'user'"):
        settings(permissions=[{"vhost": "/"}])


def test_guest_is_loopback_only_and_can_be_removed():
    access = AccessControl(Settings())
    assert access.authenticate("guest", "guest", "::1").name == "guest"
    with pytest.raises(LoginRefused, match="localhost"):
        access.authenticate("guest", "guest", "192.0.2.1")
    access = AccessControl(Settings().replace("server", guest_user=False))
    with pytest.raises(LoginRefused):
        access.authenticate("guest", "guest", "127.0.0.1")


def test_permission_matrix_like_rabbitmq():
    access = AccessControl(settings(
        users=[{"name": "u", "password": "p"}],
        permissions=[{"user": "u", "vhost": "/", "configure": "^u\\.", "write": "^(u\\.|amq\\.default$)",
                      "read": "^(u\\.|amq\\.topic$)"}],
        topic_permissions=[{"user": "u", "vhost": "/", "exchange": "amq.topic",
                            "write": "^sensors\\.", "read": "^sensors\\.{username}"}]))
    user = access.authenticate("u", "p", "127.0.0.1")
    access.check_vhost("/", user)
    grant = access.grant(user, "/")
    grant.configure("queue", "u.q")
    with pytest.raises(AccessRefused, match="configure access to queue 'other' in vhost '/' "
                                            "refused for user 'u'"):
        grant.configure("queue", "other")
    grant.write("exchange", "")  # the default exchange is amq.default
    with pytest.raises(AccessRefused, match="amq.direct"):
        grant.write("exchange", "amq.direct")
    grant.read("exchange", "amq.topic")
    with pytest.raises(AccessRefused):
        grant.read("queue", "x")
    grant.check_topic("write", "amq.topic", "sensors.a")
    with pytest.raises(AccessRefused, match="topic 'actuators.a'"):
        grant.check_topic("write", "amq.topic", "actuators.a")
    grant.check_topic("read", "amq.topic", "sensors.u.temp")  # {username} expanded
    assert not grant.topic_allowed("read", "amq.topic", "sensors.v.temp")
    assert grant.topic_allowed("write", "other.exchange", "anything")  # no topic perms there
    # runtime change drops cached decisions
    access.set_topic_permissions("u", "/", "amq.topic", "", "")
    assert not grant.topic_allowed("write", "amq.topic", "sensors.a")


def test_vhost_needs_permissions_and_limits():
    broker = Broker(settings(
        users=[{"name": "u", "password": "p"}],
        vhosts=[{"name": "prod", "max_connections": 1, "max_queues": 1}],
        permissions=[{"user": "u", "vhost": "prod", "configure": ".*", "write": ".*",
                      "read": ".*"}]))
    user = broker.authenticate("u", "p", "127.0.0.1")
    with pytest.raises(NotAllowed, match="access to vhost '/' refused for user 'u'"):
        broker.open_vhost("/", user)

    class Conn:
        def __init__(self):
            self.callbacks = []

        def on_close(self, fn):
            self.callbacks.append(fn)

    first = Conn()
    vhost = broker.open_vhost("prod", user, first)
    with pytest.raises(NotAllowed, match="connection limit"):
        broker.open_vhost("prod", user, Conn())
    first.callbacks[0]()
    broker.open_vhost("prod", user, Conn())
    vhost.declare_queue("q1")
    with pytest.raises(PreconditionFailed, match="queue limit in vhost 'prod' \\(1\\)"):
        vhost.declare_queue("q2")
    # the old [server] users form keeps access to every vhost
    assert broker.open_vhost("prod", broker.authenticate("guest", "guest", "127.0.0.1"))


def test_backoff_free_then_slower_then_capped_per_address():
    now = [0.0]
    backoff = LoginBackoff(free=10, max_s=2.0, clock=lambda: now[0])
    delays = [backoff.failed("192.0.2.1") for _ in range(80)]
    assert delays[:10] == [0.0] * 10
    assert delays[24] >= 0.5  # the 25th failure
    assert max(delays) == 2.0 and delays == sorted(delays)
    assert backoff.failed("192.0.2.2") == 0.0  # per address, not per user
    now[0] += 3600
    assert backoff.failed("192.0.2.1") == 0.0  # forgotten after the window


def test_refusal_carries_the_backoff_delay():
    access = AccessControl(Settings())
    delays = []
    for _ in range(25):
        with pytest.raises(LoginRefused) as info:
            access.authenticate("guest", "bad", "127.0.0.1")
        delays.append(info.value.delay_s)
    assert delays[0] == 0 and delays[-1] >= 0.5
    assert access.authenticate("guest", "guest", "127.0.0.1").name == "guest"


def test_identity_login():
    access = AccessControl(settings(users=[{"name": "device1", "password_hash": HASH}],
                                    tls={"identity_as_username": True}))
    assert access.authenticate(None, None, "10.0.0.1", identity="device1").name == "device1"
    assert access.authenticate("x", None, "10.0.0.1", identity="device1", external=True)
    off = AccessControl(settings(users=[{"name": "device1", "password_hash": HASH}]))
    with pytest.raises(LoginRefused):  # identity_as_username is off: no password-less login
        off.authenticate(None, None, "10.0.0.1", identity="device1", external=True)
    with pytest.raises(LoginRefused):
        access.authenticate(None, None, "10.0.0.1", identity="stranger")
    with pytest.raises(LoginRefused):
        access.authenticate(None, None, "10.0.0.1", external=True)


def test_hash_budget_bounds_scrypt_time_on_the_loop():
    now = [0.0]
    access = AccessControl(settings(users=[{"name": "a", "password_hash": HASH},
                                           {"name": "b", "password_hash": HASH}]),
                           clock=lambda: now[0])
    access.hash_budget.charge(0.3)  # as if wrong passwords had just used the loop's share
    with pytest.raises(LoginRefused):
        access.authenticate("a", "s3cret", "10.0.0.1")  # refused without hashing
    now[0] += 1.5  # the next second: hashing allowed again
    assert access.authenticate("a", "s3cret", "10.0.0.1").name == "a"
    access.hash_budget.charge(0.3)
    assert access.authenticate("a", "s3cret", "10.0.0.1").name == "a"  # HMAC: no hashing
    with pytest.raises(LoginRefused):
        access.authenticate("b", "s3cret", "10.0.0.1")
