"""The rolling factor-view panel (lsq.stores.factor_panel) never disagrees with the parquet it caches: after each
extension, across a day's end, after a backfill or re-write of older windows, after the panel is deleted or corrupt,
for an older window, with concurrent readers, and as seen by a calculator inside the real `factors` asset."""

from __future__ import annotations

import json
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from builders import pinned_settings
from polars.testing import assert_frame_equal

from factors.data_view import PANELS, AlphaDataView
from factors.discovery import discover
from factors.synthetic import Panels, make_panels
from lsq.paths import DataPaths
from lsq.stores.factor_panel import roll_base
from lsq.stores.panels import day_file, days_between, time_column, write_panel
from lsq.symbols import to_exchange
from lsq.timelabels import DAY_MS, WINDOW_MS, day_start, format_day, parse_label, partition_key
from lsq_pipeline.defs.factors.assets import build_factor_assets
from lsq_pipeline.defs.factors.view_roll import factor_view_job, factor_view_schedule
from lsq_pipeline.partitions import partitions_for
from lsq_pipeline.resources import LsqResource

HISTORY_DAYS = 2
LAST = parse_label("2026-11-20-003")  # a few windows after midnight: the last test windows cross a day's end
FIRST = LAST - 6 * WINDOW_MS  # 23:35 of the day before
DATA_START = day_start(LAST) - 3 * DAY_MS


@pytest.fixture(scope="module")
def panels() -> Panels:
    return make_panels(6, (LAST + WINDOW_MS - DATA_START) / DAY_MS, LAST)


def store(paths: DataPaths, panels: Panels, start_ms: int, end_ms: int) -> None:
    """The windows [start_ms, end_ms) of every kind, written as the pipeline writes them."""
    for kind in PANELS:
        frame = getattr(panels, kind)
        tcol = time_column(kind)
        write_panel(
            paths, kind, frame.filter(pl.col(tcol).is_between(start_ms, end_ms, closed="left")), start_ms, end_ms
        )


def from_parquet(paths: DataPaths, window_ms: int, history_days: int = HISTORY_DAYS) -> AlphaDataView:
    """The view built the old way: every day file read whole, the view's constructor doing the rest."""
    end = window_ms + WINDOW_MS
    frames: dict[str, pl.DataFrame | None] = {}
    for kind in PANELS:
        files = [p for d in days_between(end - history_days * DAY_MS, end) if (p := day_file(paths, kind, d)).exists()]
        frames[kind] = pl.concat([pl.read_parquet(p) for p in files]) if files else None
    return AlphaDataView(window_ms, **frames, history_days=history_days)


def assert_same_view(paths: DataPaths, window_ms: int, history_days: int = HISTORY_DAYS) -> AlphaDataView:
    view = AlphaDataView.from_storage(paths, window_ms, history_days, universe_version=None)
    reference = from_parquet(paths, window_ms, history_days)
    assert view.universe == reference.universe
    for got, want in zip(frames(view), frames(reference), strict=True):
        assert_frame_equal(got, want)
    return view


def frames(view: AlphaDataView) -> list[pl.DataFrame]:
    return [view.bars_panel, view.tran_stats_panel, view.premium_index_panel, view.funding_panel]


def manifest(paths: DataPaths) -> dict:
    return json.loads((paths.factor_view / "manifest.json").read_text())


def roll(paths: DataPaths, window_ms: int, history_days: int = HISTORY_DAYS) -> dict:
    """What factor_view_schedule's run does for the day of `window_ms`."""
    end = window_ms + WINDOW_MS
    return roll_base(paths, end - history_days * DAY_MS, end)


