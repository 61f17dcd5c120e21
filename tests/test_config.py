"""SseConfig: defaults, validation, and reading an application's ``sse:`` section."""

from __future__ import annotations

import datetime

import pytest

from trio_sse import ConfigError, SseConfig


def test_defaults() -> None:
    config = SseConfig()
    assert config.keep_alive == 15.0
    assert config.retry is None
    assert config.write_timeout == 30.0
    assert config.shutdown_retry is None
    assert config.coalesce_bytes == 65_536


def test_timedelta_becomes_seconds() -> None:
    config = SseConfig(keep_alive=datetime.timedelta(milliseconds=1500))
    assert config.keep_alive == 1.5


@pytest.mark.parametrize(
    "field", ["keep_alive", "retry", "write_timeout", "shutdown_retry"]
)
@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "5", True])
def test_bad_durations_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        SseConfig(**{field: value})


@pytest.mark.parametrize("value", [0, -5, 1.5, "64", False])
def test_bad_coalesce_bytes(value: object) -> None:
    with pytest.raises(ConfigError, match="coalesce_bytes"):
        SseConfig(coalesce_bytes=value)  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        SseConfig(keep_alive=-1)


def test_none_disables() -> None:
    config = SseConfig(keep_alive=None, write_timeout=None)
    assert config.keep_alive is None
    assert config.write_timeout is None


def test_from_mapping_reads_the_section_itself() -> None:
    config = SseConfig.from_mapping(
        {
            "keep_alive_interval_secs": 5,
            "retry_secs": 2.5,
            "write_timeout_secs": 10,
            "shutdown_retry_secs": 30,
            "coalesce_max_bytes": 1024,
        }
    )
    assert config == SseConfig(
        keep_alive=5,
        retry=2.5,
        write_timeout=10,
        shutdown_retry=30,
        coalesce_bytes=1024,
    )


def test_from_mapping_reads_an_sse_key() -> None:
    app_config = {"database": {"url": "x"}, "sse": {"keep_alive_interval_secs": 3}}
    assert SseConfig.from_mapping(app_config).keep_alive == 3


def test_from_mapping_accepts_field_names() -> None:
    assert SseConfig.from_mapping({"keep_alive": 7}).keep_alive == 7


def test_from_mapping_empty_gives_defaults() -> None:
    assert SseConfig.from_mapping({}) == SseConfig()


def test_from_mapping_does_not_mutate_input() -> None:
    section = {"keep_alive_interval_secs": 3}
    SseConfig.from_mapping({"sse": section})
    assert section == {"keep_alive_interval_secs": 3}


def test_from_mapping_unknown_key() -> None:
    with pytest.raises(ConfigError, match="'keep_alive_secs'"):
        SseConfig.from_mapping({"keep_alive_secs": 3})


def test_from_mapping_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sse\.write_timeout_secs"):
        SseConfig.from_mapping({"sse": {"write_timeout_secs": -1}})
    with pytest.raises(ConfigError, match=r"sse\.keep_alive_interval_secs"):
        SseConfig.from_mapping({"keep_alive_interval_secs": "fast"})


def test_from_mapping_same_field_twice() -> None:
    with pytest.raises(ConfigError, match="twice"):
        SseConfig.from_mapping({"keep_alive": 1, "keep_alive_interval_secs": 2})


@pytest.mark.parametrize("bad", [None, [], "sse", {"sse": 5}])
def test_from_mapping_not_a_mapping(bad: object) -> None:
    with pytest.raises(ConfigError):
        SseConfig.from_mapping(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 0.0])
def test_write_timeout_zero_is_rejected_naming_the_key(value: float) -> None:
    with pytest.raises(ConfigError, match="None turns it off") as info:
        SseConfig(write_timeout=value)
    assert info.value.key == "write_timeout"
    with pytest.raises(ConfigError, match=r"sse\.write_timeout_secs") as info:
        SseConfig.from_mapping({"sse": {"write_timeout_secs": value}})
    assert info.value.key == "write_timeout_secs"
    assert SseConfig(write_timeout=None).write_timeout is None


def test_config_error_key_for_every_bad_field() -> None:
    for field in ("keep_alive", "retry", "shutdown_retry", "write_delay"):
        with pytest.raises(ConfigError) as info:
            SseConfig(**{field: -1})
        assert info.value.key == field
    with pytest.raises(ConfigError) as info:
        SseConfig(coalesce_bytes=0)
    assert info.value.key == "coalesce_bytes"
    with pytest.raises(ConfigError) as info:
        SseConfig.from_mapping({"nope": 1})
    assert info.value.key == "nope"


def test_max_lifetime_is_positive_or_none() -> None:
    from trio_sse import SseResponse

    assert SseConfig().max_lifetime is None
    assert SseConfig.from_mapping({"max_lifetime_secs": 60}).max_lifetime == 60
    for bad in (0, -1, "long"):
        with pytest.raises(ConfigError) as info:
            SseConfig(max_lifetime=bad)  # type: ignore[arg-type]
        assert info.value.key == "max_lifetime"
        with pytest.raises(ConfigError):
            SseResponse(None, lifetime=bad)  # type: ignore[arg-type]
