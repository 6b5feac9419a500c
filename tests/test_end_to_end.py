"""simulator -> collector -> sealed markers -> sensor -> window runs -> stored bars -> strategy API, compared with
the simulator's own 5-minute klines for every symbol and window."""

import asyncio
import json
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from builders import universe_def

from collectors import history
from collectors.daemon import Collector, CollectorOptions
from lsq.exchange import rest_client
from lsq.paths import DataPaths
from lsq.stores.universes import universe_symbols
from lsq.strategy_api import StrategyDataAPI
from lsq.symbols import to_strategy
from lsq.timelabels import MINUTE_MS, WINDOW_MS, format_day, label_of, now_ms, partition_key, window_start
from lsq_pipeline.definitions import build_definitions
from lsq_pipeline.resources import LsqResource
from simulator.ratelimit import RateLimits

SEAL_LAG_S = 1.0
TIMEOUT_S = 90.0  # generous: a loaded CI machine may take long; the loop ends as soon as both windows are in


def start_collector(settings: Any) -> tuple[threading.Thread, Callable[[], None]]:
    """The real collector on its own event loop in a thread; returns (thread, stop)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        await Collector(settings, CollectorOptions()).run(stop)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    return thread, lambda: loop.call_soon_threadsafe(stop.set)


def bars_materialized(instance: dg.DagsterInstance, key: str) -> bool:
    filt = dg.AssetRecordsFilter(asset_key=dg.AssetKey("bars_5m"), asset_partitions=[key])
    return bool(instance.fetch_materializations(filt, limit=1).records)


@pytest.mark.slow
def test_collector_markers_drive_the_pipeline_to_exact_bars(
    make_sim_server: Callable[..., Any], tmp_path: Path
) -> None:
    sim = make_sim_server(symbols=6, limits=RateLimits().scaled(20))
    # Server time 4 s before a window boundary that is already past locally, so the sealed windows exist as
    # Dagster partitions (which follow the local clock) and the test waits seconds, not minutes.
    boundary = window_start(now_ms())
    sim.clock.skew_ms = (boundary - 4_000) - now_ms()
    current = boundary - WINDOW_MS
    data_dir = tmp_path / "data"
    paths = DataPaths(data_dir)
    # An earlier run sealed `current - 2 windows`: the collector catches up the next one from REST, then goes live.
    fake = current - 2 * WINDOW_MS
    paths.marker_file(fake).parent.mkdir(parents=True, exist_ok=True)
    paths.marker_file(fake).write_text(json.dumps({"window_start": fake, "window_end": fake + WINDOW_MS}))
    data = sim.settings.data.model_copy(update={"data_dir": data_dir, "seal_lag_seconds": SEAL_LAG_S})
    settings = sim.settings.model_copy(update={"data": data})

    lsq = LsqResource.for_settings(settings)
    defs = build_definitions(settings, {"lsq": lsq})
    sensor = defs.get_sensor_def("sealed_window_sensor")
    job = defs.get_job_def("window_job")
    windows = [current - WINDOW_MS, current]
    with dg.instance_for_test() as instance:
        for day in sorted({format_day(w) for w in windows}):
            dg.materialize([universe_def(settings)], instance=instance, partition_key=day, resources={"lsq": lsq})
        # As `lsq run` does on a start: recent history first (here the half hour before), then the live collector.
        symbols = sorted(set(universe_symbols(paths, windows[0])))
        asyncio.run(history.backfill(settings, symbols, windows[0] - 30 * MINUTE_MS, windows[0]))
        thread, stop = start_collector(settings)
        cursor, launched, latencies = partition_key(fake), [], {}
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while len(latencies) < len(windows) and time.monotonic() < deadline:
                context = dg.build_sensor_context(
                    instance=instance, cursor=cursor, definitions=defs, resources={"lsq": lsq}
                )
                result = sensor.evaluate_tick(context)
                cursor = result.cursor or cursor
                for request in result.run_requests:
                    assert request.run_key not in launched, "a window was requested twice"
                    launched.append(request.run_key)
                    run = job.execute_in_process(
                        instance=instance,
                        partition_key=request.partition_key,
                        tags=request.tags,
                        asset_selection=request.asset_selection,
                        raise_on_error=False,
                    )
                    assert run.success, [e.message for e in run.all_events if e.is_failure]
                    for w in windows:
                        if w not in latencies and bars_materialized(instance, partition_key(w)):
                            latencies[w] = time.time() - paths.marker_file(w).stat().st_mtime
                time.sleep(0.5)
        finally:
            stop()
            thread.join(30)
        assert sorted(latencies) == windows, f"sealed windows processed: {sorted(latencies)}; launched {launched}"

        # The blocking parity check ran in every window run and passed.
        parity = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("bars_5m"), "bars_match_exchange_klines"), limit=10
        )
        assert len(parity) == len(launched) and all(c.status.value == "SUCCEEDED" for c in parity)

    bars = StrategyDataAPI(paths).get_bar_between(label_of(windows[0]), label_of(windows[-1]))
    client = rest_client(settings)
    sealed = set(json.loads(paths.marker_file(current).read_text())["symbols"])
    assert sealed == set(symbols)
    compared = 0
    for symbol in symbols:
        ours = bars[to_strategy(symbol)]
        klines = client.futures_klines(
            symbol=symbol, interval="5m", startTime=windows[0], endTime=windows[-1] + WINDOW_MS - 1
        )
        assert ours["open_time"].to_list() == [k[0] for k in klines] == windows, (symbol, launched, klines, ours)
        for row, k in zip(ours.iter_rows(named=True), klines, strict=True):
            assert [row["open"], row["high"], row["low"], row["close"]] == [Decimal(x) for x in k[1:5]], symbol
            assert row["volume"] == Decimal(k[5]) and row["quote_volume"] == Decimal(k[7]), symbol
            assert row["tradecount"] == k[8] and row["buyvolume"] == Decimal(k[9]), symbol
            compared += 1
    assert compared == len(symbols) * len(windows)
    print(f"marker -> bars stored: {', '.join(f'{v:.2f} s' for v in latencies.values())}")

    # The newest window's run went on to target positions for every account, signed with the server's clock.
    for account in settings.usable_accounts()[0]:
        files = sorted(paths.positions.glob(f"{account.account_id}_target_positions_*.json"))
        written = [json.loads(f.read_text()) for f in files]
        assert partition_key(current) in {w["partition"] for w in written}, (account.account_id, files)
