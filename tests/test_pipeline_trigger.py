"""The live fast lane: `lsq trigger` launches fresh windows through the webserver, and it and the sensor never launch
the same window twice, whatever the order in which they see its marker."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from builders import market, pinned_settings, universe_frame, window_stats_without_checks
from dagster._core.test_utils import create_run_for_test
from test_execution_lane import land
from test_execution_lane import tick as tick_execution
from test_pipeline_assets import synthetic_trades
from test_pipeline_sensors import tick, write_marker

from lsq.clock import FakeClock
from lsq.paths import DataPaths
from lsq.run import wait_for_http
from lsq.stores.universes import write_universe
from lsq.timelabels import HOUR_MS, WINDOW_MS, format_day, now_ms, parse_partition_key, partition_key, window_start
from lsq.tradestore import TradeStore
from lsq_pipeline.cli import dagster_env
from lsq_pipeline.definitions import build_definitions
from lsq_pipeline.defs.execution.lane import ExecutionLane, graphql_execution_submit
from lsq_pipeline.defs.market.claims import TRIGGER_GRACE_MS, read_claim, try_claim, window_done
from lsq_pipeline.defs.market.trigger import MarkerTrigger, graphql_submit
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.submit import graphql_submitter
from lsq_pipeline.tags import RANGE_END_TAG, RANGE_START_TAG

T1 = parse_partition_key("2026-11-21-08:00")
NOW = T1 + HOUR_MS  # the sensor's clock


@pytest.fixture
def env(tmp_path: Path) -> tuple[DataPaths, dg.Definitions, dg.DagsterInstance]:
    paths = DataPaths(tmp_path / "data")
    defs = build_definitions(pinned_settings(), {"lsq": LsqResource(data_dir=str(paths.root))}, FakeClock(NOW))
    with dg.instance_for_test() as instance:
        yield paths, defs, instance


def record_run(instance: dg.DagsterInstance, window: int) -> None:
    tags = {"dagster/partition": partition_key(window), "lsq/window": "serial", "lsq/trigger": "marker"}
    create_run_for_test(instance, job_name="window_job", tags=tags)


def test_a_claim_is_taken_once(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    assert try_claim(paths, T1, "trigger", 5) is True
    assert try_claim(paths, T1, "sensor", 6) is False
    claim = read_claim(paths, T1)
    assert claim is not None and (claim.by, claim.at_ms) == ("trigger", 5)
    assert [p.name for p in paths.marker_claim(T1).parent.iterdir()] == ["0800.claim"]  # no temporary left over


def test_sensor_leaves_a_launched_trigger_window_alone(env) -> None:
    paths, defs, instance = env
    write_marker(paths, T1)
    write_marker(paths, T1 + WINDOW_MS)
    try_claim(paths, T1 + WINDOW_MS, "trigger", NOW)
    record_run(instance, T1 + WINDOW_MS)
    result = tick(defs, instance, cursor=partition_key(T1 - WINDOW_MS))
    assert [r.run_key for r in result.run_requests] == [partition_key(T1)]
    assert result.cursor == partition_key(T1 + WINDOW_MS)
    assert len(result.asset_events) == 2  # agg_trades is still reported for both windows
    claim = read_claim(paths, T1)
    assert claim is not None and claim.by == "sensor"


def test_sensor_waits_for_a_trigger_claim_without_a_run_then_takes_it_over(env) -> None:
    paths, defs, instance = env
    write_marker(paths, T1)
    write_marker(paths, T1 + WINDOW_MS)
    claim_path = paths.marker_claim(T1 + WINDOW_MS)
    try_claim(paths, T1 + WINDOW_MS, "trigger", NOW)
    waiting = tick(defs, instance, cursor=partition_key(T1 - WINDOW_MS))
    assert [r.run_key for r in waiting.run_requests] == [partition_key(T1)]
    assert waiting.cursor == partition_key(T1)  # not past the window the trigger may still be launching

    claim_path.unlink()
    try_claim(paths, T1 + WINDOW_MS, "trigger", NOW - TRIGGER_GRACE_MS - 1)
    taken = tick(defs, instance, cursor=waiting.cursor)
    assert [r.run_key for r in taken.run_requests] == [partition_key(T1 + WINDOW_MS)]
    assert taken.cursor == partition_key(T1 + WINDOW_MS)


def test_a_window_claimed_by_the_sensor_is_requested_again_by_run_key_after_a_failed_tick(env) -> None:
    paths, defs, instance = env
    write_marker(paths, T1)
    first = tick(defs, instance, cursor=partition_key(T1 - WINDOW_MS))
    again = tick(defs, instance, cursor=partition_key(T1 - WINDOW_MS))  # the cursor was not stored
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests] == [partition_key(T1)]


class Recorder:
    """The launching side of the trigger: records what it submitted; the runs it knows of are the instance's."""

    def __init__(self, fail: bool = False) -> None:
        self.keys: list[str] = []
        self.runs: set[str] = set()
        self.fail = fail

    def __call__(self, key: str) -> str:
        if self.fail:
            raise ConnectionError("webserver refused")
        self.keys.append(key)
        self.runs.add(key)
        return f"run-{len(self.keys)}"

    def has_run(self, key: str) -> bool:
        return key in self.runs