def test_each_window_extends_the_panel_and_the_daily_roll_moves_its_base(tmp_path: Path, panels: Panels) -> None:
    paths = DataPaths(tmp_path / "data")
    store(paths, panels, DATA_START, FIRST + WINDOW_MS)
    assert_same_view(paths, FIRST)
    generation = manifest(paths)["generation"]
    for window in range(FIRST + WINDOW_MS, LAST + WINDOW_MS, WINDOW_MS):
        store(paths, panels, window, window + WINDOW_MS)
        view = assert_same_view(paths, window)
        assert view.bars_panel["open_time"].max() == window
        # no window run rewrites the base, not even the first of a day: it reads the day just ended from parquet
        assert manifest(paths)["generation"] == generation
        if day_start(window) != day_start(window - WINDOW_MS):
            assert manifest(paths)["hi"] == day_start(window) - DAY_MS
            rolled = roll(paths, window)
            assert rolled["rewritten"] and manifest(paths)["generation"] == generation + 1
            assert manifest(paths)["hi"] == day_start(window)
            assert not roll(paths, window)["rewritten"]  # the schedule's retry, or a second tick
            generation = manifest(paths)["generation"]
            assert_same_view(paths, window)
    assert manifest(paths)["hi"] == day_start(LAST)
    assert manifest(paths)["generation"] == generation
    # readable like every other file of the data directory (not mkstemp's 0600)
    modes = {p.stat().st_mode & 0o777 for p in paths.factor_view.glob("*.arrow")}
    assert modes == {(paths.factor_view / "manifest.json").stat().st_mode & 0o777}


def test_without_the_roll_a_base_two_days_behind_is_rewritten_by_the_window_run(tmp_path: Path, panels: Panels) -> None:
    paths = DataPaths(tmp_path / "data")
    early = day_start(LAST) - 2 * DAY_MS + 100 * WINDOW_MS
    store(paths, panels, DATA_START, early + WINDOW_MS)
    assert_same_view(paths, early)
    generation = manifest(paths)["generation"]
    store(paths, panels, early + WINDOW_MS, LAST + WINDOW_MS)
    assert_same_view(paths, LAST)
    assert manifest(paths)["generation"] == generation + 1
    assert manifest(paths)["hi"] == day_start(LAST)


def test_a_recent_day_rewritten_is_read_from_parquet_and_an_older_one_rewrites_the_base(
    tmp_path: Path, panels: Panels
) -> None:
    paths = DataPaths(tmp_path / "data")
    store(paths, panels, DATA_START, LAST + WINDOW_MS)
    roll(paths, LAST)
    generation = manifest(paths)["generation"]
    for days_back, rewrites in ((1, False), (2, True)):
        old = day_start(LAST) - days_back * DAY_MS + 40 * WINDOW_MS  # a window re-materialised with other prices
        bars = panels.bars.filter(pl.col("open_time") == old).with_columns(
            (pl.col("close") * (1 + days_back)).cast(panels.bars.schema["close"])
        )
        write_panel(paths, "bars", bars, old, old + WINDOW_MS)
        view = assert_same_view(paths, LAST)
        want = sorted(float(c) for c in bars["close"])
        assert sorted(view.bars_panel.filter(pl.col("open_time") == old)["close"].to_list()) == want
        assert manifest(paths)["generation"] == generation + rewrites
        generation = manifest(paths)["generation"]


def test_a_roll_for_an_earlier_day_leaves_a_newer_base(tmp_path: Path, panels: Panels) -> None:
    paths = DataPaths(tmp_path / "data")
    store(paths, panels, DATA_START, LAST + WINDOW_MS)
    roll(paths, LAST)
    stored = manifest(paths)
    late = roll(paths, LAST - DAY_MS)
    assert not late["rewritten"]
    assert manifest(paths) == stored
    assert_same_view(paths, LAST)


