"""The pipeline on a Dagster instance stored in a real PostgreSQL server (dagster-postgres): window runs, range
(backfill) runs, checks and the marker sensor record the same outcomes as on sqlite."""

import os
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy
from builders import bar_check_keys, market, pinned_settings, universe_frame, window_stats_without_checks
from postgres_server import PostgresServer, postgres_server
from test_pipeline_assets import UNIVERSE, synthetic_trades
from test_pipeline_sensors import write_marker

from lsq.clock import FakeClock
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.stores.panels import load_panel
from lsq.stores.universes import write_universe
from lsq.timelabels import HOUR_MS, WINDOW_MS, now_ms, parse_partition_key, partition_key, window_start
from lsq.tradestore import TradeStore
from lsq_pipeline.backfill import run_backfill
from lsq_pipeline.definitions import build_definitions
from lsq_pipeline.postgres_storage import PooledPostgresStorage
from lsq_pipeline.resources import LsqResource
from lsq_pipeline.tags import RANGE_END_TAG, RANGE_START_TAG

T0 = parse_partition_key("2026-11-20-10:00")
MARKET = market()
LOCAL_CHECKS = [k for k in bar_check_keys() if k.name != "bars_match_exchange_klines"]
DATABASES = count()
pytestmark = pytest.mark.slow  # starts a PostgreSQL server: `make test-fast` leaves it out


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_instance(pg_server: PostgresServer) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on its own new database, so no test sees another's runs."""
    db = pg_server.create_database(f"dagster_{next(DATABASES)}")
    with dg.instance_for_test(overrides={"storage": pg_server.storage_config(db)}) as instance:
        yield instance


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    paths = DataPaths(tmp_path / "data")
    store = TradeStore(paths)
    for i, symbol in enumerate(UNIVERSE[:2]):
        store.write_part(symbol, synthetic_trades(symbol, T0, 12, seed=i))
    write_universe(paths, "2026-11-20", "v2", universe_frame(UNIVERSE))
    return paths


def materialize(paths: DataPaths, instance: dg.DagsterInstance, **kwargs: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [MARKET.window_stats_5m],
        instance=instance,
        selection=window_stats_without_checks() | dg.AssetSelection.checks(*LOCAL_CHECKS),
        resources={"lsq": LsqResource(data_dir=str(paths.root))},
        **kwargs,
    )


def test_the_instance_is_stored_in_postgres(pg_instance: dg.DagsterInstance) -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(pg_instance.get_ref().storage, PooledPostgresStorage)
    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)


def materializations(instance: dg.DagsterInstance, key: str) -> int:
    return len(instance.fetch_materializations(dg.AssetKey(key), limit=1000).records)


def connections_opened(instance: dg.DagsterInstance) -> list[int]:
    """A list that grows by one (the opening pid) whenever the event log storage opens a server connection."""
    opened: list[int] = []
    engine = instance.event_log_storage._engine  # type: ignore[attr-defined]
    sqlalchemy.event.listen(engine, "connect", lambda *_: opened.append(os.getpid()))
    return opened


def tagged(key: str) -> dg.AssetMaterialization:
    """A materialisation with an indexed tag, as every one a run records has (its data version)."""
    return dg.AssetMaterialization(key, tags={"dagster/data_version": "1"})


def test_events_share_a_kept_connection_and_a_forked_child_opens_its_own(pg_instance: dg.DagsterInstance) -> None:
    """Dagster-postgres outside the webserver connects for every write; the pooled storage keeps a connection per
    storage. A forked child (the warm worker's runs) must not talk on its parent's: it opens its own, and both write
    their events whole."""
    pg_instance.report_runless_asset_event(tagged("parent"))
    opened = connections_opened(pg_instance)
    pid = os.fork()
    if pid == 0:  # the child: 30 events on its own connection, then out without running the parent's cleanup
        code = 1
        try:
            for _ in range(30):
                pg_instance.report_runless_asset_event(tagged("child"))
            code = 0 if opened and set(opened) == {os.getpid()} else 2  # its own connection, none inherited
        finally:
            os._exit(code)
    for _ in range(30):
        pg_instance.report_runless_asset_event(tagged("parent"))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (materializations(pg_instance, "parent"), materializations(pg_instance, "child")) == (31, 30)
    assert opened == []  # the parent's 30 writes used the connection it kept (dagster-postgres alone: 60 new ones)