def test_trigger_launches_each_fresh_window_once_its_previous_window_has_a_run(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    submit = Recorder()
    trigger = MarkerTrigger(paths, submit, submit.has_run)
    w0 = T1
    now = w0 + WINDOW_MS + 300
    write_marker(paths, w0 - WINDOW_MS)  # sealed by the collector, so the sensor's to launch
    assert trigger.step(now) is None  # no marker yet
    write_marker(paths, w0)
    assert trigger.step(now) is None  # the window before has no run: the sensor starts the chain
    assert read_claim(paths, w0) is None

    try_claim(paths, w0, "sensor", now)  # the sensor claimed it, but its run is not submitted yet
    w1 = w0 + WINDOW_MS
    write_marker(paths, w1)
    assert trigger.step(w1 + WINDOW_MS + 250) is None  # would overtake the sensor's run of w0
    submit.runs.add(partition_key(w0))  # ... which the daemon has now submitted
    assert trigger.step(w1 + WINDOW_MS + 300) == partition_key(w1)
    claim = read_claim(paths, w1)
    assert claim is not None and claim.by == "trigger"
    write_marker(paths, w1 + WINDOW_MS)
    assert trigger.step(w1 + 2 * WINDOW_MS + 250) == partition_key(w1 + WINDOW_MS)
    assert submit.keys == [partition_key(w1), partition_key(w1 + WINDOW_MS)]
    assert trigger.step(w1 + 2 * WINDOW_MS + 900) is None  # seen once, launched once


def test_trigger_leaves_claimed_and_stale_windows_and_stops_behind_a_failed_launch(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path)
    w0 = T1
    failing = Recorder(fail=True)
    failing.runs.add(partition_key(w0))
    write_marker(paths, w0 + WINDOW_MS)
    trigger = MarkerTrigger(paths, failing, failing.has_run)
    with pytest.raises(ConnectionError):
        trigger.step(w0 + 2 * WINDOW_MS + 200)
    claim = read_claim(paths, w0 + WINDOW_MS)
    assert claim is not None and claim.by == "trigger"  # the sensor takes it over after the grace period
    write_marker(paths, w0 + 2 * WINDOW_MS)
    assert trigger.step(w0 + 3 * WINDOW_MS + 200) is None  # the failed window has no run: do not overtake it
    assert read_claim(paths, w0 + 2 * WINDOW_MS) is None

    sensor_first = Recorder()
    sensor_first.runs.add(partition_key(w0 + 2 * WINDOW_MS))
    write_marker(paths, w0 + 3 * WINDOW_MS)
    try_claim(paths, w0 + 3 * WINDOW_MS, "sensor", w0)
    assert MarkerTrigger(paths, sensor_first, sensor_first.has_run).step(w0 + 4 * WINDOW_MS + 200) is None

    late = MarkerTrigger(paths, sensor_first, sensor_first.has_run)
    sensor_first.runs.add(partition_key(w0 + 3 * WINDOW_MS))
    # w0 + 4 windows closed but not sealed: launched (its run waits for the seal) behind the sealed window before it
    assert late.step(w0 + 5 * WINDOW_MS + 100) == partition_key(w0 + 4 * WINDOW_MS)
    assert late.step(w0 + 6 * WINDOW_MS + 100) is None  # nothing launched behind a window not yet sealed ...
    write_marker(paths, w0 + 4 * WINDOW_MS)  # ... until its seal, which comes when the next one's signal is stale
    write_marker(paths, w0 + 5 * WINDOW_MS)
    assert late.step(w0 + 8 * WINDOW_MS + 500) is None
    assert read_claim(paths, w0 + 5 * WINDOW_MS) is None  # left to the sensor: bars only, no orders
    assert sensor_first.keys == [partition_key(w0 + 4 * WINDOW_MS)]


def test_the_first_window_after_a_backfill_takes_the_fast_lane(tmp_path: Path) -> None:
    """The last backfilled window has no window run of its own, only stored bars: the trigger launches the next one
    at once instead of leaving it to the sensor's slow path."""
    paths = DataPaths(tmp_path / "data")
    first, last = T1 - 2 * WINDOW_MS, T1 - WINDOW_MS  # the backfill's range
    TradeStore(paths).write_part("BTCUSDT", synthetic_trades("BTCUSDT", first, 2, seed=1))
    write_universe(paths, format_day(T1), "v1", universe_frame(["BTCUSDT"]))
    write_universe(paths, format_day(T1), "v2", universe_frame(["BTCUSDT"]))
    submit = Recorder()
    with dg.instance_for_test() as instance:
        trigger = MarkerTrigger(paths, submit, lambda key: window_done(instance, key))
        write_marker(paths, last)  # the collector sealed it too, while the backfill was filling the hours before
        write_marker(paths, T1)
        assert trigger.step(T1 + WINDOW_MS + 200) is None  # nothing stored before T1 yet: the sensor's
        backfill = dg.materialize(
            [market().window_stats_5m],
            instance=instance,
            resources={"lsq": LsqResource(data_dir=str(paths.root))},
            tags={RANGE_START_TAG: partition_key(first), RANGE_END_TAG: partition_key(last), "lsq/backfill": "true"},
            selection=window_stats_without_checks(),  # no exchange here
        )
        assert backfill.success
        assert trigger.step(T1 + WINDOW_MS + 300) == partition_key(T1)
    assert submit.keys == [partition_key(T1)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Webserver:
    url: str
    home: Path
    data: DataPaths


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """`dagster-webserver` serving the project's workspace on its own instance (no daemon: runs stay queued)."""
    tmp = tmp_path_factory.mktemp("webserver")
    home = tmp / "dagster_home"
    env = {**os.environ, **dagster_env(home), "LSQ_DATA_DIR": str(tmp / "data")}
    port = _free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not wait_for_http(f"{url}/server_info", 1, lambda: proc.poll() is None):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("dagster-webserver did not answer")
        yield Webserver(url, home, DataPaths(tmp / "data"))
    finally:
        proc.terminate()
        proc.wait(30)


def submit_when_loaded(submit: Callable[[], str]) -> str:
    """The webserver answers before its code location is loaded: retry the first submission until it is."""
    deadline = time.monotonic() + 90
    while True:
        try:
            return submit()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_graphql_submit_queues_the_window_job_on_a_real_webserver(webserver: Webserver) -> None:
    """The trigger's launch path against `dagster-webserver` serving the project's workspace."""
    key = partition_key(window_start(now_ms()) - WINDOW_MS)
    run_id = submit_when_loaded(lambda: graphql_submit(webserver.url)(key))
    with dg.DagsterInstance.from_config(str(webserver.home)) as instance:
        run = instance.get_run_by_id(run_id)
    assert run is not None and run.job_name == "window_job"
    assert run.status == dg.DagsterRunStatus.QUEUED  # no daemon here to dequeue it
    assert run.tags["dagster/partition"] == key
    assert run.tags["lsq/window"] == "serial" and run.tags["lsq/trigger"] == "marker"
    # the runs list's "Launched by" column reads the `user` tag: not "Manually launched"
    assert run.tags["user"] == "lsq trigger"
    assert run.asset_selection is None or dg.AssetKey("target_positions") in run.asset_selection


@pytest.mark.slow
def test_the_execution_lane_submits_one_run_per_account_and_window_that_the_sensor_then_skips(
    webserver: Webserver,
) -> None:
    """Target files of a fresh window for both accounts: one queued `execution_job` run each, with the sensor's
    partition, tags and run key, however often the lane polls; the sensor, seeing the window's materialisation,
    requests nothing more."""
    accounts = ["sim_alpha", "sim_beta"]
    paths = webserver.data
    window = window_start(now_ms()) - WINDOW_MS
    key = partition_key(window)
    submit = graphql_execution_submit(graphql_submitter(webserver.url))
    lane = ExecutionLane(paths, accounts, submit, 600_000)
    with dg.DagsterInstance.from_config(str(webserver.home)) as instance:
        instance.add_dynamic_partitions("accounts", accounts)  # the sensor's first tick does this in `lsq run`
        land(paths, "sim_alpha", window)
        launched = submit_when_loaded(lambda: lane.step(now_ms()) or lane.step(now_ms()))
        land(paths, "sim_beta", window)
        launched += lane.step(now_ms()) + lane.step(now_ms())
        assert launched == [("sim_alpha", key), ("sim_beta", key)]
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="execution_job"))
        assert sorted((r.tags["dagster/partition"], r.tags["lsq/target_window"]) for r in runs) == [
            (a, key) for a in accounts
        ]
        for run in runs:
            account = run.tags["dagster/partition"]
            assert run.status == dg.DagsterRunStatus.QUEUED
            assert run.tags["lsq/account"] == account and run.tags["user"] == "lsq trigger"
            assert run.tags["dagster/run_key"] == f"{account}:{key}"
            assert run.tags["dagster/sensor_name"] == "execution_sensor"
            assert run.tags["dagster/max_retries"] == "0"  # the job's own tags are kept
        instance.report_runless_asset_event(dg.AssetMaterialization("target_positions", partition=key))
        lsq = LsqResource(data_dir=str(paths.root))
        result = tick_execution(instance, lsq, window + WINDOW_MS + 30_000, "0")
        assert result.run_requests == []
