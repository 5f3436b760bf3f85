"""Settings: defaults documented in conf/sentinel.toml, clear one-sentence errors."""
import tomllib

import pytest

from sentinel.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("options", "conf"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def test_documented_defaults_equal_built_in_defaults():
    documented = _flat(tomllib.loads(DEFAULT_CONFIG.read_text()))
    built_in = _flat(Settings().to_dict())
    assert documented == built_in


def test_set_overrides_parse_toml_values():
    s = load_settings(None, ["window.length=64", "model.cell=lstm", 'data.features=["a","b"]', "sinks.enabled=sqlite,s3"])
    assert (s.window.length, s.model.cell, s.data.features, s.sinks.enabled) == (64, "lstm", ("a", "b"), ("sqlite", "s3"))


@pytest.mark.parametrize("override,words", [
    ("window.lenght=3", "unknown setting 'window.lenght'"),
    ("nosuch.key=1", "unknown setting 'nosuch.key'"),
    ("window.length=abc", "'window.length'"),
    ("window.length=2.5", "must be an integer"),
    ("model.cell=transformer", "use one of gru, lstm"),
    ("window.length=0", "at least 1"),
    ("threshold.quantile=1.5", "strictly between 0 and 1"),
    ("sinks.enabled=[\"sqlite\",\"oracle\"]", "unknown sink 'oracle'"),
    ("sinks.postgres.dsn='postgresql://u:secret@h/db'", "PGPASSWORD"),
    ("novalue", "section.key=value"),
    ("spark.jvm_gc='zgc'", "use one of serial, parallel, g1, default"),
])
def test_bad_settings_stop_with_one_sentence(override, words):
    with pytest.raises(ConfigError) as err:
        load_settings(None, [override])
    msg = str(err.value)
    assert words in msg
    assert "\n" not in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_invalid_toml_and_unknown_key_in_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[window\nlength = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    bad.write_text("[window]\ncolour = 3\n")
    with pytest.raises(ConfigError, match=f"unknown setting 'window.colour' in {bad}"):
        load_settings(bad)


def test_file_then_set_precedence(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("[window]\nlength = 10\nstride = 2\n[source.kafka]\noptions = { \"security.protocol\" = \"SSL\" }\n")
    s = load_settings(f, ["window.length=12"])
    assert (s.window.length, s.window.stride) == (12, 2)
    assert s.source.kafka.options == {"security.protocol": "SSL"}


def test_example_configs_load():
    examples = sorted((DEFAULT_CONFIG.parent / "examples").glob("*.toml"))
    for path in examples + [DEFAULT_CONFIG]:
        load_settings(path)


def test_jvm_gc_flag_goes_before_extra_java_options_unless_they_choose_a_collector():
    from sentinel.stream.spark import _java_options
    key = "spark.driver.extraJavaOptions"
    sp = load_settings(None, []).spark
    assert _java_options(sp, key) == "-XX:+UseSerialGC"
    sp = load_settings(None, ["spark.jvm_gc='default'"]).spark
    assert _java_options(sp, key) == ""
    sp = load_settings(None, ["spark.jvm_gc='parallel'", 'spark.conf={"spark.driver.extraJavaOptions"="-Xss1m"}']).spark
    assert _java_options(sp, key) == "-XX:+UseParallelGC -Xss1m"
    assert _java_options(sp, "spark.executor.extraJavaOptions") == "-XX:+UseParallelGC"
    # two collectors stop the JVM: the one chosen in spark.conf is kept alone
    sp = load_settings(None, ['spark.conf={"spark.driver.extraJavaOptions"="-XX:+UseG1GC"}']).spark
    assert _java_options(sp, key) == "-XX:+UseG1GC"