def test_a_backfill_or_rewrite_of_older_windows_shows_at_once(tmp_path: Path, panels: Panels) -> None:
    paths = DataPaths(tmp_path / "data")
    gap = day_start(LAST) - DAY_MS
    store(paths, panels, DATA_START, gap)
    store(paths, panels, gap + DAY_MS, LAST + WINDOW_MS)
    before = assert_same_view(paths, LAST)
    assert before.bars_panel.filter(pl.col("open_time").is_between(gap, gap + DAY_MS, closed="left")).height == 0
    store(paths, panels, gap, gap + DAY_MS)  # the backfill fills the missing day
    after = assert_same_view(paths, LAST)
    assert after.bars_panel.height == before.bars_panel.height + 6 * 288
    old = gap + 40 * WINDOW_MS  # one older window re-materialised with other prices
    bars = panels.bars.filter(pl.col("open_time") == old).with_columns(
        (pl.col("close") * 2).cast(panels.bars.schema["close"])
    )
    write_panel(paths, "bars", bars, old, old + WINDOW_MS)
    rewritten = assert_same_view(paths, LAST)
    changed = rewritten.bars_panel.filter(pl.col("open_time") == old)["close"]
    assert changed.to_list() == [2 * c for c in after.bars_panel.filter(pl.col("open_time") == old)["close"]]


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "manifest", "version"])
def test_a_missing_or_damaged_panel_is_rebuilt_from_parquet(tmp_path: Path, panels: Panels, damage: str) -> None:
    paths = DataPaths(tmp_path / "data")
    store(paths, panels, DATA_START, LAST + WINDOW_MS)
    assert_same_view(paths, LAST)
    stored = manifest(paths)
    base = paths.factor_view / stored["kinds"]["tran_stats"]["file"]
    if damage == "delete":
        base.unlink()
    elif damage == "garbage":
        base.write_bytes(b"not arrow at all")
    elif damage == "truncate":
        base.write_bytes(base.read_bytes()[: base.stat().st_size // 2])
    elif damage == "manifest":
        (paths.factor_view / "manifest.json").write_text("{ half a manifest")
    else:
        (paths.factor_view / "manifest.json").write_text(json.dumps({**stored, "version": -1}))
    assert_same_view(paths, LAST)
    assert sorted(p.name for p in paths.factor_view.glob("*.arrow")) == sorted(
        e["file"] for e in manifest(paths)["kinds"].values() if e["file"]
    )


def test_an_unwritable_panel_folder_costs_speed_not_the_run(
    tmp_path: Path, panels: Panels, caplog: pytest.LogCaptureFixture
) -> None:
    paths = DataPaths(tmp_path / "data")
    store(paths, panels, DATA_START, LAST + WINDOW_MS)
    paths.factor_view.write_text("a file where the panel's folder should be")
    assert_same_view(paths, LAST)
    assert "reading the parquet day files" in caplog.text


def test_an_older_window_reads_parquet_and_leaves_the_panel(tmp_path: Path, panels: Panels) -> None:
    paths = DataPaths(tmp_path / "data")
    store(paths, panels, DATA_START, LAST + WINDOW_MS)
    assert_same_view(paths, LAST)
    stored = manifest(paths)
    assert_same_view(paths, LAST - DAY_MS - 7 * WINDOW_MS)
    assert manifest(paths) == stored
    assert_same_view(paths, LAST, history_days=3)  # a longer history: the base grows by the older day
    assert manifest(paths)["lo"] == stored["lo"] - DAY_MS


def test_concurrent_runs_each_see_a_whole_panel(tmp_path: Path, panels: Panels) -> None:
    """Two runs refreshing at once (a day's end): the lock makes one write and the other read its result."""
    paths = DataPaths(tmp_path / "data")
    store(paths, panels, DATA_START, FIRST + WINDOW_MS)
    assert_same_view(paths, FIRST)
    store(paths, panels, FIRST + WINDOW_MS, LAST + WINDOW_MS)
    views: list[AlphaDataView] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            views.append(AlphaDataView.from_storage(paths, LAST, HISTORY_DAYS, universe_version=None))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(views) == 3
    reference = from_parquet(paths, LAST)
    for view in views:
        for got, want in zip(frames(view), frames(reference), strict=True):
            assert_frame_equal(got, want)


RECORDER = """
from pathlib import Path

from factors.calculator import AlphaCalculatorBase


class Recorder(AlphaCalculatorBase):
    name = "recorder"

    def run(self, view):
        folder = Path({folder!r}) / view.label
        folder.mkdir(parents=True)
        view.bars_panel.write_parquet(folder / "bars.parquet")
        view.tran_stats_panel.write_parquet(folder / "tran_stats.parquet")
        view.premium_index_panel.write_parquet(folder / "premium_index.parquet")
        view.funding_panel.write_parquet(folder / "funding.parquet")
        return {{s: 1.0 for s in view.universe}}


CALCULATOR_INSTANCE = Recorder()
"""


def test_the_factors_asset_hands_calculators_the_parquet_view(tmp_path: Path, panels: Panels) -> None:
    """Through the real `factors` step: the view a calculator gets is the parquet-derived one, window after window."""
    paths = DataPaths(tmp_path / "data")
    seen = tmp_path / "seen"
    calcs = tmp_path / "calcs"
    calcs.mkdir()
    (calcs / "recorder.py").write_text(textwrap.dedent(RECORDER.format(folder=str(seen))))
    calculators, problems = discover([calcs])
    assert not problems
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"strategy": {"history_days": HISTORY_DAYS, "universe_version": "v2"}}))
    lsq = LsqResource(config_path=str(config), data_dir=str(paths.root))
    universe = sorted(panels.symbols)[1::2]
    for day in (day_start(FIRST), day_start(LAST)):
        file = paths.universe_file(format_day(day), "v2")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("symbol\n" + "".join(f"{to_exchange(s)}\n" for s in universe))
    five_minute = partitions_for(pinned_settings()).five_minute
    factors = build_factor_assets(calculators, HISTORY_DAYS, five_minute)[0]
    stored = FIRST
    store(paths, panels, DATA_START, stored)
    with dg.instance_for_test() as instance:
        for window in (FIRST, FIRST + WINDOW_MS, LAST):
            store(paths, panels, stored, window + WINDOW_MS)
            stored = window + WINDOW_MS
            run = dg.materialize(
                [factors], instance=instance, partition_key=partition_key(window), resources={"lsq": lsq}
            )
            assert run.success
            reference = from_parquet(paths, window)
            members = [n for n in reference.universe if to_exchange(n) in universe]
            folder = seen / reference.label
            for kind, want in zip(PANELS, frames(reference), strict=True):
                got = pl.read_parquet(folder / f"{kind}.parquet")
                assert got.height
                assert_frame_equal(got, want.filter(pl.col("symbol").is_in(members)))
    assert (paths.factor_view / "manifest.json").exists()


