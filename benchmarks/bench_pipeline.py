"""Pipeline figures: storage layout, strategy-API reads, marker -> stored bars latency, backfill duration.

    .venv/bin/python benchmarks/bench_pipeline.py [--symbols 122] [--days 30] [--backfill-hours 6]

1. Storage layout: 30 days x N symbols of 5-minute bars written as one file per 5-minute partition (8,640 files)
   vs one file per UTC day (30 files, what lsq.stores.panels does); time to load the whole panel back.
2. Strategy API on the day files: get_bar_between over 30 days in 5min and 1h mode, get_tran_stats_between (5min).
3. Marker -> bars stored: a real simulator, the real collector, and the sealed-window sensor + window job on a
   persistent sqlite instance (in this process, ticking every second as the daemon's minimum interval allows).
4. Backfill: `run_backfill` of the last few hours from the simulator (trades by REST/bulk files, bars, rollups,
   funding), scaled down from 30 days to keep the run short; per-stage seconds are printed so it can be scaled up.
"""

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from benchmarks.timing import wall_runs
from lsq.aggregation.bars import BAR_SCHEMA, TRADED
from lsq.aggregation.tran_stats import TRAN_STATS_SCHEMA
from lsq.paths import DataPaths
from lsq.stores.panels import kind_dir, load_panel, write_panel
from lsq.strategy_api import StrategyDataAPI
from lsq.timelabels import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    WINDOW_MS,
    day_start,
    format_day,
    label_of,
    now_ms,
    partition_key,
    window_start,
)
from lsq_pipeline.cli import instance_yaml


