"""The sealed-window sensor and the schedules, evaluated with Dagster's test contexts on a real instance.

The sensor's "now" is a FakeClock: which windows are closed, and which are fresh, never depends on when this runs."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from builders import pinned_settings

from lsq.clock import FakeClock
from lsq.paths import DataPaths, atomic_write_text
from lsq.timelabels import HOUR_MS, WINDOW_MS, parse_partition_key, partition_key, window_start
from lsq_pipeline.definitions import build_definitions
from lsq_pipeline.defs.market.sensors import contiguous_runs, read_marker
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.tags import RANGE_END_TAG, RANGE_START_TAG

T0 = parse_partition_key("2026-11-20-10:00")
NOW = T0 + HOUR_MS + 30_000  # the sensor's clock: an hour after T0, half a minute into a window


def write_marker(paths: DataPaths, window_ms: int, rows: int = 10) -> Path:
    path = paths.marker_file(window_ms)
    body = {
        "window_start": window_ms,
        "window_end": window_ms + WINDOW_MS,
        "partition_key": partition_key(window_ms),
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "rows": rows,
        "sealed_at": window_ms + WINDOW_MS + 2_000,
    }
    atomic_write_text(path, json.dumps(body))
    return path


@pytest.fixture(scope="module")
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def env(
    tmp_path: Path, instance: dg.DagsterInstance, clock: FakeClock
) -> tuple[DataPaths, dg.Definitions, dg.DagsterInstance]:
    paths = DataPaths(tmp_path / "data")
    defs = build_definitions(pinned_settings(), {"lsq": LsqResource(data_dir=str(paths.root))}, clock)
    return paths, defs, instance


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    sensor = defs.get_sensor_def("sealed_window_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    return sensor.evaluate_tick(context)


def test_one_run_per_sealed_window_keyed_by_partition(env) -> None:
    paths, defs, instance = env
    write_marker(paths, T0)
    first = tick(defs, instance, cursor=partition_key(T0 - WINDOW_MS))
    assert [r.run_key for r in first.run_requests] == ["2026-11-20-10:00"]
    assert first.run_requests[0].partition_key == "2026-11-20-10:00"
    assert first.cursor == "2026-11-20-10:00"
    events = first.asset_events
    assert [(e.asset_key, e.partition) for e in events] == [(dg.AssetKey("agg_trades"), "2026-11-20-10:00")]
    assert events[0].metadata["rows"].value == 10

    again = tick(defs, instance, cursor=first.cursor)
    assert again.run_requests == [] and again.skip_message

    write_marker(paths, T0 + WINDOW_MS)
    nxt = tick(defs, instance, cursor=first.cursor)
    assert [r.run_key for r in nxt.run_requests] == ["2026-11-20-10:05"]


def test_nothing_requested_before_its_marker_exists(env) -> None:
    _, defs, instance = env
    result = tick(defs, instance, cursor=partition_key(T0))
    assert result.run_requests == [] and "no sealed window" in result.skip_message


def test_catch_up_after_outage_is_one_range_run_then_the_newest_window(env) -> None:
    paths, defs, instance = env
    for i in range(6):
        write_marker(paths, T0 + i * WINDOW_MS)
    result = tick(defs, instance, cursor=partition_key(T0 - WINDOW_MS))
    catch_up, newest = result.run_requests
    assert catch_up.tags[RANGE_START_TAG] == "2026-11-20-10:00"
    assert catch_up.tags[RANGE_END_TAG] == "2026-11-20-10:20"
    assert catch_up.run_key == "2026-11-20-10:00...2026-11-20-10:20"
    assert set(catch_up.asset_selection) == {
        dg.AssetKey("bars_5m"),
        dg.AssetKey("tran_stats_5m"),
        dg.AssetKey("premium_index_5m"),
    }
    assert newest.run_key == newest.partition_key == "2026-11-20-10:25"
    # long past by now: its bars are built, but no factors or target positions from a stale signal
    assert set(newest.asset_selection) == set(catch_up.asset_selection)
    assert result.cursor == "2026-11-20-10:25"
    assert len(result.asset_events) == 6
    # every window run is serial (one at a time, in order, by the tag's limit in dagster.yaml)
    assert all(r.tags.get("lsq/window") == "serial" for r in result.run_requests)


def test_a_fresh_window_gets_the_whole_job_factors_included(env) -> None:
    paths, defs, instance = env
    newest = window_start(NOW) - WINDOW_MS  # the last closed window
    for w in (newest - WINDOW_MS, newest):
        write_marker(paths, w)
    result = tick(defs, instance, cursor=partition_key(newest - 2 * WINDOW_MS))
    older, fresh = result.run_requests
    assert older.asset_selection is not None and dg.AssetKey("alpha") not in older.asset_selection
    assert fresh.run_key == partition_key(newest) and fresh.asset_selection is None


def test_catch_up_splits_at_missing_windows(env) -> None:
    paths, defs, instance = env
    for i in (0, 1, 3, 4, 6):
        write_marker(paths, T0 + i * WINDOW_MS)
    result = tick(defs, instance, cursor=partition_key(T0 - WINDOW_MS))
    keys = [r.run_key for r in result.run_requests]
    assert keys == [
        "2026-11-20-10:00...2026-11-20-10:05",
        "2026-11-20-10:15...2026-11-20-10:20",
        "2026-11-20-10:30",
    ]


def test_unreadable_marker_stops_the_tick_there(env) -> None:
    paths, defs, instance = env
    write_marker(paths, T0)
    bad = paths.marker_file(T0 + WINDOW_MS)
    bad.write_text("{not json")
    write_marker(paths, T0 + 2 * WINDOW_MS)
    result = tick(defs, instance, cursor=partition_key(T0 - WINDOW_MS))
    assert [r.run_key for r in result.run_requests] == ["2026-11-20-10:00"]
    assert result.cursor == "2026-11-20-10:00"
    with pytest.raises(Exception, match="unreadable marker"):
        tick(defs, instance, cursor=result.cursor)
    with pytest.raises(ValueError, match="unreadable marker"):
        read_marker(bad)


def test_window_not_yet_closed_by_the_local_clock_waits(env, clock: FakeClock) -> None:
    """A marker written by a collector whose server clock runs ahead is not a Dagster partition yet; it is requested
    at the first tick after the window closes by this machine's clock."""
    paths, defs, instance = env
    open_window = window_start(NOW)
    write_marker(paths, open_window - WINDOW_MS)
    write_marker(paths, open_window)
    result = tick(defs, instance, cursor=partition_key(open_window - 2 * WINDOW_MS))
    assert [r.run_key for r in result.run_requests] == [partition_key(open_window - WINDOW_MS)]
    assert result.cursor == partition_key(open_window - WINDOW_MS)
    clock.set_ms(open_window + WINDOW_MS)
    closed = tick(defs, instance, cursor=result.cursor)
    assert [r.run_key for r in closed.run_requests] == [partition_key(open_window)]


