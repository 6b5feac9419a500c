"""The configuration model: defaults load, env overrides win, bad values name the key, secrets stay hidden."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from lsq.clock import FakeClock
from lsq.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_config
from lsq.timelabels import parse_day


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def default_dict() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def test_default_config_loads_with_two_mock_accounts_and_absolute_data_dir() -> None:
    settings = load_config(env={})
    assert settings.execution.mode == "mock"
    ready, skipped = settings.usable_accounts()
    assert len(ready) >= 2 and not skipped
    assert settings.data_dir.is_absolute()
    assert settings.data.tran_stats.thresholds_usd == pytest.approx((40_000 / 7, 200_000 / 7, 1_000_000 / 7))


def test_lsq_config_env_points_at_another_file(tmp_path: Path) -> None:
    data = default_dict()
    data["strategy"]["history_days"] = 3
    path = write(tmp_path, data)
    assert load_config(env={"LSQ_CONFIG": str(path)}).strategy.history_days == 3


def test_lsq_data_dir_env_overrides_file(tmp_path: Path) -> None:
    settings = load_config(env={"LSQ_DATA_DIR": str(tmp_path / "d")})
    assert settings.data_dir == (tmp_path / "d").resolve()


def test_env_credentials_take_precedence_for_testnet_and_live(tmp_path: Path) -> None:
    data = default_dict()
    data["execution"]["testnet"]["accounts"] = [{"account_id": "tn1", "api_key": "file-key", "api_secret": "file-sec"}]
    data["execution"]["live"]["accounts"] = [{"account_id": "main"}]
    path = write(tmp_path, data)
    env = {"TN1_TESTNET_API_KEY": "env-key", "MAIN_API_KEY": "live-key", "MAIN_API_SECRET": "live-sec"}
    settings = load_config(path, env=env)
    tn = settings.execution.testnet.accounts[0]
    assert tn.api_key is not None and tn.api_key.get_secret_value() == "env-key"
    assert tn.api_secret is not None and tn.api_secret.get_secret_value() == "file-sec"
    ready, skipped = settings.usable_accounts("live")
    assert [a.account_id for a in ready] == ["main"] and not skipped


def test_account_without_credentials_is_not_started_and_reason_given(tmp_path: Path) -> None:
    data = default_dict()
    data["execution"]["live"]["accounts"] = [{"account_id": "main"}]
    settings = load_config(write(tmp_path, data), env={})
    ready, skipped = settings.usable_accounts("live")
    assert ready == []
    assert "MAIN_API_KEY" in skipped["main"] and "MAIN_API_SECRET" in skipped["main"]


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("execution", "mode", "paper", "execution.mode: must be one of 'mock', 'testnet' or 'live'"),
        ("strategy", "history_days", 0, "strategy.history_days"),
        ("data", "timezone", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
        ("data", "universe_refresh_time", "25:00", "data.universe_refresh_time"),
        ("strategy", "universe_version", "v3", "strategy.universe_version"),
    ],
)
def test_bad_values_name_the_key_and_allowed_values(
    tmp_path: Path, section: str, key: str, value: object, expected: str
) -> None:
    data = default_dict()
    data[section][key] = value
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env={})
    assert expected in str(info.value)
    assert "Traceback" not in str(info.value)


def test_leverage_out_of_range_and_unknown_key_are_reported(tmp_path: Path) -> None:
    data = default_dict()
    data["execution"]["contract_settings"]["leverage"] = 200
    data["execution"]["colour"] = "red"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env={})
    text = str(info.value)
    assert "execution.contract_settings.leverage" in text and "125" in text
    assert "execution.colour: unknown key" in text


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "nope.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})


def test_secrets_never_appear_in_repr_or_errors(tmp_path: Path) -> None:
    data = default_dict()
    data["execution"]["live"]["accounts"] = [
        {"account_id": "main", "api_key": "K-SECRET-1", "api_secret": "S-SECRET-2"}
    ]
    settings = load_config(write(tmp_path, data), env={})
    dumped = repr(settings) + str(settings) + settings.model_dump_json()
    assert "K-SECRET-1" not in dumped and "S-SECRET-2" not in dumped
    data["execution"]["live"]["accounts"][0]["account_id"] = "bad id!"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env={})
    assert "S-SECRET-2" not in str(info.value)
    twins = [{"account_id": "a", "api_key": "K-SECRET-1", "api_secret": "S-SECRET-2"}] * 2
    data["execution"]["live"]["accounts"] = twins
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env={})
    assert "duplicate account_id" in str(info.value)
    assert "S-SECRET-2" not in str(info.value) and "K-SECRET-1" not in str(info.value)
    data["execution"]["live"]["accounts"] = [{"account_id": "a", "api_key": "K", "api_secret": 123456789}]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env={})
    assert "123456789" not in str(info.value)


def test_malformed_sections_are_config_errors_not_tracebacks(tmp_path: Path) -> None:
    data = default_dict()
    data["execution"]["live"] = ["main"]
    with pytest.raises(ConfigError, match=r"execution\.live"):
        load_config(write(tmp_path, data), env={})


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_calculator_weights_are_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"strategy:\n  calculators:\n    weights: {{momentum_24h: 1.0, x: {value}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "strategy.calculators.weights.x: must be a finite number" in str(info.value)
    assert "momentum_24h" not in str(info.value)


def test_yaml_errors_show_where_but_never_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "execution:\n  live:\n    accounts:\n      - account_id: main\n        api_secret: S-SECRET-9: oops\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={})
    text = str(info.value)
    assert "not valid YAML" in text and "line 5" in text
    assert "S-SECRET-9" not in text and "api_secret" not in text


def test_an_account_written_as_a_string_is_not_echoed(tmp_path: Path) -> None:
    data = default_dict()
    data["execution"]["mock"]["accounts"] = ["main K-SECRET-1 S-SECRET-2"]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env={})
    text = str(info.value)
    assert "execution.mock.accounts.0" in text
    assert "K-SECRET-1" not in text and "S-SECRET-2" not in text


@pytest.mark.parametrize(
    "line", ["partitions_start: 2026-13-45", "partitions_start: '2026-02-30'", "partitions_start: 5"]
)
def test_partitions_start_must_be_a_real_date(tmp_path: Path, line: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"data:\n  {line}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "data.partitions_start: must be a" in str(info.value) and "date YYYY-MM-DD" in str(info.value)


def test_partitions_start_explicit_dates_load_quoted_or_not(tmp_path: Path) -> None:
    for line in ("partitions_start: 2025-01-31", "partitions_start: '2025-01-31'"):
        path = tmp_path / "config.yaml"
        path.write_text(f"data:\n  {line}\n")
        assert load_config(path, env={}, clock=FakeClock(parse_day("2026-12-01"))).data.partitions_start == "2025-01-31"


def test_partitions_start_defaults_to_the_kept_history_before_today(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("strategy:\n  history_days: 10\n")
    clock = FakeClock(parse_day("2026-12-01") + 13 * 3_600_000)
    settings = load_config(path, env={}, clock=clock)
    assert settings.data.partitions_start == "2026-11-19"  # 10 days of history + 2 days margin before today
    assert Settings().first_partition_day(parse_day("2026-03-05")) == "2026-02-01"  # 30 + 2 days
    clock.advance(86_400)
    assert load_config(path, env={}, clock=clock).data.partitions_start == "2026-11-20"
    assert "partitions_start" not in default_dict()["data"]  # a new user rolls no date by hand


def test_calculation_interval_names_the_allowed_values(tmp_path: Path) -> None:
    data = default_dict()
    data["strategy"]["calculation_interval"] = "1h"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env={})
    assert "strategy.calculation_interval: must be one of '5m'" in str(info.value)
    assert "5-minute" in str(info.value)


def test_settings_nothing_reads_are_warned_about_once_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = default_dict()
    data["execution"]["live"]["accounts"] = [{"account_id": "main", "starting_balance_usdt": 5}]
    with caplog.at_level(logging.WARNING, logger="lsq.config"):
        load_config(write(tmp_path, data), env={})
    [record] = [r for r in caplog.records if r.name == "lsq.config"]
    assert "execution.live.accounts.0.starting_balance_usdt is ignored" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lsq.config"):
        load_config(env={})
    assert not [r for r in caplog.records if r.name == "lsq.config"]