def test_the_daily_schedule_rolls_the_base_through_a_real_job_run(tmp_path: Path, panels: Panels) -> None:
    """factor_view_schedule at 00:03 UTC asks for the new day; its job's run writes the day just ended into the base,
    and a bad day in the run config is a failure that names it."""
    paths = DataPaths(tmp_path / "data")
    store(paths, panels, DATA_START, LAST + WINDOW_MS)
    assert_same_view(paths, LAST - DAY_MS)  # the base as the previous day's windows left it
    assert manifest(paths)["hi"] == day_start(LAST) - DAY_MS
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"strategy": {"history_days": HISTORY_DAYS}}))
    lsq = LsqResource(config_path=str(config), data_dir=str(paths.root))
    day = format_day(day_start(LAST))
    with dg.instance_for_test() as instance:
        at = datetime.fromtimestamp(day_start(LAST) / 1000 + 180, UTC)
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context:
            [request] = factor_view_schedule.evaluate_tick(context).run_requests or []
        assert request.run_key == day
        result = factor_view_job.execute_in_process(
            run_config=request.run_config, instance=instance, resources={"lsq": lsq}
        )
        assert result.success
        assert result.output_for_node("roll_factor_view")["rewritten"]
        assert manifest(paths)["hi"] == day_start(LAST)
        generation = manifest(paths)["generation"]
        assert_same_view(paths, LAST)
        assert manifest(paths)["generation"] == generation
        bad = factor_view_job.execute_in_process(
            run_config={"ops": {"roll_factor_view": {"config": {"day": "2026-13-01"}}}},
            instance=instance,
            resources={"lsq": lsq},
            raise_on_error=False,
        )
        assert not bad.success
        [failure] = [e for e in bad.all_events if e.is_step_failure]
        assert "bad date '2026-13-01'" in failure.step_failure_data.error.message