@pytest.mark.parametrize(
    ("second", "fresh"), [(0, True), (1, True), (59, True), (299, True), (600, True), (601, False)]
)
def test_the_newest_window_is_fresh_until_two_windows_after_its_end(
    env, clock: FakeClock, second: int, fresh: bool
) -> None:
    """Freshness (the whole job, factors included) is decided by the injected clock, whatever the second."""
    paths, defs, instance = env
    window = window_start(NOW)
    write_marker(paths, window)
    clock.set_ms(window + WINDOW_MS + second * 1000)
    (request,) = tick(defs, instance, cursor=partition_key(window - WINDOW_MS)).run_requests
    assert request.run_key == partition_key(window)
    assert (request.asset_selection is None) is fresh


def test_contiguous_runs() -> None:
    w = WINDOW_MS
    assert contiguous_runs([0, w, 2 * w, 5 * w, 7 * w, 8 * w]) == [(0, 2 * w), (5 * w, 5 * w), (7 * w, 8 * w)]
    assert contiguous_runs([]) == []


def test_universe_schedule_builds_tomorrow_at_local_refresh_time(env) -> None:
    _, defs, instance = env
    schedule = defs.get_schedule_def("universe_schedule")
    assert schedule.cron_schedule == "55 23 * * *"
    assert schedule.execution_timezone == "Asia/Shanghai"
    # 23:55 in Shanghai on 2026-11-20 is 15:55 UTC: the universe of 2026-11-21 is built.
    when = datetime(2026, 11, 20, 15, 55, tzinfo=UTC)
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    requests = schedule.evaluate_tick(context).run_requests
    assert [(r.run_key, r.partition_key) for r in requests] == [("2026-11-21", "2026-11-21")]


def test_funding_schedule_refreshes_today_and_completes_yesterday_after_midnight(env) -> None:
    _, defs, instance = env
    schedule = defs.get_schedule_def("funding_schedule")
    at = lambda h: dg.build_schedule_context(  # noqa: E731
        instance=instance,
        scheduled_execution_time=datetime(2026, 11, 21, h, 2, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    assert [r.partition_key for r in schedule.evaluate_tick(at(9)).run_requests] == ["2026-11-21"]
    midnight = schedule.evaluate_tick(at(0)).run_requests
    assert [r.partition_key for r in midnight] == ["2026-11-21", "2026-11-20"]
    assert len({r.run_key for r in midnight}) == 2