def test_a_connection_the_server_dropped_costs_a_reconnect_not_a_write(pg_instance: dg.DagsterInstance) -> None:
    """A server restart, failover or idle kill ends the kept connections; the next write reconnects."""
    pg_instance.report_runless_asset_event(tagged("series"))
    assert pg_instance.get_runs() == []  # the run storage's kept connection is open too
    url = pg_instance.event_log_storage.postgres_url  # type: ignore[attr-defined]
    killer = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with killer.connect() as conn:
        killed = conn.execute(
            sqlalchemy.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    killer.dispose()
    assert killed and killed > 0
    pg_instance.report_runless_asset_event(tagged("series"))
    assert materializations(pg_instance, "series") == 2
    assert pg_instance.get_runs() == []  # the run storage's connection reconnects too


def test_window_run_records_bars_and_checks(paths: DataPaths, pg_instance: dg.DagsterInstance) -> None:
    result = materialize(paths, pg_instance, partition_key=partition_key(T0))
    assert result.success
    assert load_panel("bars", T0, T0 + WINDOW_MS, paths=paths)["symbol"].to_list() == ["BTCUSDT", "ETHUSDT"]
    # What the UI and the sensors read back from PostgreSQL: the partition and a passing result for every check.
    for key in ("bars_5m", "tran_stats_5m"):
        assert pg_instance.get_materialized_partitions(dg.AssetKey(key)) == {partition_key(T0)}
    for check_key in LOCAL_CHECKS:
        (record,) = pg_instance.event_log_storage.get_asset_check_execution_history(check_key, limit=10)
        assert record.run_id == result.run_id
        assert record.event.dagster_event.event_specific_data.passed, check_key.name
    (run,) = pg_instance.get_runs()
    assert run.is_success


def test_backfill_then_window_job_on_simulator_data(
    settings: Settings, tmp_path: Path, pg_instance: dg.DagsterInstance
) -> None:
    """`lsq backfill` of three windows of the simulator's trades, then the code location's own `window_job` (bars,
    statistics, premium index, factors, alpha, target positions and every check, the klines one included) for the
    last of them, all recorded in PostgreSQL."""
    local = settings.model_copy(update={"data": settings.data.model_copy(update={"data_dir": tmp_path / "data"})})
    start = window_start(now_ms(), HOUR_MS) - HOUR_MS  # well in the past: the simulator has its trades
    end = start + 3 * WINDOW_MS
    report = run_backfill(local, start, end, pg_instance, progress=False, clock=FakeClock(end + HOUR_MS))
    assert report.success and report.windows == 3 and report.trades_written > 0, report.runs
    windows = {partition_key(start + i * WINDOW_MS) for i in range(3)}
    assert pg_instance.get_materialized_partitions(dg.AssetKey("bars_5m")) == windows

    last = partition_key(end - WINDOW_MS)
    job = build_definitions(local, {"lsq": LsqResource.for_settings(local)}).resolve_job_def("window_job")
    result = job.execute_in_process(instance=pg_instance, partition_key=last, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    for key in ("alpha", "target_positions"):
        assert pg_instance.get_materialized_partitions(dg.AssetKey(key)) == {last}, key
    stored = pg_instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in stored.records]
    passed = {e.check_name: e.passed for e in evaluations}
    bar_checks = {k.name for k in bar_check_keys()}
    assert bar_checks <= set(passed) and all(passed[name] for name in bar_checks), passed


def test_range_run_records_every_window_of_the_backfill(paths: DataPaths, pg_instance: dg.DagsterInstance) -> None:
    last = T0 + 11 * WINDOW_MS
    tags = {RANGE_START_TAG: partition_key(T0), RANGE_END_TAG: partition_key(last)}
    result = materialize(paths, pg_instance, tags=tags)
    assert result.success
    assert load_panel("bars", T0, T0 + HOUR_MS, paths=paths).height == 2 * 12
    expected = {partition_key(T0 + i * WINDOW_MS) for i in range(12)}
    assert pg_instance.get_materialized_partitions(dg.AssetKey("bars_5m")) == expected
    assert pg_instance.get_materialized_partitions(dg.AssetKey("tran_stats_5m")) == expected
    assert len(pg_instance.get_runs()) == 1  # single-run backfill policy: one run for the range
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations and all(evaluations.values()), evaluations


def test_marker_sensor_requests_the_window_run(tmp_path: Path, pg_instance: dg.DagsterInstance) -> None:
    paths = DataPaths(tmp_path / "data")
    clock = FakeClock(T0 + HOUR_MS + 30_000)
    defs = build_definitions(pinned_settings(), {"lsq": LsqResource(data_dir=str(paths.root))}, clock)
    sensor = defs.get_sensor_def("sealed_window_sensor")
    write_marker(paths, T0)
    context = dg.build_sensor_context(
        instance=pg_instance, cursor=partition_key(T0 - WINDOW_MS), definitions=defs, resources=defs.resources
    )
    result = sensor.evaluate_tick(context)
    assert [(r.run_key, r.partition_key) for r in result.run_requests] == [(partition_key(T0),) * 2]
    assert result.cursor == partition_key(T0)
