"""Users, virtual hosts and configuration loading."""
import pytest

from manifold.broker.core import Broker
from manifold.broker.errors import AccessRefused, NotAllowed
from manifold.config.settings import ConfigError, Settings, from_env, from_mapping, load


def test_guest_only_from_loopback():
    broker = Broker()
    assert broker.authenticate("guest", "guest", "127.0.0.1").name == "guest"
    assert broker.authenticate("guest", "guest", "::1").name == "guest"
    with pytest.raises(AccessRefused, match="localhost"):
        broker.authenticate("guest", "guest", "10.1.2.3")
    with pytest.raises(AccessRefused):
        broker.authenticate("guest", "wrong", "127.0.0.1")
    with pytest.raises(AccessRefused):
        broker.authenticate("nobody", "guest", "127.0.0.1")


def test_configured_users_and_vhosts():
    settings = Settings().replace("server", users=("guest:guest", "app:s3cret"),
                                  vhosts=("/", "prod"))
    broker = Broker(settings)
    user = broker.authenticate("app", "s3cret", "10.0.0.5")
    assert broker.open_vhost("prod", user).name == "prod"
    with pytest.raises(NotAllowed, match="vhost 'nope' not found"):
        broker.open_vhost("nope", user)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key 'amqp.hearbeat_s'.*heartbeat_s"):
        from_mapping({"amqp": {"hearbeat_s": 5}})
    with pytest.raises(ConfigError, match="unknown section 'amqq'"):
        from_mapping({"amqq": {}})


def test_bad_values_name_key_and_accepted_values():
    with pytest.raises(ConfigError, match=r"'amqp.port'.*integer"):
        from_mapping({"amqp": {"port": "high"}})
    with pytest.raises(ConfigError, match=r"'persistence.fsync'.*always, interval, never"):
        from_mapping({"persistence": {"fsync": "sometimes"}})
    with pytest.raises(ConfigError, match=r"'mqtt.port'"):
        from_mapping({"mqtt": {"port": 70000}})


def test_toml_file_then_environment(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[amqp]\nport = 5673\nheartbeat_s = 10\n[server]\nbind = "0.0.0.0"\n')
    settings = load(str(path), environ={"MANIFOLD_AMQP_PORT": "5999"})
    assert settings.amqp.port == 5999 and settings.amqp.heartbeat_s == 10
    assert settings.server.bind == "0.0.0.0"
    with pytest.raises(ConfigError, match="MANIFOLD_NOPE_X"):
        from_env({"MANIFOLD_NOPE_X": "1"}, Settings())


def test_defaults_need_no_file():
    settings = load(None, environ={})
    assert (settings.amqp.port, settings.mqtt.port, settings.stomp.port) == (5672, 1883, 61613)
    assert settings.server.data_dir == "./manifold-data" and settings.server.bind == "127.0.0.1"
