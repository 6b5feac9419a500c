"""`lsq backfill`: trades from the simulator, then bars, rollups and funding over the range, on a real instance."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from lsq.cli import main
from lsq.clock import FakeClock
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.stores.panels import load_panel, write_panel
from lsq.stores.universes import read_universe
from lsq.timelabels import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    WINDOW_MS,
    day_start,
    format_day,
    now_ms,
    to_datetime,
    window_start,
)
from lsq_pipeline.backfill import (
    clamp_range,
    history_range,
    older_periods,
    recent_range,
    run_backfill,
    whole_periods,
)
from lsq_pipeline.cli import dagster_env, instance_yaml


def local_settings(settings: Settings, data_dir: Path) -> Settings:
    return settings.model_copy(update={"data": settings.data.model_copy(update={"data_dir": data_dir})})


@pytest.mark.slow
@pytest.mark.parametrize("minute", [1, 5])  # either side of the window's close; every minute: the test below
def test_backfill_materialises_every_window_and_is_idempotent(settings: Settings, tmp_path: Path, minute: int) -> None:
    """The range asks for the window after a whole hour; whether it is closed yet is decided by the backfill's
    clock, here a FakeClock at `minute` past that hour (well in the past, so the simulator has its trades)."""
    local = local_settings(settings, tmp_path / "data")
    paths = DataPaths(local.data_dir)
    hour = window_start(now_ms(), HOUR_MS) - 2 * HOUR_MS  # a whole hour, two before the current one
    start, end = hour - 2 * WINDOW_MS, hour + HOUR_MS + WINDOW_MS
    clock = FakeClock(hour + HOUR_MS + minute * MINUTE_MS + 30_000)
    closed_end = min(end, window_start(clock.now_ms()))  # the window after the hour is closed from minute 5 on
    with dg.instance_for_test() as instance:
        report = run_backfill(local, start, end, instance, progress=False, clock=clock)
        assert report.success, report.runs
        assert report.windows == (closed_end - start) // WINDOW_MS == (14 if minute < 5 else 15)
        assert report.trades_written > 0
        symbols = read_universe(paths, format_day(start))["symbol"].to_list()
        assert report.symbols == sorted(symbols)

        bars = load_panel("bars", start, end, paths=paths)
        assert bars.group_by("symbol").len()["len"].to_list() == [report.windows] * len(symbols)
        assert set(bars["symbol"]) == set(symbols)
        stats = load_panel("tran_stats", start, end, paths=paths)
        assert stats.select("symbol", "open_time").equals(bars.select("symbol", "open_time"))
        # the hour is recent: rollup_automation rolls it up (within its lookback), not the backfill as well
        assert load_panel("bars", start, end, period="1h", paths=paths).height == 0
        assert "1h" not in report.runs
        premium = load_panel("premium_index", start, end, paths=paths)
        assert premium.height == len(symbols) * report.windows
        assert load_panel("funding", day_start(start), end, paths=paths).height > 0

        # Dagster recorded every window of the range, in one run (single-run backfill policy).
        materialized = instance.get_materialized_partitions(dg.AssetKey("bars_5m"))
        assert len(materialized) == report.windows
        bar_runs = [r for r in instance.get_runs() if "bars_5m" in str(r.asset_selection)]
        assert len(bar_runs) == 1

        again = run_backfill(local, start, end, instance, progress=False, clock=clock)
        assert again.success and again.trades_written == 0
        assert load_panel("bars", start, end, paths=paths).equals(bars)

        # Seen from three days later the range is older than the automation's lookback: the backfill rolls it up.
        later = run_backfill(
            local, start, closed_end, instance, import_trades=False, progress=False, clock=FakeClock(end + 3 * DAY_MS)
        )
        assert later.success and "1h" in later.runs
        hourly = load_panel("bars", start, end, period="1h", paths=paths)
        assert hourly["open_time"].unique().to_list() == [hour]  # only the whole hour inside the range


@pytest.mark.parametrize("minute", range(60))
def test_the_range_ends_at_the_last_window_closed_by_the_clock_at_every_minute(minute: int) -> None:
    hour = 20_000 * DAY_MS + 9 * HOUR_MS
    start, end = hour - 2 * WINDOW_MS, hour + HOUR_MS + WINDOW_MS
    for second in (0, 30, 59):
        now = hour + HOUR_MS + minute * MINUTE_MS + second * 1000
        clamped = clamp_range(start, end, now, first_window_ms=0)
        assert clamped == (start, hour + HOUR_MS + (WINDOW_MS if minute >= 5 else 0))


def test_range_rules() -> None:
    first = 1_000 * DAY_MS
    now = first + 10 * DAY_MS + 7 * 60_000
    assert clamp_range(first + 61_000, now + DAY_MS, now, first) == (first, now - 2 * 60_000)
    with pytest.raises(ValueError, match=r"before data\.partitions_start"):
        clamp_range(first - DAY_MS, now, now, first)
    with pytest.raises(ValueError, match="nothing to backfill"):
        clamp_range(now - 60_000, now, now, first)
    assert whole_periods(first + 1, first + 3 * HOUR_MS + 5, HOUR_MS) == (first + HOUR_MS, first + 2 * HOUR_MS)
    assert whole_periods(first, first + 3 * HOUR_MS, HOUR_MS) == (first, first + 2 * HOUR_MS)
    assert whole_periods(first + 1, first + HOUR_MS, HOUR_MS) is None
    # only the periods starting before the automation's lookback are the backfill's
    span = (first, first + 10 * HOUR_MS)
    assert older_periods(*span, HOUR_MS, first + 3 * HOUR_MS + 5) == (first, first + 3 * HOUR_MS)
    assert older_periods(*span, HOUR_MS, first) is None
    assert older_periods(*span, HOUR_MS, first + DAY_MS) == (first, first + 9 * HOUR_MS)


def test_recent_range_resumes_after_the_last_stored_window(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    now = now_ms()
    assert recent_range(paths, now) == (day_start(now) - DAY_MS, window_start(now))
    last = window_start(now) - 3 * WINDOW_MS
    write_panel(paths, "bars", pl.DataFrame({"symbol": ["BTCUSDT"], "open_time": [last]}), last, last + WINDOW_MS)
    assert recent_range(paths, now) == (last + WINDOW_MS, window_start(now))


def test_cli_rejects_a_missing_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backfill"]) == 2
    assert "give --start" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["backfill", "--start", "yesterday"])
    with pytest.raises(SystemExit):
        main(["backfill", "--history", "--recent"])  # one range at a time


def test_history_range_is_the_strategy_history_up_to_now() -> None:
    now = 20_000 * DAY_MS + 9 * HOUR_MS + 7 * MINUTE_MS
    assert history_range(30, now) == (now - 2 * MINUTE_MS - 30 * DAY_MS, now - 2 * MINUTE_MS)


@pytest.mark.slow
def test_cli_backfills_onto_the_persistent_instance(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    endpoints = settings.endpoints().model_dump()
    config = tmp_path / "lsq.yaml"
    config.write_text(yaml.safe_dump({"data": {"data_dir": str(tmp_path / "data")}, "binance": {"mock": endpoints}}))
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", dagster_env(home)["DAGSTER_HOME"])
    end = window_start(now_ms())
    start = end - 2 * WINDOW_MS
    fmt = "%Y-%m-%dT%H:%M"
    argv = ["--config", str(config), "backfill", "--start", to_datetime(start).strftime(fmt)]
    assert main([*argv, "--end", to_datetime(end).strftime(fmt)]) == 0
    out, err = capfd.readouterr()
    assert "2 windows" in out
    assert "run `lsq backfill --history`" in out  # two windows are far short of strategy.history_days
    # a short readable log: no stage bar off a terminal, no DEBUG line per event or window
    assert "stage" not in err
    assert " - DEBUG - " not in err
    assert (home / "dagster.yaml").read_text() == instance_yaml(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_materialized_partitions(dg.AssetKey("bars_5m"))) == 2
    assert load_panel("bars", start, end, paths=DataPaths(tmp_path / "data")).height > 0
