from __future__ import annotations

from pathlib import Path

import pytest

from agents.envvars import Secret, declarations, redact_url
from agents.settings import REFERENCE, Settings, StackSettings, describe
from streams.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_match_the_reference_table() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url.reveal() == "redis://127.0.0.1:6379/0"
    assert s.topic_prefix == ""
    assert s.store == "rocksdb://"
    assert s.partitions == 8
    assert s.data_dir == Path(".userpulse/data")
    documented = {name for name, _, _ in REFERENCE}
    assert set(s.to_env()) <= documented


def test_the_constructor_defaults_are_the_declared_defaults() -> None:
    assert Settings() == Settings.from_env({})
    assert StackSettings() == StackSettings.from_env({})
    assert list(Settings().to_env()) == [spec.env for _, spec in declarations(Settings)]


def readme_settings_table() -> list[tuple[str, str]]:
    """(variable, default) of each row of the README's settings table; an
    *(empty…)* default is ''."""
    section = README.read_text(encoding="utf-8").split("\n## Settings\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 3 and cells[1].startswith("`USERPULSE_"):
            default = cells[2]
            rows.append(
                (cells[1].strip("`"), "" if default.startswith("*(empty") else default.strip("`"))
            )
    return rows


def test_the_readme_table_lists_every_worker_setting_with_its_default() -> None:
    declared = [(spec.env, spec.default) for _, spec in declarations(Settings)]
    assert readme_settings_table() == declared


def test_environment_overrides_and_round_trips_through_to_env() -> None:
    env = {
        "USERPULSE_KAFKA_BOOTSTRAP": "k1:9092,k2:9093",
        "USERPULSE_REDIS_URL": "redis://:hunter2@r:6379/1",
        "USERPULSE_TOPIC_PREFIX": "staging-",
        "USERPULSE_STORE": "memory://",
        "USERPULSE_PARTITIONS": "12",
        "USERPULSE_LOG_LEVEL": "DEBUG",
    }
    s = Settings.from_env(env)
    assert s.topic("user-events") == "staging-user-events"
    assert s.partitions == 12 and s.store == "memory://" and s.log_level == "debug"
    assert Settings.from_env(s.to_env()) == s


def test_a_password_never_shows_in_repr() -> None:
    s = Settings.from_env({"USERPULSE_REDIS_URL": "redis://:hunter2@r:6379/0"})
    assert "hunter2" not in repr(s)
    assert redact_url(s.redis_url.reveal()) == "redis://:***@r:6379/0"
    assert repr(Secret("x")) == "Secret('**********')"


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.partitions = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("USERPULSE_PARTITIONS", "many", "not a whole number"),
        ("USERPULSE_PARTITIONS", "0", "out of range"),
        ("USERPULSE_WEB_PORT", "70000", "out of range"),
        ("USERPULSE_STORE", "postgres://", "not supported"),
        ("USERPULSE_KAFKA_BOOTSTRAP", "localhost", "not host:port"),
        ("USERPULSE_REDIS_URL", "http://x", "not a redis://"),
        ("USERPULSE_LOG_LEVEL", "loud", "unknown"),
        ("USERPULSE_APP_ID", "", "empty"),
        ("USERPULSE_PARTITONS", "8", "not a userpulse setting"),
    ],
)
def test_a_bad_value_names_the_key_and_the_fix(key: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({key: value})
    assert info.value.key == key
    assert fragment in info.value.problem
    assert info.value.fix
    assert str(info.value).startswith(f"{key}: ")


def test_stack_settings_read_their_own_keys_and_reject_clashing_ports() -> None:
    s = StackSettings.from_env({"USERPULSE_STACK_KAFKA_PORT": "19092", "USERPULSE_STACK_DIR": "/x"})
    assert s.kafka_port == 19092 and s.stack_dir == Path("/x")
    with pytest.raises(ConfigError) as info:
        StackSettings.from_env({"USERPULSE_STACK_REDIS_PORT": "9092"})
    assert "must differ" in info.value.problem
    assert info.value.key == "USERPULSE_STACK_*_PORT"


def test_the_policy_file_is_loaded_and_a_bad_one_names_the_key(tmp_path: Path) -> None:
    assert Settings.from_env({}).load_policy().tiers.high_ltv == 1000.0
    good = tmp_path / "policy.toml"
    good.write_text("[tiers]\nhigh_ltv = 5000.0\n")
    assert (
        Settings.from_env({"USERPULSE_POLICY_FILE": str(good)}).load_policy().tiers.high_ltv
        == 5000.0
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[tiers]\nhigh_ltvv = 5000.0\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"USERPULSE_POLICY_FILE": str(bad)}).load_policy()
    assert info.value.key == "tiers.high_ltvv"
    with pytest.raises(ConfigError) as missing:
        Settings.from_env({"USERPULSE_POLICY_FILE": str(tmp_path / "nope.toml")}).load_policy()
    assert missing.value.key == "USERPULSE_POLICY_FILE"


def test_the_shipped_policy_file_loads(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "policy.toml"
    s = Settings.from_env({"USERPULSE_POLICY_FILE": str(shipped)})
    assert s.load_policy() == Settings.from_env({}).load_policy()


def test_the_demo_policy_loads_and_has_second_scale_reminders() -> None:
    demo = Path(__file__).resolve().parents[2] / "deploy" / "demo-policy.toml"
    policy = Settings.from_env({"USERPULSE_POLICY_FILE": str(demo)}).load_policy()
    assert policy.cart.reminder_delays_s == (8, 30)
    assert policy.delivery.quiet_hours == ()


# ---- one name per environment ------------------------------------------------------
def test_the_topic_prefix_names_everything_an_environment_owns() -> None:
    default = Settings.from_env({})
    assert (default.app_id, default.redis_key_prefix, default.data_dir) == (
        "userpulse",
        "up:",
        Path(".userpulse/data"),
    )
    staging = Settings.from_env({"USERPULSE_TOPIC_PREFIX": "staging-"})
    assert staging.topic("user-events") == "staging-user-events"
    assert staging.app_id == "staging-userpulse"
    assert staging.redis_key_prefix == "staging-up:"
    assert staging.data_dir == Path(".userpulse/staging-data")
    assert Settings(topic_prefix="staging-") == staging  # the constructor derives the same


def test_each_derived_name_can_be_set_and_may_use_the_prefix() -> None:
    s = Settings.from_env(
        {
            "USERPULSE_TOPIC_PREFIX": "eu.",
            "USERPULSE_APP_ID": "lifecycle",
            "USERPULSE_REDIS_KEY_PREFIX": "tenant:{prefix}",
            "USERPULSE_DATA_DIR": "/var/lib/userpulse/{prefix}tables",
        }
    )
    assert s.app_id == "lifecycle"
    assert s.redis_key_prefix == "tenant:eu."
    assert s.data_dir == Path("/var/lib/userpulse/eu.tables")
    assert Settings.from_env(s.to_env()) == s


def test_settings_says_where_each_value_came_from() -> None:
    rows = {
        name: (value, source)
        for name, value, source, _ in describe(
            {"USERPULSE_TOPIC_PREFIX": "qa-", "USERPULSE_REDIS_KEY_PREFIX": "x:"}
        )
    }
    assert rows["USERPULSE_TOPIC_PREFIX"] == ("qa-", "set by USERPULSE_TOPIC_PREFIX")
    assert rows["USERPULSE_APP_ID"] == ("qa-userpulse", "derived from USERPULSE_TOPIC_PREFIX")
    assert rows["USERPULSE_DATA_DIR"] == (
        ".userpulse/qa-data",
        "derived from USERPULSE_TOPIC_PREFIX",
    )
    assert rows["USERPULSE_REDIS_KEY_PREFIX"] == ("x:", "set by USERPULSE_REDIS_KEY_PREFIX")
    assert rows["USERPULSE_PARTITIONS"] == ("8", "default")
    assert rows["USERPULSE_STACK_KAFKA_PORT"] == ("9092", "default")


def test_settings_never_shows_a_password() -> None:
    rows = describe({"USERPULSE_REDIS_URL": "redis://:hunter2@r:6379/0"})
    assert not any("hunter2" in value for _, value, _, _ in rows)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("USERPULSE_TOPIC_PREFIX", "staging/"),
        ("USERPULSE_TOPIC_PREFIX", "my env-"),
        ("USERPULSE_APP_ID", "user pulse"),
        ("USERPULSE_APP_ID", "{prefix"),
    ],
)
def test_names_kafka_would_refuse_are_refused_at_once(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({key: value})
    assert info.value.key == key
    assert "letters, digits" in info.value.fix


def test_the_stack_ports_alone_point_the_worker_settings_at_that_stack() -> None:
    from agents.settings import describe

    env = {"USERPULSE_STACK_KAFKA_PORT": "19092", "USERPULSE_STACK_REDIS_PORT": "16379"}
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.redis_url.reveal() == "redis://127.0.0.1:16379/0"
    rows = {name: (value, source) for name, value, source, _ in describe(env)}
    assert rows["USERPULSE_KAFKA_BOOTSTRAP"] == (
        "127.0.0.1:19092",
        "derived from USERPULSE_STACK_KAFKA_PORT",
    )
    assert rows["USERPULSE_REDIS_URL"][1] == "derived from USERPULSE_STACK_REDIS_PORT"
    # an explicit value wins, and without the stack's ports the defaults stay
    explicit = Settings.from_env({**env, "USERPULSE_KAFKA_BOOTSTRAP": "kafka:9092"})
    assert explicit.kafka_bootstrap == "kafka:9092"
    assert Settings.from_env({}).kafka_bootstrap == "127.0.0.1:9092"


def test_standby_replicas_reach_the_faust_app(tmp_path: Path) -> None:
    from agents.worker.app import new_app

    settings = Settings.from_env(
        {"USERPULSE_STANDBY_REPLICAS": "0", "USERPULSE_DATA_DIR": str(tmp_path)}
    )
    assert new_app(settings).conf.table_standby_replicas == 0  # builds the app; connects nothing
    default = Settings.from_env({"USERPULSE_DATA_DIR": str(tmp_path)})
    assert new_app(default).conf.table_standby_replicas == 1
