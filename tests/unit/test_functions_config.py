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
    for bad, where in (([{"command": "x"}], "functions[0].name"),
                       ([{"name": "a"}], "exactly one"),
                       ([{"name": "a", "command": "x", "url": "y"}], "exactly one"),
                       ([{"name": "a", "command": "x", "cmd": "y"}], "functions[0].cmd"),
                       ({"name": "a"}, "array of tables")):
        with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
            from_mapping({"functions": bad})


def test_environment_cannot_name_functions_as_a_section():
    with pytest.raises(ConfigError, match="unknown section"):
        from_env({"MANIFOLD_FUNCTIONS_NAME": "x"}, from_mapping({}))