def synthetic_panel(schema: dict[str, pl.DataType], symbols: int, start: int, end: int) -> pl.DataFrame:
    """A panel with the real column types and plausible values (contents do not matter for I/O timing)."""
    rng = np.random.default_rng(0)
    times = np.arange(start, end, WINDOW_MS, dtype=np.int64)
    names = [f"S{i:03d}USDT" for i in range(symbols)]
    n = len(times) * symbols
    cols: dict[str, object] = {
        "symbol": np.repeat(names, len(times)),
        "open_time": np.tile(times, symbols),
    }
    base = pl.DataFrame(cols)
    exprs: list[pl.Expr | pl.Series] = []
    for name, dtype in schema.items():
        if name in cols:
            continue
        if name == "close_time":
            exprs.append((pl.col("open_time") + WINDOW_MS - 1).alias(name))
        elif name == "time_label":
            exprs.append(((pl.col("open_time") % DAY_MS) // WINDOW_MS + 1).cast(pl.Int32).alias(name))
        elif name == "span_status":
            exprs.append(pl.lit(TRADED).alias(name))
        else:
            exprs.append(pl.Series(name, rng.random(n) * 1000).cast(dtype))
    return base.with_columns(exprs).select([pl.col(c).cast(t) for c, t in schema.items()])


def bench_storage(symbols: int, days: int) -> None:
    end = day_start(now_ms())
    start = end - days * DAY_MS
    bars = synthetic_panel(BAR_SCHEMA, symbols, start, end)
    stats = synthetic_panel(TRAN_STATS_SCHEMA, symbols, start, end)
    root = Path(tempfile.mkdtemp(prefix="lsq-bench-"))
    try:
        paths = DataPaths(root / "data")
        t = time.perf_counter()
        write_panel(paths, "bars", bars, start, end)
        write_panel(paths, "tran_stats", stats, start, end)
        print(f"day files: wrote {bars.height:,} bar rows + stats in {time.perf_counter() - t:.2f} s")

        per_partition = root / "per_partition"
        per_partition.mkdir()
        t = time.perf_counter()
        for (open_time,), part in bars.partition_by("open_time", as_dict=True).items():
            part.write_parquet(per_partition / f"{partition_key(open_time)}.parquet")
        print(f"per-partition files: wrote {days * 288:,} files in {time.perf_counter() - t:.2f} s")

        def load_partitions() -> pl.DataFrame:
            files = sorted(per_partition.glob("*.parquet"))
            return pl.scan_parquet(files).sort("symbol", "open_time").collect()

        def load_days() -> pl.DataFrame:
            return load_panel("bars", start, end, paths=paths)

        for name, fn in (("per-partition (8,640 files)", load_partitions), ("per-day (30 files)", load_days)):
            runs, frame = wall_runs(fn, 3)
            median = statistics.median(runs)
            print(f"load {days} days x {symbols} symbols, {name}: median {median:.3f} s ({frame.height:,} rows)")

        # One window appended to a full day file (the live path): the cost of rewriting the day.
        last = end - WINDOW_MS
        window = bars.filter(pl.col("open_time") == last)
        t = time.perf_counter()
        write_panel(paths, "bars", window, last, end)
        print(f"live write of one window into its day file: {time.perf_counter() - t:.3f} s")

        api = StrategyDataAPI(paths)
        b, e = label_of(start), label_of(end - WINDOW_MS)
        for what, call in (
            ("get_bar_between 5min", lambda: api.get_bar_between(b, e)),
            ("get_bar_between 1h", lambda: api.get_bar_between(b, e, mode="1h")),
            ("get_tran_stats_between 5min", lambda: api.get_tran_stats_between(b, e)),
        ):
            runs, out = wall_runs(call, 3)
            print(f"API {what}, {days} days x {len(out)} symbols: median {statistics.median(runs):.3f} s")
        print(f"day-file bytes on disk: {sum(p.stat().st_size for p in kind_dir(paths, 'bars').glob('*.parquet')):,}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bars_stored_at(instance: dg.DagsterInstance, key: str) -> float | None:
    """Wall-clock time of the bars_5m materialisation of partition `key`, from the instance's event log."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("bars_5m"), asset_partitions=[key]), limit=1
    ).records
    return records[0].timestamp if records else None


def bench_latency(windows: int) -> None:
    from conftest import start_sim_server

    from collectors.daemon import Collector, CollectorOptions
    from lsq_pipeline.definitions import build_definitions
    from lsq_pipeline.defs.universe.assets import universe_asset
    from lsq_pipeline.partitions import partitions_for
    from lsq_pipeline.resources import LsqResource
    from simulator.ratelimit import RateLimits

    root = Path(tempfile.mkdtemp(prefix="lsq-bench-lat-"))
    sim = start_sim_server(root / "sim", symbols=40, limits=RateLimits().scaled(20))
    try:
        boundary = window_start(now_ms())
        first = boundary - windows * WINDOW_MS
        data = sim.settings.data.model_copy(update={"data_dir": root / "data", "seal_lag_seconds": 1.0})
        settings = sim.settings.model_copy(update={"data": data})
        paths = DataPaths(root / "data")
        fake = first - WINDOW_MS
        paths.marker_file(fake).parent.mkdir(parents=True, exist_ok=True)
        paths.marker_file(fake).write_text(json.dumps({"window_start": fake, "window_end": first}))
        lsq = LsqResource.for_settings(settings)
        defs = build_definitions(settings, {"lsq": lsq})
        universe = universe_asset(partitions_for(settings).universe_days)
        sensor, job = defs.get_sensor_def("sealed_window_sensor"), defs.get_job_def("window_job")
        keys = [k for k in job.asset_layer.executable_asset_keys if k != dg.AssetKey("target_positions")]
        home = root / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(instance_yaml(home))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            dg.materialize([universe], instance=instance, partition_key=format_day(first), resources={"lsq": lsq})
            from collectors import history

            symbols = sorted(pl.read_csv(paths.universe_file(format_day(first), "v1"))["symbol"])
            asyncio.run(history.backfill(settings, symbols, first - 15 * MINUTE_MS, first))
            # Server time 10 s before a boundary already past locally (so the partitions exist): the first window
            # is caught up at start, the second seals live ~11 s later, on its own.
            sim.clock.skew_ms = (boundary - 10_000) - now_ms()
            loop, stop = asyncio.new_event_loop(), asyncio.Event()
            thread = threading.Thread(
                target=loop.run_until_complete, args=(Collector(settings, CollectorOptions()).run(stop),), daemon=True
            )
            thread.start()
            cursor = partition_key(fake)
            done: set[int] = set()
            latencies: dict[str, tuple[float, float]] = {}
            deadline = time.monotonic() + 60
            while len(done) < windows and time.monotonic() < deadline:
                ctx = dg.build_sensor_context(
                    instance=instance, cursor=cursor, definitions=defs, resources={"lsq": lsq}
                )
                result = sensor.evaluate_tick(ctx)
                cursor = result.cursor or cursor
                for req in result.run_requests or []:
                    job.execute_in_process(
                        instance=instance,
                        partition_key=req.partition_key,
                        tags=req.tags,
                        asset_selection=req.asset_selection or keys,
                        raise_on_error=False,
                    )
                    for w in range(first, boundary, WINDOW_MS):
                        marker = paths.marker_file(w)
                        stored = bars_stored_at(instance, partition_key(w))
                        if w not in done and marker.exists() and stored is not None:
                            done.add(w)
                            mtime = marker.stat().st_mtime
                            latencies[partition_key(w)] = (stored - mtime, time.time() - mtime)
                time.sleep(1.0)
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
        for key, (stored, finished) in latencies.items():
            print(
                f"window {key} (40 symbols, sensor tick 1 s): marker -> bars_5m materialised {stored:.2f} s, "
                f"-> whole window run finished (checks, factors, alpha) {finished:.2f} s"
            )
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)


def bench_backfill(hours: int, whole_day: bool) -> None:
    from conftest import start_sim_server

    from lsq_pipeline.backfill import run_backfill

    root = Path(tempfile.mkdtemp(prefix="lsq-bench-bf-"))
    sim = start_sim_server(root / "sim", symbols=40)
    try:
        end = day_start(now_ms()) if whole_day else window_start(now_ms())
        hours = 24 if whole_day else hours
        settings = sim.settings.model_copy(
            update={"data": sim.settings.data.model_copy(update={"data_dir": root / "data"})}
        )
        with dg.instance_for_test() as instance:
            t = time.perf_counter()
            report = run_backfill(settings, end - hours * HOUR_MS, end, instance, progress=False)
            total = time.perf_counter() - t
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items() if v >= 0.05)
        print(
            f"backfill of {hours} h ({report.windows} windows, {len(report.symbols)} symbols, "
            f"{report.trades_written:,} trades): {total:.1f} s total; {stages}; success={report.success}"
        )
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=122)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--latency-windows", type=int, default=2)
    parser.add_argument("--backfill-hours", type=int, default=6, help="backfill the last N hours (REST)")
    parser.add_argument("--backfill-day", action="store_true", help="backfill yesterday instead (bulk day files)")
    parser.add_argument("--only", choices=("storage", "latency", "backfill"))
    args = parser.parse_args()
    if args.only in (None, "storage"):
        bench_storage(args.symbols, args.days)
    if args.only in (None, "latency"):
        bench_latency(args.latency_windows)
    if args.only in (None, "backfill"):
        bench_backfill(args.backfill_hours, args.backfill_day)


if __name__ == "__main__":
    main()
