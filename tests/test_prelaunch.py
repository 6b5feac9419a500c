"""A window's run launched before the window closes: `lsq trigger` launches it PRELAUNCH_MS ahead of the end, the run
waits for the collector's seal and only then reads the trades, and gives the window up to the sensor when the seal
does not come. Time is a FakeClock that moves only while the run waits."""

from pathlib import Path

import dagster as dg
import pytest
from builders import market, universe_frame
from test_pipeline_assets import synthetic_trades
from test_pipeline_sensors import write_marker
from test_pipeline_trigger import Recorder

from lsq.clock import FakeClock
from lsq.paths import DataPaths
from lsq.stores.panels import load_panel
from lsq.stores.universes import write_universe
from lsq.timelabels import WINDOW_MS, format_day, parse_partition_key, partition_key
from lsq.tradestore import TradeStore
from lsq_pipeline.defs.market.claims import read_claim, sensor_decision, try_claim
from lsq_pipeline.defs.market.keys import BARS_5M, TRAN_STATS_5M
from lsq_pipeline.defs.market.trigger import PRELAUNCH_MS, MarkerTrigger
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.tags import AWAIT_SEAL_TAG

T0 = parse_partition_key("2026-11-21-08:00")
END = T0 + WINDOW_MS


@pytest.mark.parametrize("start", ["2026-11-21-08:00", "2026-11-21-23:55"], ids=["morning", "across-midnight"])
def test_the_trigger_launches_the_open_window_ahead_of_its_end_once_the_previous_is_sealed(
    tmp_path: Path, start: str
) -> None:
    """Across midnight the next window's claim is the first file of a day whose marker folder does not exist yet."""
    t0 = parse_partition_key(start)
    end = t0 + WINDOW_MS
    paths = DataPaths(tmp_path)
    submit = Recorder()
    write_marker(paths, t0 - WINDOW_MS)  # the window before: sealed, and its run launched by the sensor
    try_claim(paths, t0 - WINDOW_MS, "sensor", t0)
    submit.runs.add(partition_key(t0 - WINDOW_MS))
    trigger = MarkerTrigger(paths, submit, submit.has_run)
    assert trigger.step(end - PRELAUNCH_MS - 100) is None  # too early: the last closed window is already launched
    assert read_claim(paths, t0) is None
    assert trigger.step(end - PRELAUNCH_MS + 50) == partition_key(t0)  # open, not sealed
    claim = read_claim(paths, t0)
    assert claim is not None and claim.by == "trigger"
    # the next window: the collector has not sealed t0 yet, so nothing is launched to wait behind it
    nxt = end
    assert trigger.step(nxt + WINDOW_MS - PRELAUNCH_MS + 50) is None
    assert trigger.step(nxt + WINDOW_MS + 500) is None
    write_marker(paths, t0)
    assert trigger.step(nxt + WINDOW_MS + 800) == partition_key(nxt)  # its own marker is not needed either
    assert submit.keys == [partition_key(t0), partition_key(nxt)]


def test_the_first_window_the_collector_seals_is_launched_at_its_seal(tmp_path: Path) -> None:
    """The collector started during T0: the window before was never sealed (the backfill stores it), so there is no
    run of it to follow and nothing to launch ahead of T0's end; T0 is launched the moment its marker appears."""
    paths = DataPaths(tmp_path)
    submit = Recorder()
    trigger = MarkerTrigger(paths, submit, submit.has_run)
    assert trigger.step(T0 + 30_000) is None  # started early in T0: the window before has just closed, unsealed
    assert trigger.step(END - PRELAUNCH_MS + 50) is None
    assert trigger.step(END + 100) is None
    write_marker(paths, T0)
    assert trigger.step(END + 300) == partition_key(T0)
    assert submit.keys == [partition_key(T0)]


class SealingClock(FakeClock):
    """Time passes while the run waits; the collector seals the window `delay_ms` after its end."""

    def __init__(self, now_ms: int, paths: DataPaths, delay_ms: int) -> None:
        super().__init__(now_ms)
        self.paths, self.delay_ms = paths, delay_ms

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.now_ms() >= END + self.delay_ms and not self.paths.marker_file(T0).exists():
            write_marker(self.paths, T0)


def window_data(tmp_path: Path) -> DataPaths:
    paths = DataPaths(tmp_path / "data")
    TradeStore(paths).write_part("BTCUSDT", synthetic_trades("BTCUSDT", T0, 1, seed=3))
    for version in ("v1", "v2"):
        write_universe(paths, format_day(T0), version, universe_frame(["BTCUSDT"]))
    return paths


def run_window(paths: DataPaths, clock: FakeClock, tags: dict[str, str]) -> tuple[dg.ExecuteInProcessResult, str]:
    """The window's bars on a real instance; the result and the text of its failures and logs."""
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [market(clock=clock).window_stats_5m],
            selection=dg.AssetSelection.assets(BARS_5M, TRAN_STATS_5M).without_checks(),  # the checks need an exchange
            instance=instance,
            partition_key=partition_key(T0),
            resources={"lsq": LsqResource(data_dir=str(paths.root))},
            tags=tags,
            raise_on_error=False,
        )
        text = "\n".join(
            f"{e.user_message} {e.dagster_event.event_specific_data if e.dagster_event else ''}"
            for e in instance.all_logs(result.run_id)
        )
    return result, text


def stored_bars(paths: DataPaths) -> int:
    return load_panel("bars", T0, END, paths=paths).height


def test_a_launched_run_waits_for_the_seal_then_stores_the_bars(tmp_path: Path) -> None:
    paths = window_data(tmp_path)
    clock = SealingClock(END - 15_000, paths, delay_ms=300)
    assert try_claim(paths, T0, "trigger", clock.now_ms())
    result, log = run_window(paths, clock, AWAIT_SEAL_TAG)
    assert result.success, log
    assert stored_bars(paths) > 0
    assert "waiting for the collector's seal" in log
    assert "sealed, 0.3" in log  # the bars were computed from the sealed window, 0.30-0.32 s after its end


def test_a_launched_run_whose_window_is_never_sealed_gives_it_up_to_the_sensor(tmp_path: Path) -> None:
    paths = window_data(tmp_path)
    clock = FakeClock(END - 15_000)
    try_claim(paths, T0, "trigger", clock.now_ms())
    result, log = run_window(paths, clock, AWAIT_SEAL_TAG)
    assert not result.success
    assert "was not sealed within 10 minutes of its end: is the collector (`lsq collect`) running?" in log
    assert read_claim(paths, T0) is None
    assert stored_bars(paths) == 0
    # the marker comes late; a retry of the run stops at once, and the sensor takes the window over
    write_marker(paths, T0)
    retry, log = run_window(paths, clock, AWAIT_SEAL_TAG)
    assert not retry.success
    assert "is no longer this run's to process" in log
    assert stored_bars(paths) == 0
    assert sensor_decision(paths.marker_claim(T0), clock.now_ms(), lambda: True) == "request"


def test_a_run_that_does_not_wait_refuses_an_open_window(tmp_path: Path) -> None:
    paths = window_data(tmp_path)
    write_marker(paths, T0)  # even a (wrong) marker does not make an open window complete
    result, log = run_window(paths, FakeClock(END - 60_000), {})
    assert not result.success
    assert f"window {partition_key(T0)} has not closed yet" in log
    assert stored_bars(paths) == 0
    closed, log = run_window(paths, FakeClock(END + 1), {})
    assert closed.success, log
    assert stored_bars(paths) > 0
