"""[[functions]], [sns] and [kinesis] settings."""
import pytest

from manifold.config.settings import ConfigError, from_env, from_mapping


def test_functions_tables_are_read_and_checked():
    settings = from_mapping({"functions": [{"name": "a", "command": "/bin/true"},
                                           {"name": "b", "url": "http://x/", "timeout_s": 2}],
                             "sns": {"smtp_url": "smtp://127.0.0.1:25"},
                             "kinesis": {"iterator_ttl_s": 60}})
    assert [(f.name, f.command, f.url, f.timeout_s) for f in settings.functions] == [
        ("a", "/bin/true", "", 30.0), ("b", "", "http://x/", 2.0)]
    assert settings.sns.smtp_url == "smtp://127.0.0.1:25"
    assert settings.kinesis.iterator_ttl_s == 60
    for bad, where in (([{"command": "x"}], "entry 1 lacks 'name'"),
                       ([{"name": "a"}], "exactly one"),
                       ([{"name": "a", "command": "x", "url": "y"}], "exactly one"),
                       ([{"name": "a", "command": "x", "cmd": "y"}], "unknown key 'cmd' in"),
                       ({"name": "a"}, "array of tables")):
        with pytest.raises(ConfigError, match=where):
            from_mapping({"functions": bad})


def test_environment_cannot_name_functions_as_a_section():
    with pytest.raises(ConfigError, match="unknown section"):
        from_env({"MANIFOLD_FUNCTIONS_NAME": "x"}, from_mapping({}))


def test_smtp_url_flag(monkeypatch):
    from manifold.broker.cli import build_parser, settings_from_args
    monkeypatch.delenv("MANIFOLD_SNS_SMTP_URL", raising=False)
    args = build_parser().parse_args(["serve", "--smtp-url", "smtp://127.0.0.1:2525"])
    assert settings_from_args(args).sns.smtp_url == "smtp://127.0.0.1:2525"
