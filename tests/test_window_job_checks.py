"""The bar checks inside the window job's bars step, on a real sqlite instance with the simulator as the exchange:
the bars are stored before they are checked, every check records its result on the window, and a window whose bars
disagree with the exchange's klines (the blocking parity check) gets no factors, alpha or target positions."""

from pathlib import Path

import dagster as dg
import polars as pl
from builders import bar_check_keys

from lsq.clock import FakeClock
from lsq.config import Settings
from lsq.paths import DataPaths
from lsq.timelabels import HOUR_MS, WINDOW_MS, now_ms, partition_key, window_start
from lsq.tradestore import TradeStore
from lsq_pipeline.backfill import run_backfill
from lsq_pipeline.definitions import build_definitions
from lsq_pipeline.defs.market.jobs import WINDOW_JOB
from lsq_pipeline.resources import LsqResource

PARITY = "bars_match_exchange_klines"


def double_quantities(paths: DataPaths, window_ms: int) -> None:
    """Every stored trade of the window at twice its quantity: ids stay contiguous, volumes no longer match."""
    in_window = pl.col("transact_time").is_between(window_ms, window_ms + WINDOW_MS, closed="left")
    doubled = pl.when(in_window).then(pl.col("quantity") * 2).otherwise(pl.col("quantity"))
    for symbol in TradeStore(paths).symbols():
        for path in paths.symbol_trades(symbol).rglob("*.parquet"):  # hour files and parts
            pl.read_parquet(path).with_columns(doubled).write_parquet(path)


def materialized(instance: dg.DagsterInstance, run_id: str) -> dict[str, set[str]]:
    """Asset -> partitions materialised by the run."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    found: dict[str, set[str]] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        assert event is not None and event.asset_key is not None
        found.setdefault(event.asset_key.to_user_string(), set()).add(str(event.partition))
    return found


def test_parity_failure_stores_the_bars_and_stops_the_window(settings: Settings, tmp_path: Path) -> None:
    local = settings.model_copy(update={"data": settings.data.model_copy(update={"data_dir": tmp_path / "data"})})
    start = window_start(now_ms(), HOUR_MS) - HOUR_MS  # well in the past: the simulator has its trades
    good, bad = start + WINDOW_MS, start + 2 * WINDOW_MS
    job = build_definitions(local, {"lsq": LsqResource.for_settings(local)}).resolve_job_def(WINDOW_JOB)
    with dg.instance_for_test() as instance:
        report = run_backfill(
            local, start, start + 3 * WINDOW_MS, instance, progress=False, clock=FakeClock(bad + HOUR_MS)
        )
        assert report.success, report.runs

        passed = job.execute_in_process(instance=instance, partition_key=partition_key(good), raise_on_error=False)
        assert passed.success, [e.message for e in passed.all_events if e.is_failure]
        assert materialized(instance, passed.run_id)["target_positions"] == {partition_key(good)}
        names = {k.name for k in bar_check_keys()}
        results = {e.check_name: e.passed for e in passed.get_asset_check_evaluations() if e.check_name in names}
        assert results == dict.fromkeys(names, True)

        double_quantities(DataPaths(tmp_path / "data"), bad)
        failed = job.execute_in_process(instance=instance, partition_key=partition_key(bad), raise_on_error=False)
        assert not failed.success
        stored = materialized(instance, failed.run_id)
        assert stored["bars_5m"] == stored["tran_stats_5m"] == stored["premium_index_5m"] == {partition_key(bad)}
        assert not {"alpha", "target_positions"} & set(stored), stored
        assert not any(key.startswith("factor_") for key in stored), stored

        evaluations = {e.check_name: e for e in failed.get_asset_check_evaluations()}
        assert evaluations[PARITY].passed is False and evaluations[PARITY].severity == dg.AssetCheckSeverity.ERROR
        assert evaluations["trades_contiguous"].passed and evaluations["bars_ohlc_sane"].passed
        # recorded on the window, as the Checks tab reads it
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("bars_5m"), PARITY), limit=10
        )
        assert {(r.partition, r.status.value) for r in history if r.run_id == failed.run_id} == {
            (partition_key(bad), "FAILED")
        }
        # the bars were recorded before any check of them ran
        order = [
            e.event_type
            for e in failed.all_events
            if e.step_key == "market_5m"
            and e.event_type in (dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        # (the premium index, fetched meanwhile, comes last)
        materialisation, evaluation = (
            dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        )
        assert order[:2] == [materialisation] * 2 and order[-1] == materialisation
        assert set(order[2:-1]) == {evaluation}
